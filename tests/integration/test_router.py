"""The OpenAI router on the host's HTTP port (issue 6), end to end: a host, one agent (node-a)
whose default engine is the fake OpenAI engine (tests/support/fake_engine.py), models downloaded
from the fake Hugging Face hub (test-org/tiny-llama, registered under two names).

Covered here: autoload on the first request; one load for many concurrent requests; routing
across two instances of one model (each engine's /_fake/stats); stream integrity through the
router against the same stream straight from the engine; a switch of the "default" alias in the
middle of a steady load with zero failed requests; `gswarm switch`; the per-instance limit
(client.max_concurrent_requests of the HOST's config) with the queue behind it; an unknown
model's error shape.

Queue full -> 429: the router's queue size (Router::Options::max_queue, 1024) is not read from
any config key, and the host's HTTP server has 128 handler threads, so 1 in flight + 1024
waiting cannot be held through the real server; the 429 path itself is covered by the unit test
tests/unit/router_test.cc (max_queue 1). Here the limit and the queue are checked as they can be
observed: with max_concurrent_requests 1, concurrent requests all succeed, the engine never sees
more than one at a time, and they finish one after another.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_router
"""

import http.client
import json
import sys
import threading
import time
import unittest
import urllib.parse

from gswarm_harness import SUPPORT_DIR
from gswarm_harness import http as rest_call
from gswarm_harness import wait_until
from test_serving import ENGINES, SERVE_TIMEOUT_S, ServingTestCase, fake_stats

if SUPPORT_DIR not in sys.path:
    sys.path.insert(0, SUPPORT_DIR)
import fake_engine as fe  # noqa: E402

TINY_LLAMA = "hf://test-org/tiny-llama"
MODEL_A = "ra"
MODEL_B = "rb"
# An autoload: a serve of the fake engine (Python start-up, well under a second) plus the
# orchestrator's round trip.
LOAD_TIMEOUT_S = 40.0
# The fake engine paces at its default 200 tokens/s: max_tokens/200 s per answer.
SLOW_TOKENS = 120  # 0.6 s
# The switch test wants more than this many answered requests on each side of the switch, and
# waits at most SWITCH_SIDE_TIMEOUT_S for them on each side.
SWITCH_MIN_PER_SIDE = 10
SWITCH_SIDE_TIMEOUT_S = 30.0
SWITCH_THREADS = 4


def post_json(base_url, path, body, timeout=30.0):
    """POST on a fresh keep-alive-less connection; (status, parsed JSON or None, headers)."""
    return fe.http_json(base_url, "POST", path, body, timeout=timeout)


def chat_body(model, text="hello swarm", max_tokens=4, **extra):
    body = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    if model is not None:
        body["model"] = model
    body.update(extra)
    return body


def sse_texts(events):
    """The content deltas of a chat stream's events, in order, and whether it ended in [DONE]."""
    texts = []
    for _, ev in events:
        if ev == "[DONE]":
            continue
        for choice in ev.get("choices", []):
            delta = choice.get("delta") or {}
            texts.append((delta.get("role"), delta.get("content"), choice.get("finish_reason")))
    return texts, bool(events) and events[-1][1] == "[DONE]"


def hold_for(condition, seconds, what, describe=None):
    """Asserts that `condition` stays true for `seconds` (polled every 0.1 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            extra = f": {describe()}" if describe is not None else ""
            raise AssertionError(f"expected {what}, but it changed{extra}")
        time.sleep(0.1)


def run_threads(n, target):
    """Runs target(i) on n threads at once; returns [(result, exception)] in thread order."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def worker(i):
        try:
            barrier.wait(10)
            results[i] = (target(i), None)
        except Exception as e:  # noqa: BLE001 - reported by the caller
            results[i] = (None, e)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_TIMEOUT_S + 30)
    return results


