"""Inference instances, the GPU tier, on a machine without a GPU: the agent starts the fake
OpenAI engine (tests/support/fake_engine.py) as a real process, watches it until ready, restarts
it when it crashes, stops its whole process group, and re-adopts it after an agent restart.

Every agent's config names its engines under client.engines (see ENGINES); models come from the
fake Hugging Face hub (test-org/tiny-llama) and DRAM copies live under /dev/shm (TierTestCase).
Engine processes are found through /proc: their process group (the pgid in the agent's instance
record) and their command line (the model path, under this test's temporary directories).

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_serving
"""

import json
import os
import signal
import socket
import sys
import time
import unittest

from gswarm_harness import (
    JOB_TIMEOUT_S, OFFLINE_TIMEOUT_S, RECONNECT_TIMEOUT_S, REPO_ROOT, TierTestCase, error_message,
    free_port, http, wait_until)

FAKE_ENGINE = os.path.join(REPO_ROOT, "tests", "support", "fake_engine.py")
PYTHON = "/usr/bin/python3"
MODEL = "tl"
TINY_LLAMA = "hf://test-org/tiny-llama"

# A serve with wait answers once the engine is ready (the fake one: well under a second once
# Python has started) or has failed.
SERVE_TIMEOUT_S = 40.0
# crash-after 0.5 s, restarted with backoff (about 1, 2, 4 s) three times, then failed.
CRASH_LOOP_TIMEOUT_S = 30.0
# A stop: SIGTERM to the group, SIGKILL after the supervisor's grace (10 s).
STOP_REQUEST_TIMEOUT_S = 40.0
GROUP_GONE_TIMEOUT_S = 15.0


def engine_command(*flags):
    return " ".join([PYTHON, FAKE_ENGINE, "--model {model_path}",
                     "--served-model-name {model_name}", "--host {host}", "--port {port}",
                     *flags])


# client.engines of every agent in this suite.
ENGINES = {
    # env values are templates too (shown back by the engine's stats).
    "fake": {"command": engine_command(), "ready_timeout_s": 15, "health_path": "/health",
             "env": {"FAKE_ENGINE_PORT": "{port}", "FAKE_ENGINE_MODEL": "{model_name}"}},
    "fake-never": {"command": engine_command("--never-ready"), "ready_timeout_s": 2},
    "fake-crash": {"command": engine_command("--crash-after", "0.5"), "ready_timeout_s": 5},
    "fake-workers": {"command": engine_command("--workers", "2"), "ready_timeout_s": 15},
    "fake-stubborn": {"command": engine_command("--ignore-sigterm", "--workers", "1"),
                      "ready_timeout_s": 15},
    "fake-missing": {"command": "gswarm-no-such-engine-bin --port {port} --model {model_path}",
                     "ready_timeout_s": 5},
    # vLLM's sleep API (the preset's calls): a 2 s cold start against a 0.2 s wake.
    "fake-sleepy": {"command": engine_command("--enable-sleep-mode", "--startup-delay", "2",
                                              "--wake-delay", "0.2", "--simulated-gpu-mib", "512"),
                    "ready_timeout_s": 15, "env": {"VLLM_SERVER_DEV_MODE": "1"},
                    "sleep": ["POST /sleep?level={sleep_level}"], "wake": ["POST /wake_up"],
                    "reload": ['POST /collective_rpc {{"method": "reload_weights"}}']},
    # The same calls, but the engine was not started in dev mode: its sleep endpoints are 404.
    "fake-insomniac": {"command": engine_command("--enable-sleep-mode"), "ready_timeout_s": 15,
                       "sleep": ["POST /sleep?level={sleep_level}"], "wake": ["POST /wake_up"]},
}


# ---- /proc -----------------------------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid, pgid) of a live (or zombie) pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2])


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def group_members(pgid):
    """[(pid, state, cmdline)] of every process in process group `pgid`, zombies included."""
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[2] == pgid:
            out.append((pid, st[0], cmdline(pid)[:160]))
    return out


