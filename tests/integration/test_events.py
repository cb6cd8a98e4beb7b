"""Cluster events (issue 10): `gswarm events -f` shows a download, a serve and a router eviction
as they happen; GET /events streams them as Server-Sent Events; and kill -9 of the host, five
times in a row, has the agent back within 2 s of the host answering, with the router's pool
rebuilt and no engine restarted or duplicated.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_events
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

from gswarm_harness import wait_until
from test_router import MODEL_A, MODEL_B, RouterTestCase, chat_body

EVENT_TIMEOUT_S = 60.0
# The promise: every agent is back within 2 s of a restarted host answering. Measured on
# the ordinary build; the sanitizer builds (several times slower) scale it with
# GSWARM_TEST_TIME_SCALE (tests/thread_safety_check.sh, tests/sanitizer_check.sh).
RECONNECT_LIMIT_S = 2.0 * float(os.environ.get("GSWARM_TEST_TIME_SCALE", "1"))
RESTARTS = 5


class EventReader:
    """`gswarm events -f --json` in the background; its events collected as they arrive."""

    def __init__(self, case, *args):
        self.proc = subprocess.Popen([case.bin, "events", "-f", "--json", *args],
                                     env=case.host_home.env(), cwd=case.host_home.path,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.events = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        case.addCleanup(self.stop)

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                with self.lock:
                    self.events.append(json.loads(line))

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def find(self, **want):
        return [e for e in self.snapshot()
                if all(e.get(k) == v for k, v in want.items())]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.thread.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


class EventsTest(RouterTestCase):

    def describe(self, reader):
        return lambda: "\n".join(
            f"{e.get('seq')} {e.get('kind')} {e.get('action')} {e.get('message')}"
            for e in reader.snapshot()[-40:])

    def test_follow_shows_download_serve_and_router_eviction(self):
        self.start_router_cluster(models=(), host_extra={"keep_alive_s": -1,
                                                          "max_loaded_models": 1})
        reader = EventReader(self)
        # The watcher is in place once it has seen something; a node heartbeat is no event, so
        # wait for the stream to be open by watching the first download's job appear.
        self.download_ok(MODEL_A, "hf://test-org/tiny-llama")
        self.download_ok(MODEL_B, "hf://test-org/tiny-llama")
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "first"))
        self.assertEqual(status, 200, body)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_B, "second"))
        self.assertEqual(status, 200, body)

        def seen(**want):
            return bool(reader.find(**want))
        expectations = [
            ("the download of ra succeeding",
             dict(kind="job", model_name=MODEL_A, to_state="succeeded")),
            ("ra's disk copy appearing",
             dict(kind="replica", action="appeared", model_name=MODEL_A, tier="disk")),
            ("the router asking for ra", dict(kind="router", action="load_requested",
                                              model_name=MODEL_A)),
            ("ra's instance becoming ready",
             dict(kind="instance", model_name=MODEL_A, to_state="ready")),
            ("ra's instance evicted for rb", dict(kind="router", action="evicted",
                                                  model_name=MODEL_A)),
            ("ra's instance draining", dict(kind="instance", model_name=MODEL_A,
                                            to_state="draining")),
            ("ra's instance stopped", dict(kind="instance", model_name=MODEL_A,
                                           to_state="stopped")),
            ("rb's instance becoming ready",
             dict(kind="instance", model_name=MODEL_B, to_state="ready")),
        ]
        for what, want in expectations:
            wait_until(lambda: seen(**want), EVENT_TIMEOUT_S, f"an event for {what}",
                       procs=list(self.cluster), describe=self.describe(reader))
        events = reader.snapshot()
        seqs = [int(e["seq"]) for e in events]
        self.assertEqual(seqs, sorted(seqs), "events arrive in sequence order")
        self.assertEqual(len(seqs), len(set(seqs)), "no event twice")
        # An instance walks its states in order: starting before ready before stopped.
        (ra_inst,) = {e["instance_id"] for e in reader.find(kind="instance", model_name=MODEL_A)}
        walk = [e["to_state"] for e in reader.find(kind="instance", instance_id=ra_inst)]
        self.assertLess(walk.index("ready"), walk.index("draining"), walk)
        self.assertLess(walk.index("draining"), walk.index("stopped"), walk)
        evicted = reader.find(kind="router", action="evicted")[0]
        self.assertIn("max_loaded_models", evicted["message"], evicted)

        # Without -f: the newest events, filtered, then the command ends.
        out = self.assert_cli_ok(self.cli("events", "--kind", "router", "--last", "50"))
        lines = out.stdout.splitlines()
        self.assertTrue(any(" evicted " in line for line in lines), out.stdout)
        self.assertTrue(all(line.split()[2] == "router" for line in lines), out.stdout)
        bad = self.cli("events", "--kind", "nodez")
        self.assertNotEqual(bad.returncode, 0, bad)
        self.assertIn("unknown", bad.stderr)

    def test_server_sent_events(self):
        self.start_router_cluster()  # downloads ra
        r = self.rest("GET", "/events?follow=false&last=500&kind=job,replica")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("Content-Type", "").startswith("text/event-stream"), r)
        frames = [f for f in r.text.split("\n\n") if f.strip()]
        self.assertTrue(frames, r.text)
        parsed = []
        for frame in frames:
            fields = dict(line.split(": ", 1) for line in frame.splitlines()
                          if not line.startswith(":"))
            if fields.get("event") == "end":
                continue
            data = json.loads(fields["data"])
            self.assertEqual(fields["id"], data["seq"], frame)
            self.assertEqual(fields["event"], data["kind"], frame)
            parsed.append(data)
        self.assertTrue(all(e["kind"] in ("job", "replica") for e in parsed), parsed)
        self.assertTrue(any(e["kind"] == "job" and e.get("model_name") == MODEL_A
                            and e.get("to_state") == "succeeded" for e in parsed), parsed)
        # Resuming after an event id gives only later ones.
        last_id = int(parsed[-1]["seq"])
        later = self.rest("GET", f"/events?follow=false&since={last_id}")
        self.assertEqual(later.status, 200, later)
        self.assertNotIn(f"id: {last_id}\n", later.text)
        # Bad input is a JSON 400.
        for query in ("kind=nodez", "since=abc", "follow=maybe"):
            bad = self.rest("GET", f"/events?{query}")
            self.assertEqual(bad.status, 400, f"{query}: {bad!r}")
            self.assertIn("error", bad.json, bad)


class HostRestartTest(RouterTestCase):

    def active(self, name):
        return [i for i in self.serving(name) if i.get("state") in ("starting", "ready")]

    def active_model(self):
        r = self.rest("GET", "/v1/models")
        return [m["id"] for m in r.json["data"] if m.get("is_active")]

    def test_kill9_host_five_times_agent_back_fast_nothing_restarted(self):
        host, agent = self.start_router_cluster(host_extra={"keep_alive_s": 600})
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "before"))
        self.assertEqual(status, 200, body)
        (before,) = self.active(MODEL_A)
        status, switched, _ = self.v1("/v1/models/switch", {"model": MODEL_A})
        self.assertEqual(status, 200, switched)
        for attempt in range(RESTARTS):
            with self.subTest(restart=attempt + 1):
                host.kill()
                host = self.start_host(wait=False, name=f"host-{attempt + 2}")
                self.wait_ready(host)
                answered = time.monotonic()
                self.wait_node("node-a", "online", procs=[host, agent])
                back = time.monotonic() - answered
                print(f"restart {attempt + 1}: node-a online {back:.3f} s after the host "
                      "answered /health", file=sys.stderr)
                self.assertLess(back, RECONNECT_LIMIT_S,
                                f"restart {attempt + 1}: the agent came back {back:.2f} s "
                                "after the host answered")
                # The same instance, same process, not restarted; the router's pool has it
                # back (managed_by, an unload time) and it serves.
                wait_until(lambda: len(self.active(MODEL_A)) == 1, 10,
                           "the instance to be reported again", procs=[host, agent],
                           describe=lambda: self.serving(MODEL_A))
                (now,) = self.active(MODEL_A)
                self.assertEqual((now["id"], now.get("pid"), now.get("restarts", 0)),
                                 (before["id"], before.get("pid"), before.get("restarts", 0)),
                                 now)
                self.assertEqual(now.get("managed_by"), "router", now)
                wait_until(lambda: "unload_at" in self.active(MODEL_A)[0], 10,
                           "the router's pool to take the instance back (unload_at)",
                           procs=[host, agent], describe=lambda: self.serving(MODEL_A))
                status, body, _ = self.v1("/v1/chat/completions",
                                          chat_body(MODEL_A, f"after {attempt}"))
                self.assertEqual(status, 200, body)
                self.assertEqual([i["id"] for i in self.active(MODEL_A)], [before["id"]])
                self.assertEqual(self.active_model(), [MODEL_A], "the switch survives")
        self.assertIsNone(agent.poll(), "the agent outlives every host")


if __name__ == "__main__":
    unittest.main()