class RouterTestCase(ServingTestCase):
    """A host (whose client: section can carry max_concurrent_requests) and node-a with the
    fake engines of test_serving.ENGINES, default engine "fake"."""

    hub_big_file_mb = 8

    def start_router_cluster(self, models=(MODEL_A,), host_extra=None, engine="fake",
                             engines=ENGINES, agent_extra=None, **host_client_extra):
        """`agent_extra`: more keys for node-a's client section (cpu_memory_budget, ...)."""
        home = self.new_home("host")
        self.token = ""
        home.write_config({
            "host": self.host_section(home, token="", **(host_extra or {})),
            "client": self.client_section(home, "node-local", token="", **host_client_extra),
        })
        self.host_home = home
        host = self.start_host()
        agent_home = self.make_agent_home(
            "node-a", sections={"host": {"cleanup_on_shutdown": True}},
            default_engine=engine, engines=engines, **(agent_extra or {}))
        agent = self.start_agent("node-a", home=agent_home, env_extra=self.hub_env())
        self.wait_node("node-a", "online", procs=[host, agent])
        for name in models:
            self.download_ok(name, TINY_LLAMA)
        self.cluster = (host, agent)
        return host, agent

    def v1(self, path, body, timeout=LOAD_TIMEOUT_S + 10):
        return post_json(self.host_url, path, body, timeout=timeout)

    def ready_instances(self, name):
        return [i for i in self.serving(name) if i.get("state") == "ready"]

    def serve_cli(self, name):
        """`gswarm serve NAME --gpu cpu` (waits until ready); returns the new instance."""
        before = {i.get("id") for i in self.serving(name)}
        self.assert_cli_ok(self.cli("serve", name, "--gpu", "cpu", timeout=SERVE_TIMEOUT_S))
        new = [i for i in self.ready_instances(name) if i.get("id") not in before]
        self.assertEqual(len(new), 1, self.serving(name))
        return new[0]


class AutoloadTest(RouterTestCase):

    def test_first_request_loads_an_instance(self):
        self.start_router_cluster()
        self.assertEqual(self.serving(MODEL_A), [])
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "autoload me"))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["model"], MODEL_A, body)
        self.assertEqual(body["choices"][0]["message"]["content"], "autoload me autoload me", body)
        insts = self.serving(MODEL_A)
        self.assertEqual(len(insts), 1, insts)
        self.assertEqual(insts[0].get("state"), "ready", insts)
        # The second request finds it: still one instance.
        status, body, _ = self.v1("/v1/completions",
                                  {"model": MODEL_A, "prompt": "again", "max_tokens": 2})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["choices"][0]["text"], "again again", body)
        self.assertEqual(len(self.serving(MODEL_A)), 1, self.serving(MODEL_A))
        # GET /v1/models lists it with seed 001's fields.
        r = self.rest("GET", "/v1/models")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json.get("object"), "list", r.json)
        entry = {m["id"]: m for m in r.json["data"]}[MODEL_A]
        for key in ("is_active", "size_mb", "load_time_ms"):
            self.assertIn(key, entry, entry)
        self.assertFalse(entry["is_active"], entry)

    def test_one_load_for_eight_concurrent_requests(self):
        self.start_router_cluster()
        self.assertEqual(self.serving(MODEL_A), [])
        results = run_threads(8, lambda i: self.v1(
            "/v1/chat/completions", chat_body(MODEL_A, f"req{i}", max_tokens=1)))
        for i, (res, err) in enumerate(results):
            self.assertIsNone(err, f"request {i}: {err!r}")
            status, body, _ = res
            self.assertEqual(status, 200, f"request {i}: {body}")
            self.assertEqual(body["choices"][0]["message"]["content"], f"req{i}", body)
        insts = self.serving(MODEL_A)
        self.assertEqual(len(insts), 1, f"8 concurrent requests should start one instance: {insts}")