def fake_stats(endpoint):
    """The fake engine's GET /_fake/stats."""
    r = http("GET", endpoint + "/_fake/stats")
    if r.status != 200 or not isinstance(r.json, dict):
        raise AssertionError(f"GET {endpoint}/_fake/stats answered {r!r}")
    return r.json


def pid_exists(pid):
    st = proc_stat(pid)
    return st is not None and st[0] != "Z"


class ServingTestCase(TierTestCase):
    """A host and one agent (node-a) with the fake engines of ENGINES, the fake hub, and a DRAM
    tier; helpers for the serving REST calls and for the engines' processes."""

    hub_big_file_mb = 8  # this suite only uses tiny-llama; keep the hub's generation short

    def setUp(self):
        super().setUp()
        # Runs before the harness kills its own processes (cleanups run last-added first), so
        # it stops the agents itself first: none may restart an engine killed here.
        self.addCleanup(self._kill_engines)

    # ---- cluster -------------------------------------------------------------------------

    def start_serving_cluster(self, cleanup_on_shutdown=True, engines=None):
        """A host and node-a (DRAM tier, ENGINES, default engine "fake"); returns (host, agent)."""
        self.make_host_home()
        host = self.start_host()
        home = self.make_agent_home("node-a")
        self.write_tier_config(home, "node-a", dram_gib=0.1,
                               host={"cleanup_on_shutdown": cleanup_on_shutdown},
                               default_engine="fake", engines=engines or ENGINES)
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", "online", procs=[host, agent])
        self.download_ok(MODEL, TINY_LLAMA)
        return host, agent

    def agent_state_dir(self, node_id="node-a"):
        return os.path.join(self.agent_homes[node_id].path, ".cache", "gswarm")

    def record(self, instance_id, node_id="node-a"):
        """The agent's instance record (~/.cache/gswarm/instances/<id>.json), or None."""
        path = os.path.join(self.agent_state_dir(node_id), "instances", f"{instance_id}.json")
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def engine_log(self, instance_id, node_id="node-a"):
        path = os.path.join(self.agent_state_dir(node_id), "logs", f"{instance_id}.log")
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    # ---- REST ----------------------------------------------------------------------------

    def serve(self, name=MODEL, wait=True, timeout=SERVE_TIMEOUT_S, **body):
        """POST /serve (gpu_device "cpu" unless given); returns the Response."""
        req = {"model_name": name, "gpu_device": "cpu", "wait": wait}
        req.update(body)
        req = {k: v for k, v in req.items() if v is not None}
        return self.rest("POST", "/serve", token=self.api_token(), body=req, timeout=timeout)

    def serve_ok(self, name=MODEL, **body):
        """A serve (with wait) that must end ready; returns the instance."""
        r = self.serve(name, **body)
        job = (r.json or {}).get("job") if isinstance(r.json, dict) else None
        inst = (job or {}).get("instance") or {}
        if r.status != 200 or inst.get("state") != "ready":
            raise AssertionError(f"serve of {name} {body} should be ready: {r!r}")
        return inst

    def serving(self, name=None):
        """GET /serving (or /serving/{name})'s instances."""
        r = self.rest("GET", f"/serving/{name}" if name else "/serving", token=self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /serving answered {r!r}")
        return r.json.get("instances", [])

    def instance(self, instance_id):
        for inst in self.serving():
            if inst.get("id") == instance_id:
                return inst
        return None

    def wait_instance(self, instance_id, where, what, timeout=SERVE_TIMEOUT_S, procs=()):
        last = {}

        def check():
            inst = self.instance(instance_id)
            last["inst"] = inst
            return inst if inst is not None and where(inst) else None
        return wait_until(check, timeout, f"instance {instance_id} {what}", procs=procs,
                          interval=0.1, describe=lambda: json.dumps(last.get("inst")))

    def stop_serve(self, timeout=STOP_REQUEST_TIMEOUT_S, **body):
        return self.rest("POST", "/stop_serve", token=self.api_token(), body=body,
                         timeout=timeout)

    def chat(self, endpoint, model, text="hello swarm", max_tokens=4):
        """A chat completion through the instance's own endpoint; returns the answer's text."""
        r = http("POST", endpoint + "/v1/chat/completions", body={
            "model": model, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}, timeout=10.0)
        self.assertEqual(r.status, 200, r)
        return r.json["choices"][0]["message"]["content"]

    # ---- processes -----------------------------------------------------------------------

    def engine_pids(self):
        """Pids of fake engines (and their workers' leaders) started for this test: their
        command line names a model under this test's directories."""
        roots = (self.root, self.shm_root)
        out = []
        for pid in all_pids():
            if pid == os.getpid():
                continue
            line = cmdline(pid)
            if "fake_engine.py" in line and any(r in line for r in roots):
                out.append(pid)
        return out

    def assert_group_gone(self, pgid, what="the engine's process group"):
        """Waits until no process (not even a zombie) is left in process group `pgid`."""
        wait_until(lambda: not group_members(pgid), GROUP_GONE_TIMEOUT_S,
                   f"{what} (pgid {pgid}) to be empty",
                   describe=lambda: repr(group_members(pgid)))

    def _kill_engines(self):
        self._kill_all()
        pids = self.engine_pids()
        for pid in pids:
            st = proc_stat(pid)
            for target in ([st[2]] if st else []):
                try:
                    os.killpg(target, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._failed():
            logs = os.path.join(self.agent_state_dir(), "logs") if self.agent_homes else None
            if logs and os.path.isdir(logs):
                out = [f"\n===== {self.id()}: engine logs ({logs}) ====="]
                for name in sorted(os.listdir(logs)):
                    with open(os.path.join(logs, name), "rb") as f:
                        lines = f.read().decode("utf-8", "replace").splitlines()
                    out.append(f"--- {name} ---")
                    out.extend(lines[-30:])
                sys.stderr.write("\n".join(out) + "\n")
            if pids:
                sys.stderr.write(f"engines left running at the end, killed: {pids}\n")


class ServeTest(ServingTestCase):

    def test_serve_from_disk_and_dram_and_chat(self):
        host, agent = self.start_serving_cluster()
        disk_dir = os.path.realpath(self.model_dir("node-a", MODEL))
        dram_dir = os.path.realpath(self.dram_model_dir("node-a", MODEL))

        # From disk, REST with wait: answers once ready.
        port = free_port()
        r = self.serve(source_device="disk", port=port, instance_id="inst-disk")
        self.assertEqual(r.status, 200, r)
        inst = r.json["job"]["instance"]
        self.assertEqual(
            (inst.get("id"), inst.get("model_name"), inst.get("node_id"), inst.get("engine"),
             inst.get("gpu_device"), inst.get("state"), inst.get("source_tier"), inst.get("port")),
            ("inst-disk", MODEL, "node-a", "fake", "cpu", "ready", "disk", port), inst)
        self.assertEqual(inst.get("endpoint"), f"http://127.0.0.1:{port}", inst)
        self.assertGreater(int(inst.get("pid", 0)), 0, inst)
        self.assertTrue(pid_exists(int(inst["pid"])), inst)
        self.assertIn("started_at", inst)
        self.assertEqual(self.chat(inst["endpoint"], MODEL), "hello swarm hello swarm")
        stats = fake_stats(inst["endpoint"])
        self.assertEqual(os.path.realpath(stats["model"]["path"]), disk_dir, stats)
        self.assertEqual(stats["env"], {"FAKE_ENGINE_PORT": str(port), "FAKE_ENGINE_MODEL": MODEL},
                         stats)

        # The same model copied to DRAM, then served from there.
        self.copy_ok(MODEL)
        inst2 = self.serve_ok(source_device="dram")
        self.assertEqual(inst2.get("source_tier"), "dram", inst2)
        self.assertNotEqual(inst2.get("id"), "inst-disk")
        self.assertNotEqual(inst2.get("port"), port)
        stats2 = fake_stats(inst2["endpoint"])
        self.assertEqual(os.path.realpath(stats2["model"]["path"]), dram_dir, stats2)
        self.assertEqual(self.chat(inst2["endpoint"], MODEL, "one two three", 5),
                         "one two three one two")

        # Both are listed: GET /serving, /serving/{name}, /memory/gpu.
        ids = sorted(i["id"] for i in self.serving())
        self.assertEqual(ids, sorted(["inst-disk", inst2["id"]]), self.serving())
        self.assertEqual(sorted(i["id"] for i in self.serving(MODEL)), ids)
        self.assertEqual(self.serving("no-such-model"), [])
        r = self.rest("GET", "/memory/gpu", token=self.api_token())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sorted(r.json.get("gpu_models", [])), ids, r.json)
        self.assertEqual(sorted(i["id"] for i in r.json.get("gpu", [])), ids, r.json)

        # A DRAM copy in use is not evicted without force.
        r = self.rest("DELETE", f"/memory/dram/{MODEL}", token=self.api_token())
        self.assertEqual(r.status, 409, r)
        self.assertIn(inst2["id"], error_message(r), r)
        self.assertTrue(os.path.isdir(dram_dir))

        # Stop both: by id (DELETE /instances/{id}) and by model name (POST /stop_serve).
        r = self.rest("DELETE", "/instances/inst-disk", token=self.api_token(),
                      timeout=STOP_REQUEST_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(i["id"], i["state"]) for i in r.json["stopped"]],
                         [("inst-disk", "stopped")], r.json)
        r = self.stop_serve(model_name=MODEL)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(i["id"], i["state"]) for i in r.json["stopped"]],
                         [(inst2["id"], "stopped")], r.json)
        for i in (inst, inst2):
            self.assert_group_gone(int(i["pid"]))
        self.assertEqual(self.engine_pids(), [])
        # Nothing left to stop.
        r = self.stop_serve(model_name=MODEL)
        self.assertEqual(r.status, 404, r)
        self.assertIn(MODEL, error_message(r))

    def test_cli_serve_ps_stop(self):
        host, agent = self.start_serving_cluster()
        result = self.assert_cli_ok(self.cli("serve", MODEL, "--gpu", "cpu", "--from", "disk",
                                             "--id", "inst-cli", timeout=SERVE_TIMEOUT_S))
        inst = self.instance("inst-cli")
        self.assertIsNotNone(inst, self.serving())
        self.assertEqual(inst["state"], "ready", inst)
        # Human output: the endpoint, the instance, the node.
        self.assertIn(inst["endpoint"], result.stdout, result.stdout)
        self.assertIn("inst-cli", result.stdout)
        self.assertIn("node-a", result.stdout)
        self.assertEqual(self.chat(inst["endpoint"], MODEL), "hello swarm hello swarm")

        # Extra engine arguments after --, and the engine named.
        result = self.assert_cli_ok(self.cli("serve", MODEL, "--gpu", "cpu", "--engine", "fake",
                                             "--id", "inst-cli2", "--", "--max-num-seqs", "3",
                                             timeout=SERVE_TIMEOUT_S))
        inst2 = self.instance("inst-cli2")
        self.assertIn(inst2["endpoint"], result.stdout)
        settings = fake_stats(inst2["endpoint"])["settings"]
        self.assertEqual(settings.get("max_num_seqs"), 3, settings)

        # gswarm ps: a table with both; --json: the instances.
        ps = self.assert_cli_ok(self.cli("ps"))
        for i in (inst, inst2):
            line = next((ln for ln in ps.stdout.splitlines() if i["id"] in ln), None)
            self.assertIsNotNone(line, ps.stdout)
            for field in (MODEL, "node-a", "fake", "cpu", "ready", i["endpoint"], str(i["pid"])):
                self.assertIn(field, line, ps.stdout)
        listed = self.cli_json("ps")
        self.assertEqual(sorted(i["id"] for i in listed.get("instances", [])),
                         ["inst-cli", "inst-cli2"], listed)

        # gswarm serve --json prints the job with its instance.
        out = self.cli_json("serve", MODEL, "--gpu", "cpu", "--id", "inst-cli3",
                            timeout=SERVE_TIMEOUT_S)
        job = out.get("job", out)
        self.assertEqual((job.get("instance") or {}).get("state"), "ready", out)

        # gswarm stop ID, then NAME (every instance of the model).
        result = self.assert_cli_ok(self.cli("stop", "inst-cli", timeout=STOP_REQUEST_TIMEOUT_S))
        self.assertIn("stopped inst-cli", result.stdout)
        self.assert_group_gone(int(inst["pid"]))
        result = self.assert_cli_ok(self.cli("stop", MODEL, timeout=STOP_REQUEST_TIMEOUT_S))
        self.assertIn("inst-cli2", result.stdout)
        self.assertIn("inst-cli3", result.stdout)
        ps = self.assert_cli_ok(self.cli("ps"))
        self.assertIn("No instances running", ps.stdout)
        ps_all = self.assert_cli_ok(self.cli("ps", "-a"))
        self.assertIn("inst-cli", ps_all.stdout)
        self.assertIn("stopped", ps_all.stdout)
        self.assertEqual(self.engine_pids(), [])

    def test_default_gpu_is_cpu_and_gpu0_refused(self):
        self.start_serving_cluster()
        inst = self.serve_ok(gpu_device=None)
        self.assertEqual(inst.get("gpu_device"), "cpu", inst)
        stats = fake_stats(inst["endpoint"])
        self.assertIn(stats.get("cuda_visible_devices"), ("", None), stats)
        r = self.serve(gpu_device="gpu0", timeout=10)
        self.assertIn(r.status, (400, 409), r)
        msg = error_message(r)
        self.assertIn("gpu0", msg, r)
        self.assertEqual(len(self.serving()), 1, self.serving())


