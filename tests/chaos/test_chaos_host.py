"""Chaos (issue 15): kill -9 of the host, GSWARM_CHAOS_HOST_KILLS times, under steady router
traffic (OpenAI chat completions through the host's /v1/ router to a fake engine on node-a) and
with a download running on node-a.

Each kill lands after a seeded random number of answered requests. After every restart: the
catalog (GET /models) and the jobs (GET /jobs) are back at once from host.db, the running
download is still running (never failed), the agent comes back and the router's instance is the
same one (same id, same engine pid, no restart); at the end the download has completed with the
Hub's bytes, the only engine process is the first one, and every request that failed was in
flight while the host was down (from the kill until the restarted host listed the instance as
ready again).

Run: cd tests/chaos && GSWARM_BIN=../../build/cli/gswarm GSWARM_PYTHON_STUBS=../../build/python \
     /usr/bin/python3 -m unittest -v test_chaos_host
"""

import json
import threading
import time
import unittest

from chaos_harness import (
    BIG_FILE, BIG_MODEL, CHAOS_BIG_FILE_MB, HOST_KILLS, SEED, ChaosTestCase, MiB, say)
from gswarm_harness import JOB_DONE_STATES, RECONNECT_TIMEOUT_S, wait_until
from test_router import MODEL_A, RouterTestCase, chat_body, post_json

# Requests per second of the steady traffic (one client thread, one request at a time).
TRAFFIC_RATE = 20.0
# A host restart cycle (answered requests, kill, start, agent back: about 0.7 s on an idle
# two-core machine, more when loaded), used to pace the download so that it runs through the
# kills.
CYCLE_S = 2.0


class Traffic:
    """One thread sending chat completions through the host's router, one at a time, at about
    TRAFFIC_RATE per second; every request's (start, end, outcome) is kept."""

    def __init__(self, base_url, model):
        self.base_url, self.model = base_url, model
        self.results = []  # (t0, t1, ok, detail)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                status, body, _ = post_json(self.base_url, "/v1/chat/completions",
                                            chat_body(self.model, f"tick {n}", max_tokens=2),
                                            timeout=30)
                text = ((body or {}).get("choices") or [{}])[0].get("message", {}).get("content")
                ok = status == 200 and text == f"tick {n}"
                detail = f"HTTP {status}" if ok else f"HTTP {status}: {json.dumps(body)[:200]}"
            except Exception as e:  # noqa: BLE001 - a refused or cut connection is an outcome
                ok, detail = False, repr(e)[:200]
            with self.lock:
                self.results.append((t0, time.monotonic(), ok, detail))
            # The traffic's pace, not a wait for anything.
            self.stopping.wait(1.0 / TRAFFIC_RATE)

    def stop(self):
        self.stopping.set()
        self.thread.join(60)

    def snapshot(self):
        with self.lock:
            return list(self.results)

    def successes_after(self, t):
        return sum(1 for t0, _, ok, _ in self.snapshot() if ok and t0 >= t)