class UnloadTest(RouterTestCase):
    """Instances the router loaded on demand go when idle (host.keep_alive_s) and make room for
    others (host.max_loaded_models, least recently used first)."""

    def active(self, name):
        return [i for i in self.serving(name) if i.get("state") in ("starting", "ready")]

    def test_idle_instance_unloads_after_keep_alive(self):
        self.start_router_cluster(host_extra={"keep_alive_s": 1})
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "keep me"))
        self.assertEqual(status, 200, body)
        self.assertEqual(len(self.active(MODEL_A)), 1, self.serving(MODEL_A))
        wait_until(lambda: not self.active(MODEL_A), 20,
                   "the idle instance to be unloaded after keep_alive_s",
                   describe=lambda: self.serving(MODEL_A))
        # The next request loads it again.
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "back again"))
        self.assertEqual(status, 200, body)
        self.assertEqual(len(self.active(MODEL_A)), 1, self.serving(MODEL_A))

    def test_max_loaded_models_evicts_the_least_recently_used(self):
        self.start_router_cluster(models=(MODEL_A, MODEL_B),
                                  host_extra={"keep_alive_s": -1, "max_loaded_models": 1})
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "first"))
        self.assertEqual(status, 200, body)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_B, "second"))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["model"], MODEL_B, body)
        wait_until(lambda: not self.active(MODEL_A), 20, "model A to make room for model B",
                   describe=lambda: self.serving(MODEL_A))
        self.assertEqual(len(self.active(MODEL_B)), 1, self.serving(MODEL_B))
        # Demoted, not forgotten: A was served from disk and the DRAM tier has room, so it is
        # copied there and its next load starts from DRAM.
        wait_until(lambda: ("node-a", "dram") in self.replica_tiers(MODEL_A), 30,
                   "model A to be copied to node-a's DRAM tier after leaving",
                   describe=lambda: self.replica_tiers(MODEL_A))
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "from dram"))
        self.assertEqual(status, 200, body)
        (inst,) = self.active(MODEL_A)
        self.assertEqual(inst.get("source_tier"), "dram", inst)

    def test_instances_the_router_loaded_stay_its_own_across_a_host_restart(self):
        host, agent = self.start_router_cluster(host_extra={"keep_alive_s": 4})
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "before"))
        self.assertEqual(status, 200, body)
        (inst,) = self.active(MODEL_A)
        self.assertEqual(host.stop(), 0, "host exit code on SIGTERM")
        self.assertIsNone(agent.poll(), "the agent (and its instance) outlive the host")
        host2 = self.start_host()
        self.wait_node("node-a", "online", procs=[host2, agent])
        # The agent reports who loaded it; the new host's router takes it back into its pool:
        # it serves, and it unloads when idle like any instance the router loaded. (Its Hello
        # inventory is applied just after the node shows online: wait for it.)
        (again,) = wait_until(lambda: self.active(MODEL_A), 20,
                              "the instance to be reported again by the reconnected agent",
                              procs=[host2, agent], describe=lambda: self.serving(MODEL_A))
        self.assertEqual((again["id"], again.get("managed_by")), (inst["id"], "router"), again)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "after"))
        self.assertEqual(status, 200, body)
        self.assertEqual([i["id"] for i in self.active(MODEL_A)], [inst["id"]])
        wait_until(lambda: not self.active(MODEL_A), 30,
                   "the adopted instance to unload after keep_alive_s",
                   describe=lambda: self.serving(MODEL_A))

    def test_request_keep_alive_overrides_the_default(self):
        self.start_router_cluster(host_extra={"keep_alive_s": -1})
        # "keep_alive": 0 (Ollama's "unload when done"): gone once the answer is out.
        status, body, _ = self.v1("/v1/chat/completions",
                                  chat_body(MODEL_A, "one shot", keep_alive=0))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["choices"][0]["message"]["content"], "one shot one shot", body)
        wait_until(lambda: not self.active(MODEL_A), 20,
                   "the instance to unload after a request with keep_alive 0",
                   describe=lambda: self.serving(MODEL_A))
        # A duration string keeps it; the default (-1) keeps it too.
        status, body, _ = self.v1("/v1/chat/completions",
                                  chat_body(MODEL_A, "stay", keep_alive="10m"))
        self.assertEqual(status, 200, body)
        hold_for(lambda: len(self.active(MODEL_A)) == 1, 2,
                 "the instance to stay loaded with keep_alive 10m",
                 describe=lambda: self.serving(MODEL_A))
        # Listings say who unloads it and when: about ten minutes from its last use.
        (inst,) = self.active(MODEL_A)
        self.assertEqual(inst.get("managed_by"), "router", inst)
        self.assertIn("unload_at", inst, inst)
        ps = self.assert_cli_ok(self.cli("ps"))
        row = [line for line in ps.stdout.splitlines() if inst["id"] in line]
        self.assertEqual(len(row), 1, ps.stdout)
        self.assertRegex(row[0], r"\bin (9m|10m) ", ps.stdout)
        # A keep_alive the router cannot read is the client's error.
        status, body, _ = self.v1("/v1/chat/completions",
                                  chat_body(MODEL_A, "bad", keep_alive="soon"))
        self.assertEqual(status, 400, body)
        self.assertIn("keep_alive", body["error"]["message"], body)