class ModelsApiTest(ServingTestCase):

    def test_load_unload_and_delete_refused_while_serving(self):
        self.start_serving_cluster()
        model = self.get_model(MODEL, path="/api/models")
        self.assertEqual((model.get("available"), model.get("can_load"), model.get("loaded", False),
                          model.get("state")), (True, True, False, "available"), model)

        r = self.rest("POST", f"/api/models/{MODEL}/load", token=self.api_token(),
                      body={"wait": True}, timeout=SERVE_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)
        inst = r.json["job"]["instance"]
        self.assertEqual((inst.get("state"), inst.get("gpu_device"), inst.get("node_id")),
                         ("ready", "cpu", "node-a"), inst)
        self.assertGreater(inst.get("port", 0), 0, inst)
        self.assertEqual(self.chat(inst["endpoint"], MODEL), "hello swarm hello swarm")
        model = self.get_model(MODEL, path="/api/models")
        self.assertEqual((model.get("loaded"), model.get("state")), (True, "loaded"), model)
        listed = {m["name"]: m for m in self.rest("GET", "/api/models").json["models"]}
        self.assertTrue(listed[MODEL].get("loaded"), listed[MODEL])

        # Deleting a model that an instance serves is refused, naming the instance.
        r = self.rest("DELETE", f"/api/models/{MODEL}", token=self.api_token())
        self.assertEqual(r.status, 409, r)
        self.assertIn(inst["id"], error_message(r), r)
        self.assertTrue(os.path.isdir(self.model_dir("node-a", MODEL)))
        self.assertEqual(self.instance(inst["id"])["state"], "ready")

        r = self.rest("POST", f"/api/models/{MODEL}/unload", token=self.api_token(), body={},
                      timeout=STOP_REQUEST_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([(i["id"], i["state"]) for i in r.json["stopped"]],
                         [(inst["id"], "stopped")], r.json)
        self.assert_group_gone(int(inst["pid"]))
        model = self.get_model(MODEL, path="/api/models")
        self.assertEqual((model.get("loaded", False), model.get("state")), (False, "available"),
                         model)
        # Unloading again: nothing serves it.
        r = self.rest("POST", f"/api/models/{MODEL}/unload", token=self.api_token(), body={})
        self.assertEqual(r.status, 404, r)

        # Now it may go.
        r = self.rest("DELETE", f"/api/models/{MODEL}", token=self.api_token(),
                      timeout=JOB_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)


class EngineErrorsTest(ServingTestCase):

    def test_unknown_engine_and_missing_binary(self):
        self.start_serving_cluster()
        r = self.serve(engine="no-such-engine", timeout=10)
        self.assertIn(r.status, (400, 404, 409), r)
        self.assertIn("no-such-engine", error_message(r), r)

        for engine, program in (("fake-missing", "gswarm-no-such-engine-bin"), ("vllm", "vllm")):
            with self.subTest(engine=engine):
                t0 = time.monotonic()
                r = self.serve(engine=engine, timeout=10)
                self.assertIn(r.status, (400, 404, 409), r)
                msg = error_message(r)
                self.assertIn(engine, msg, r)
                self.assertIn(program, msg, r)
                self.assertIn("PATH", msg, r)
                self.assertLess(time.monotonic() - t0, 5.0, "an error before anything starts")
        result = self.cli("serve", MODEL, "--gpu", "cpu", "--engine", "fake-missing")
        self.assertNotEqual(result.returncode, 0, result)
        self.assertIn("gswarm-no-such-engine-bin", result.stderr + result.stdout)
        self.assertEqual([i for i in self.serving() if i.get("state") in ("starting", "ready")],
                         [], self.serving())
        self.assertEqual(self.engine_pids(), [])

    def test_unknown_placeholder_is_a_config_error(self):
        self.make_host_home()
        host = self.start_host()
        home = self.make_agent_home("node-a")
        self.write_tier_config(home, "node-a", default_engine="fake-typo", engines={
            "fake-typo": {"command": engine_command("--bogus", "{modle_path}")}})
        agent = self.start_agent("node-a")
        code = agent.wait(timeout=15)
        self.assertNotEqual(code, 0, agent.tail())
        log = agent.log()
        self.assertIn("fake-typo", log)
        self.assertIn("modle_path", log)
        self.assertTrue(host.alive())


class FailurePathsTest(ServingTestCase):

    def test_health_timeout_fails_with_log_lines_and_kills_the_group(self):
        self.start_serving_cluster()
        t0 = time.monotonic()
        r = self.serve(engine="fake-never", instance_id="inst-never")
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 409, r)
        msg = error_message(r)
        self.assertIn("inst-never", json.dumps(r.json) + msg)
        self.assertIn("not ready after 2s", msg, r)
        # The reason carries the engine's last log lines.
        self.assertIn("listening on http://", msg, r)
        self.assertGreater(elapsed, 1.5, "ready_timeout_s is 2")
        self.assertLess(elapsed, 15, "ready_timeout_s is 2")

        inst = self.wait_instance("inst-never", lambda i: i.get("state") == "failed", "to be failed")
        self.assertIn("listening on http://", inst.get("state_reason", ""), inst)
        self.assertIn("listening on http://", self.engine_log("inst-never"))
        self.assertGreater(int(inst.get("pid", 0)), 0, inst)
        self.assert_group_gone(int(inst["pid"]))
        self.assertEqual(self.engine_pids(), [])
        self.assertIsNone(self.record("inst-never"), "an ended instance keeps no record")
        model = self.get_model(MODEL, path="/api/models")
        self.assertFalse(model.get("loaded", False), model)

    def test_crash_restarts_then_fails(self):
        self.start_serving_cluster()
        r = self.serve(engine="fake-crash", instance_id="inst-crash", wait=False)
        self.assertEqual(r.status, 200, r)
        seen = {"restarts": set(), "pids": set()}

        def watch():
            inst = self.instance("inst-crash")
            if inst is None:
                return None
            seen["restarts"].add(int(inst.get("restarts", 0)))
            if inst.get("pid"):
                seen["pids"].add(int(inst["pid"]))
            return inst if inst.get("state") == "failed" else None

        t0 = time.monotonic()
        inst = wait_until(watch, CRASH_LOOP_TIMEOUT_S, "the crashing instance to end failed",
                          interval=0.05, describe=lambda: json.dumps(self.instance("inst-crash")))
        elapsed = time.monotonic() - t0
        self.assertEqual(int(inst.get("restarts", 0)), 3, inst)
        self.assertTrue({1, 2, 3} <= seen["restarts"] | {int(inst.get("restarts", 0))},
                        f"the restart counter should climb 1, 2, 3: saw {sorted(seen['restarts'])}")
        self.assertGreaterEqual(len(seen["pids"]), 2, f"each restart is a new process: {seen}")
        self.assertTrue(inst.get("state_reason"), inst)
        # Each attempt has its header in the one log.
        log = self.engine_log("inst-crash")
        self.assertEqual(log.count("==== gswarm"), 4, log[-3000:])
        for pid in seen["pids"]:
            self.assert_group_gone(pid)
        self.assertEqual(self.engine_pids(), [])
        sys.stderr.write(f"[crash loop: failed after {elapsed:.1f} s, pids {sorted(seen['pids'])}]\n")