class HostKillTest(RouterTestCase, ChaosTestCase):

    hub_big_file_mb = CHAOS_BIG_FILE_MB

    def one_instance(self):
        insts = self.live_instances()
        return insts[0] if len(insts) == 1 and insts[0].get("state") == "ready" else None

    def test_kill9_host_under_traffic_and_a_download(self):
        host, agent = self.start_router_cluster(host_extra={"keep_alive_s": 3600})
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "warm up"))
        self.assertEqual(status, 200, body)
        first = wait_until(self.one_instance, 20, "the router's instance of ra to be ready",
                           procs=[host, agent], describe=lambda: json.dumps(self.serving()))
        pid = int(first["pid"])
        self.assertEqual(self.engine_pids(), [pid])

        size = sum(e["size"] for e in self.repo(BIG_MODEL).files().values())
        rate = max(MiB, int(size / (HOST_KILLS * CYCLE_S)))
        self.hub.add_fault(rate_limit_bytes_per_s=rate, path=f"{BIG_MODEL}/{BIG_FILE}")
        r = self.download("big", f"hf://{BIG_MODEL}", wait=False)
        self.assertEqual(r.status, 200, r)
        job_id = r.json["job"]["id"]
        self.wait_job(job_id, states=("running",), procs=[host, agent])
        catalog = set(self.model_names())
        self.assertEqual(catalog, {MODEL_A, "big"})
        ended = {j["id"]: j["state"] for j in self.list_jobs() if j["state"] in JOB_DONE_STATES}
        self.assertTrue(ended, "the download and the load of ra are jobs")

        traffic = Traffic(self.host_url, MODEL_A).start()
        self.addCleanup(traffic.stop)
        windows = []  # (kill, host answering, instance back)
        mark = time.monotonic()
        running_at_kills = 0
        for k in range(1, HOST_KILLS + 1):
            need = self.rng.randint(1, 8)
            wait_until(lambda: traffic.successes_after(mark) >= need, 60,
                       f"{need} answered requests before kill {k}", procs=[host, agent])
            before = self.get_job(job_id)
            running_at_kills += before.get("state") not in JOB_DONE_STATES
            t_kill = time.monotonic()
            host.kill()  # SIGKILL
            host = self.start_host(wait=False, name=f"host-{k + 1}")
            self.wait_ready(host)
            t_up = time.monotonic()
            # From host.db, before any agent is back.
            self.assertTrue(catalog <= set(self.model_names()),
                            f"kill {k}: the catalog after the restart: {self.model_names()}")
            for jid, state in ended.items():
                self.assertEqual(self.get_job(jid).get("state"), state, f"kill {k}: job {jid}")
            job = self.get_job(job_id)
            self.assertNotIn(job.get("state"), ("failed", "cancelled"),
                             f"kill {k}: the download survives the host: {json.dumps(job)}")

            self.wait_node("node-a", "online", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])
            inst = wait_until(self.one_instance, 20, f"kill {k}: the instance to be ready again",
                              procs=[host, agent], describe=lambda: json.dumps(self.serving()))
            t_back = time.monotonic()
            windows.append((t_kill, t_up, t_back))
            self.assertEqual((inst["id"], int(inst["pid"]), int(inst.get("restarts", 0))),
                             (first["id"], pid, 0), f"kill {k}: the engine is never restarted")
            self.assertEqual(self.engine_pids(), [pid], f"kill {k}: no second engine")
            mark = t_back
            say(f"host kill {k}/{HOST_KILLS}: answering after {t_up - t_kill:.2f} s, instance "
                f"back after {t_back - t_kill:.2f} s; download {before.get('state')} at "
                f"{before.get('bytes_done', 0)}/{size} B before the kill, "
                f"{job.get('state')} at {job.get('bytes_done', 0)} B on the restarted host")
        wait_until(lambda: traffic.successes_after(mark) >= 3, 60,
                   "requests answered after the last restart", procs=[host, agent])
        traffic.stop()

        job = self.wait_job_end(job_id, procs=[host, agent])
        self.assertEqual(job.get("state"), "succeeded", json.dumps(job))
        self.assert_same_files(self.model_dir("node-a", "big"), self.repo(BIG_MODEL).files())
        self.assertEqual(self.get_model("big").get("state"), "available")
        served = self.hub.stats()["bytes_per_file"].get(f"{BIG_MODEL}/{BIG_FILE}", 0)
        say(f"the Hub served {served} B of big-model's {size} B file")
        self.assertEqual(set(self.model_names()), catalog)
        (inst,) = self.live_instances()
        self.assertEqual((inst["id"], int(inst["pid"])), (first["id"], pid))
        self.assertEqual(self.engine_pids(), [pid])

        results = traffic.snapshot()
        failed = [(t0, t1, detail) for t0, t1, ok, detail in results if not ok]
        outside = [(round(t0 - self.t_start, 3), round(t1 - self.t_start, 3), detail)
                   for t0, t1, detail in failed
                   if not any(t0 <= back and t1 >= kill for kill, _, back in windows)]
        after_up = [f for f in failed
                    if any(up <= f[0] <= back for _, up, back in windows)]
        say(f"{self.id()}: {HOST_KILLS} host kills in {time.monotonic() - self.t_start:.1f} s "
            f"(seed {SEED}); {len(results)} requests, {len(failed)} failed, all while the host "
            f"was down or not yet rejoined ({len(after_up)} of them after it answered /health); "
            f"download running at {running_at_kills} of the kills; longest outage "
            f"{max(b - k for k, _, b in windows):.2f} s; failures seen: "
            f"{sorted({detail[:90] for _, _, detail in failed})[:4]}")
        self.assertEqual(outside, [],
                         "requests failed while the host was up: "
                         f"windows {[(round(k - self.t_start, 3), round(b - self.t_start, 3)) for k, _, b in windows]}")
        self.assertGreater(len(results) - len(failed), HOST_KILLS, "traffic flowed")
        self.assertGreaterEqual(running_at_kills, 1, "the download was running at a kill")


if __name__ == "__main__":
    unittest.main()