class PreloadTest(RouterTestCase):

    def test_preloaded_model_loads_at_start_and_stays(self):
        # The model arrives after the host started: the preload keeps trying until it can.
        self.start_router_cluster(host_extra={"preload": [MODEL_A], "keep_alive_s": 1})
        wait_until(lambda: len(self.ready_instances(MODEL_A)) == 1, 60,
                   "the preloaded model to be loaded without any request",
                   describe=lambda: self.serving(MODEL_A))
        # keep_alive_s is 1 s, but a preloaded model stays.
        hold_for(lambda: len(self.ready_instances(MODEL_A)) == 1, 3,
                 "the preloaded instance to stay loaded past keep_alive_s",
                 describe=lambda: self.serving(MODEL_A))
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "warm"))
        self.assertEqual(status, 200, body)
        self.assertEqual(len(self.serving(MODEL_A)), 1, self.serving(MODEL_A))
        (inst,) = self.serving(MODEL_A)
        self.assertEqual(inst.get("managed_by"), "preload", inst)
        self.assertNotIn("unload_at", inst, inst)
        self.assertIn("never (preload)", self.assert_cli_ok(self.cli("ps")).stdout)

    def test_autoload_off_answers_503(self):
        self.start_router_cluster(host_extra={"autoload": False})
        status, body, headers = self.v1("/v1/chat/completions", chat_body(MODEL_A, "no"))
        self.assertEqual(status, 503, body)
        self.assertIn("autoload is off", body["error"]["message"], body)
        self.assertEqual(self.serving(MODEL_A), [])