class StopTest(ServingTestCase):

    def test_stop_leaves_no_process_of_the_group(self):
        self.start_serving_cluster()
        inst = self.serve_ok(engine="fake-workers", instance_id="inst-workers")
        record = self.record("inst-workers")
        self.assertIsNotNone(record, "a live instance has a record")
        pgid = int(record["pgid"])
        self.assertEqual(int(record["pid"]), int(inst["pid"]), record)
        stats = fake_stats(inst["endpoint"])
        children = stats["children"]
        self.assertEqual(len(children), 2, stats)
        self.assertEqual(stats["pgid"], pgid, stats)
        members = {pid for pid, state, _ in group_members(pgid)}
        self.assertTrue({int(inst["pid"]), *children} <= members, (members, children))
        self.assertNotEqual(pgid, os.getpgid(self.procs[-1].pid), "not the agent's group")

        r = self.stop_serve(instance_id="inst-workers")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["stopped"][0]["state"], "stopped", r.json)
        self.assert_group_gone(pgid)
        for pid in (int(inst["pid"]), *children):
            self.assertFalse(pid_exists(pid), f"pid {pid} outlived the stop")
        self.assertIsNone(self.record("inst-workers"))
        self.assertIn("shutting down", self.engine_log("inst-workers"))
        self.assertEqual(self.instance("inst-workers")["state"], "stopped")

    def test_sigterm_ignoring_engine_is_killed_after_the_grace_and_by_force(self):
        self.start_serving_cluster()
        slow = self.serve_ok(engine="fake-stubborn", instance_id="inst-stubborn")
        fast = self.serve_ok(engine="fake-stubborn", instance_id="inst-stubborn-2")
        pgids = {i["id"]: int(self.record(i["id"])["pgid"]) for i in (slow, fast)}

        t0 = time.monotonic()
        r = self.stop_serve(instance_id="inst-stubborn")
        grace_s = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["stopped"][0]["state"], "stopped", r.json)
        self.assert_group_gone(pgids["inst-stubborn"])
        self.assertIn("ignoring SIGTERM", self.engine_log("inst-stubborn"))

        t0 = time.monotonic()
        r = self.stop_serve(instance_id="inst-stubborn-2", force=True)
        force_s = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["stopped"][0]["state"], "stopped", r.json)
        self.assert_group_gone(pgids["inst-stubborn-2"])
        self.assertLess(force_s, grace_s, "force does not wait for the grace")
        self.assertLess(force_s, 5.0)
        self.assertEqual(self.engine_pids(), [])
        sys.stderr.write(f"[stop with grace: {grace_s:.1f} s; force: {force_s:.2f} s]\n")

    def test_port_in_use_is_refused_before_anything_starts(self):
        self.start_serving_cluster()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
            held.bind(("127.0.0.1", 0))
            held.listen(1)
            port = held.getsockname()[1]
            t0 = time.monotonic()
            r = self.serve(port=port, instance_id="inst-port", timeout=10)
            elapsed = time.monotonic() - t0
            self.assertIn(r.status, (400, 409), r)
            self.assertIn(str(port), error_message(r), r)
            self.assertIn("in use", error_message(r), r)
            self.assertLess(elapsed, 5.0)
            result = self.cli("serve", MODEL, "--gpu", "cpu", "--port", str(port))
            self.assertNotEqual(result.returncode, 0, result)
            self.assertIn(str(port), result.stderr + result.stdout)
            self.assertEqual([p for p in self.engine_pids() if f"--port {port}" in cmdline(p)],
                             [])
            self.assertEqual(self.engine_pids(), [])
            self.assertFalse([i for i in self.serving() if i.get("state") in ("starting", "ready")],
                             self.serving())
            # A port that an instance of ours holds is refused the same way.
            inst = self.serve_ok()
            r = self.serve(port=inst["port"], timeout=10)
            self.assertIn(r.status, (400, 409), r)
            self.assertIn(str(inst["port"]), error_message(r), r)
            self.assertEqual(len(self.engine_pids()), 1)