class RoutingTest(RouterTestCase):

    def test_slow_streams_spread_over_two_instances(self):
        self.start_router_cluster()
        a1 = self.serve_cli(MODEL_A)
        a2 = self.serve_cli(MODEL_A)
        self.assertNotEqual(a1["endpoint"], a2["endpoint"])
        for inst in (a1, a2):
            r = rest_call("POST", inst["endpoint"] + "/_fake/stats/reset")
            self.assertEqual(r.status, 200, r)

        def stream(i):
            return fe.sse(self.host_url, "/v1/chat/completions",
                          chat_body(MODEL_A, f"s{i}", max_tokens=SLOW_TOKENS), timeout=30)
        results = run_threads(4, stream)
        for i, (res, err) in enumerate(results):
            self.assertIsNone(err, f"stream {i}: {err!r}")
            status, events, _ = res
            self.assertEqual(status, 200, events)
            texts, done = sse_texts(events)
            self.assertTrue(done, f"stream {i} did not end in [DONE]")
            self.assertEqual(sum(1 for _, c, _ in texts if c), SLOW_TOKENS, f"stream {i}")
        stats = [fake_stats(inst["endpoint"]) for inst in (a1, a2)]
        counts = [s["requests"] for s in stats]
        # Fewest in flight: 4 concurrent streams over two idle instances go 2 and 2.
        self.assertEqual(counts, [2, 2], stats)
        for s in stats:
            self.assertEqual(s["max_in_flight"], 2, s)
        # Started with gswarm serve: the operator's, never unloaded by the router; the router's
        # traffic shows as their last use.
        for inst in self.ready_instances(MODEL_A):
            self.assertEqual(inst.get("managed_by", ""), "", inst)
            self.assertNotIn("unload_at", inst, inst)
            self.assertIn("last_used_at", inst, inst)
        self.assertIn("manual", self.assert_cli_ok(self.cli("ps")).stdout)

    def test_stream_is_relayed_chunk_by_chunk(self):
        self.start_router_cluster()
        inst = self.serve_cli(MODEL_A)
        body = chat_body(MODEL_A, "one two three", max_tokens=40,
                         stream_options={"include_usage": True})
        status, direct, _ = fe.sse(inst["endpoint"], "/v1/chat/completions", body)
        self.assertEqual(status, 200, direct)
        status, routed, headers = fe.sse(self.host_url, "/v1/chat/completions", body)
        self.assertEqual(status, 200, routed)
        self.assertTrue(headers.get("Content-Type", "").startswith("text/event-stream"), headers)
        # Every event, in order: same count, same deltas, same finish, usage, then [DONE].
        self.assertEqual(len(routed), len(direct))
        self.assertEqual(sse_texts(routed), sse_texts(direct))
        self.assertEqual(routed[-2][1].get("usage"), direct[-2][1].get("usage"))
        text = "".join(c for _, c, _ in sse_texts(routed)[0] if c)
        self.assertEqual(text, "".join(c for _, c, _ in sse_texts(direct)[0] if c))
        self.assertTrue(text.startswith("one two three one"), text)
        # Unbuffered: 40 tokens at 200/s take ~0.2 s upstream; the first event reaches us
        # well before the last.
        spread = routed[-1][0] - routed[0][0]
        self.assertGreater(spread, 0.1, f"events arrived within {spread:.3f} s: buffered?")


class SwitchTest(RouterTestCase):

    def test_switch_under_steady_load_fails_nothing(self):
        self.start_router_cluster(models=(MODEL_A, MODEL_B))
        self.serve_cli(MODEL_A)
        self.serve_cli(MODEL_B)
        r = self.rest("POST", "/v1/models/switch", body={"model": MODEL_A})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["active_model"], MODEL_A, r.json)

        records = []  # (sent, answered, status, model or error)
        lock = threading.Lock()
        stop = threading.Event()
        u = urllib.parse.urlsplit(self.host_url)

        def load():
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            payload = json.dumps(chat_body(None, "steady", max_tokens=2)).encode()
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    conn.request("POST", "/v1/chat/completions", body=payload,
                                 headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    raw = resp.read()
                    rec = (t0, time.monotonic(), resp.status,
                           json.loads(raw).get("model") if resp.status == 200 else raw[:200])
                except Exception as e:  # noqa: BLE001 - a failed request is a finding
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                    rec = (t0, time.monotonic(), None, repr(e))
                with lock:
                    records.append(rec)
            conn.close()
        threads = [threading.Thread(target=load, daemon=True) for _ in range(SWITCH_THREADS)]

        def answered(since=None):
            """Requests answered so far (sent after `since`, when given)."""
            with lock:
                return sum(1 for rec in records if since is None or rec[0] > since)

        for t in threads:
            t.start()
        try:
            # Everything answered now was answered before the switch starts.
            wait_until(lambda: answered() > SWITCH_MIN_PER_SIDE, SWITCH_SIDE_TIMEOUT_S,
                       f"more than {SWITCH_MIN_PER_SIDE} requests before the switch",
                       procs=self.cluster, describe=answered)
            sw_start = time.monotonic()
            r = self.rest("POST", "/v1/models/switch", body={"model": MODEL_B})
            sw_end = time.monotonic()
            wait_until(lambda: answered(sw_end) > SWITCH_MIN_PER_SIDE, SWITCH_SIDE_TIMEOUT_S,
                       f"more than {SWITCH_MIN_PER_SIDE} requests after the switch",
                       procs=self.cluster, describe=lambda: answered(sw_end))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(r.status, 200, r)
        self.assertEqual((r.json["success"], r.json["active_model"], r.json["previous_model"]),
                         (True, MODEL_B, MODEL_A), r.json)
        self.assertIsInstance(r.json["switch_time_us"], (int, float))

        failed = [rec for rec in records if rec[2] != 200]
        self.assertEqual(failed, [], f"{len(failed)} of {len(records)} requests failed")
        before = [rec for rec in records if rec[1] < sw_start]
        after = [rec for rec in records if rec[0] > sw_end]
        self.assertGreater(len(before), SWITCH_MIN_PER_SIDE,
                           f"too few requests before the switch: {len(records)}")
        self.assertGreater(len(after), SWITCH_MIN_PER_SIDE,
                           f"too few requests after the switch: {len(records)}")
        self.assertEqual({rec[3] for rec in before}, {MODEL_A})
        self.assertEqual({rec[3] for rec in after}, {MODEL_B})

    def test_gswarm_switch_cli(self):
        self.start_router_cluster(models=(MODEL_A, MODEL_B))
        self.serve_cli(MODEL_A)
        self.serve_cli(MODEL_B)
        result = self.assert_cli_ok(self.cli("switch", MODEL_B))
        self.assertIn(f"active model: {MODEL_B}", result.stdout)
        status, body, _ = self.v1("/v1/chat/completions", chat_body("default"))
        self.assertEqual((status, body.get("model")), (200, MODEL_B), body)
        result = self.assert_cli_ok(self.cli("switch", MODEL_A))
        self.assertIn(f"(was {MODEL_B})", result.stdout)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(None))  # names none
        self.assertEqual((status, body.get("model")), (200, MODEL_A), body)
        r = self.rest("GET", "/v1/models")
        active = {m["id"]: m["is_active"] for m in r.json["data"]}
        self.assertEqual(active, {MODEL_A: True, MODEL_B: False}, r.json)
        # An unknown model cannot become active.
        result = self.cli("switch", "no-such-model")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        r = self.rest("POST", "/v1/models/switch", body={"model": "no-such-model"})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.json["error"]["code"], "model_not_found", r.json)


class LimitsTest(RouterTestCase):

    def test_per_instance_limit_queues_the_rest(self):
        self.start_router_cluster(max_concurrent_requests=1)
        inst = self.serve_cli(MODEL_A)
        rest_call("POST", inst["endpoint"] + "/_fake/stats/reset")
        t0 = time.monotonic()

        def stream(i):
            status, events, _ = fe.sse(self.host_url, "/v1/chat/completions",
                                       chat_body(MODEL_A, f"q{i}", max_tokens=40), timeout=30)
            return status, events, time.monotonic() - t0
        results = run_threads(3, stream)
        ends = []
        for i, (res, err) in enumerate(results):
            self.assertIsNone(err, f"request {i}: {err!r}")
            status, events, end = res
            self.assertEqual(status, 200, events)
            self.assertTrue(sse_texts(events)[1], f"request {i} did not end in [DONE]")
            ends.append(end)
        stats = fake_stats(inst["endpoint"])
        self.assertEqual((stats["requests"], stats["max_in_flight"]), (3, 1), stats)
        # One after another: 3 x 40 tokens at 200/s is at least ~0.6 s in all.
        self.assertGreater(max(ends), 0.55, ends)

    def test_unknown_model_error_shape(self):
        self.start_router_cluster()
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            body = ({"model": "no-such-model", "input": "x"} if path.endswith("embeddings")
                    else chat_body("no-such-model"))
            status, err, headers = self.v1(path, body)
            self.assertEqual(status, 404, (path, err))
            self.assertTrue(headers.get("Content-Type", "").startswith("application/json"))
            self.assertIsInstance(err, dict, err)
            e = err.get("error")
            self.assertIsInstance(e, dict, err)
            self.assertEqual((e.get("type"), e.get("code")),
                             ("invalid_request_error", "model_not_found"), err)
            self.assertIn("no-such-model", e.get("message", ""), err)
        self.assertEqual(self.serving(), [])  # nothing was loaded for it


if __name__ == "__main__":
    unittest.main()