class AgentLifecycleTest(ServingTestCase):

    def test_agent_sigterm_stops_its_instances(self):
        host, agent = self.start_serving_cluster(cleanup_on_shutdown=True)
        a = self.serve_ok(instance_id="inst-a")
        b = self.serve_ok(engine="fake-workers", instance_id="inst-b")
        pgids = [int(self.record(i)["pgid"]) for i in ("inst-a", "inst-b")]
        self.assertEqual(agent.stop(signal.SIGTERM, timeout=30), 0, agent.tail())
        for pgid in pgids:
            self.assert_group_gone(pgid)
        for i in (a, b):
            self.assertFalse(pid_exists(int(i["pid"])))
        self.assertEqual(self.engine_pids(), [])
        self.assertIsNone(self.record("inst-a"))
        self.assertIsNone(self.record("inst-b"))
        self.assertTrue(host.alive())

    def test_agent_restart_without_cleanup_readopts(self):
        host, agent = self.start_serving_cluster(cleanup_on_shutdown=False)
        inst = self.serve_ok(instance_id="inst-keep")
        pid = int(inst["pid"])
        self.assertEqual(agent.stop(signal.SIGTERM, timeout=30), 0, agent.tail())
        self.wait_node("node-a", "offline", timeout=OFFLINE_TIMEOUT_S, procs=[host])
        # The engine runs on without its agent, and still answers.
        self.assertTrue(pid_exists(pid), "cleanup_on_shutdown false: the engine keeps running")
        self.assertIsNotNone(self.record("inst-keep"))
        self.assertEqual(self.chat(inst["endpoint"], MODEL), "hello swarm hello swarm")

        agent2 = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", "online", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent2])
        listed = self.wait_instance(
            "inst-keep", lambda i: i.get("state") == "ready" and int(i.get("pid", 0)) == pid,
            "to be ready again with the same pid", procs=[host, agent2])
        self.assertEqual(listed.get("endpoint"), inst["endpoint"], listed)
        self.assertEqual(len(self.serving()), 1, self.serving())
        self.assertEqual(self.engine_pids(), [pid], "adopted, not duplicated")
        self.assertIn("adopted", agent2.log())
        self.assertEqual(self.chat(inst["endpoint"], MODEL), "hello swarm hello swarm")
        model = self.get_model(MODEL, path="/api/models")
        self.assertEqual(model.get("state"), "loaded", model)

        # The adopted instance is stopped like any other.
        pgid = int(self.record("inst-keep")["pgid"])
        r = self.stop_serve(instance_id="inst-keep")
        self.assertEqual(r.status, 200, r)
        self.assert_group_gone(pgid)
        self.assertFalse(pid_exists(pid))


if __name__ == "__main__":
    unittest.main()
