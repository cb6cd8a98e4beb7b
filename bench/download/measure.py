#!/usr/bin/python3
"""The measuring half of bench/download/run.sh (which starts the fake Hub and gswarm, then runs
this). For each repo shape it downloads the same files with curl and with gswarm, REPEAT times
each, interleaved, and prints a table (or JSON with --json; the table then goes to stderr).

Per run it records wall seconds and CPU seconds (user + sys): curl's, sha256sum's and sync's
from wait4(); gswarm's as the `gswarm start` process's utime + stime delta from /proc/PID/stat
(the agent that downloads and hashes runs inside it) plus the CLI's from wait4(); the fake Hub's
from /proc/PID/stat; and the whole machine's busy time from /proc/stat, so that what the rest of
the machine did during the run can be told apart.

Besides the tools, two goals are measured. "openssl 1 core" is `openssl dgst -sha256` of the same
bytes (the Hub's cached blobs), alone: one process on one core. Against it gswarm's "vs limit" is
read: a repo with one LFS file cannot be verified faster than one core hashes it, a repo of many
can be at most as fast as the slower of curl and every core hashing. And the resume step (unless
--no-resume): a paced download of the single shape's big file is cut by `kill -9` of `gswarm start`
once its .part holds --resume-at-mb MiB, gswarm is started again with the same HOME, the host
sends the job again, and the agent's log says how many bytes it re-read to restore the file's
hash state (goal: at most one 64 MiB checkpoint interval). Last, the segments step (unless
--no-segments): the Hub paces every response of the big file, each Range request too, at
--segment-rate-mb MiB/s, a network that caps each connection; the single shape is fetched by
gswarm with client.download_connections 1, by gswarm restarted with --segment-connections (4), and
by curl (one connection) as the reference (goal: N connections at least 3x one connection).
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402  (bench/benchlib.py)
from benchlib import (cpu_model, first_line, git_state, loadavg, log, machine_busy,  # noqa: E402
                      proc_cpu, run, tail)

benchlib.set_name("download")
TICK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 300  # one download, any tool
MiB = 1 << 20
OPENSSL = "openssl 1 core"
GOAL_VS_LIMIT = 0.9  # gswarm's median MB/s over the shape's limit
CHECKPOINT_BYTES = 64 * MiB  # client/stream_hasher.h kCheckpointBytes: the most a resume re-reads
JOB_DONE = ("succeeded", "failed", "cancelled")
GOAL_SEGMENTS = 3.0  # gswarm with N connections over gswarm with one, median MB/s, paced Hub
STRIPE_MIN_BYTES = 64 * MiB  # client/download_plan.h: Hub files striped over ranges from this size
CONNECTIONS_ENV = "GSWARM_CLIENT_DOWNLOAD_CONNECTIONS"  # client.download_connections
# client/file_fetcher.cc: "<file>: resuming at byte N (re-read M bytes to restore its hashes)"
RESUME_LINE = re.compile(r"(?:^|\s)(\S+): resuming at byte (\d+) \(re-read (\d+) bytes")
# Loopback only: no proxy from the caller's environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ThreadSampler:
    """Polls the CPU time of every thread of a process while a run lasts, so that the busiest
    thread's share can be told even when the thread exits before the run ends (gswarm's download
    workers do). Reads lose at most one interval of a thread's last CPU."""

    INTERVAL_S = 0.02

    def __init__(self, pid: int):
        self.pid = pid
        self.base = self._read()
        self.last = dict(self.base)
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _read(self) -> dict:
        out = {}
        task = "/proc/%d/task" % self.pid
        for tid in os.listdir(task):
            try:
                with open("%s/%s/stat" % (task, tid)) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
            except (OSError, IndexError, ValueError):
                pass  # exited meanwhile
        return out

    def _loop(self) -> None:
        while not self.stop_.wait(self.INTERVAL_S):
            self.last.update(self._read())

    def stop(self) -> float:
        """CPU seconds of the busiest thread since the start."""
        self.stop_.set()
        self.thread.join()
        self.last.update(self._read())
        return max((v - self.base.get(t, 0.0) for t, v in self.last.items()), default=0.0)


class Probe:
    """CPU of the fake Hub, of the gswarm server and of the machine over a window."""

    def __init__(self, hub_pid: int, gswarm_pid: int):
        self.pids = {"hub": hub_pid, "gswarm": gswarm_pid}

    def snap(self) -> dict:
        s = {k: proc_cpu(p) for k, p in self.pids.items()}
        s["machine"] = machine_busy()
        s["t"] = time.monotonic()
        return s

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        return {k: b[k] - a[k] for k in a}


def settle() -> None:
    """Untimed: write back what earlier runs left dirty, so no run pays for another's writes."""
    subprocess.run(["sync"], check=True, timeout=120)


def wait_until(pred, timeout_s: float, what: str, interval: float = 0.05):
    """pred()'s first true value, polled every `interval` s; exits naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise SystemExit("%s: not within %.0f s" % (what, timeout_s))
        time.sleep(interval)


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie has: its sockets and files are closed)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def http_json(method: str, url: str, body=None, timeout: float = 10):
    """(status, parsed JSON body or None); status 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with HTTP.open(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, None


def file_size(path: str):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


class Bench:
    def __init__(self, args):
        self.a = args
        self.probe = Probe(args.hub_pid, args.gswarm_pid)
        with open(args.repos) as f:
            self.repos = json.load(f)
        os.makedirs(args.work, exist_ok=True)
        self.logf = os.path.join(args.work, "commands.log")
        self.restarted = None  # the `gswarm start` the resume step started (ours to stop)

    # ---- curl -----------------------------------------------------------------------------------

    def hash_files(self, tool: str, paths: list, shape: dict, i: int):
        """Runs a sha256 tool over the files (timed) and checks every digest. (wall s, CPU s)."""
        argv = {"sha256sum": ["sha256sum", "--"],
                "openssl": ["openssl", "dgst", "-sha256", "-r"]}[tool] + paths
        out = os.path.join(self.a.work, "digests")
        rc, wall, cpu = run(argv, out)
        if rc != 0:
            raise SystemExit("%s failed (exit %d):\n%s" % (tool, rc, tail(out)))
        sums = {}
        with open(out) as f:
            for line in f:  # "<hex>  <path>" (sha256sum), "<hex> *<path>" (openssl -r)
                digest, name = line.rstrip("\n").split(" ", 1)
                sums[name[1:]] = digest
        os.unlink(out)
        for f, p in zip(shape["files"], paths):
            if sums.get(p) != f["sha256"]:
                raise SystemExit("run %d: %s says %s has sha256 %s, expected %s"
                                 % (i, tool, f["path"], sums.get(p), f["sha256"]))
        return wall, cpu

    def curl_run(self, shape: dict, i: int) -> dict:
        """curl, then openssl dgst, then fsync, back to back; then sha256sum (untimed against the
        others: by then the files are written back, which costs sha256sum nothing)."""
        out = os.path.join(self.a.work, "curl-out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        argv = ["curl", "-sSfL", "--create-dirs", "--max-time", str(RUN_TIMEOUT_S)]
        paths = []
        for f in shape["files"]:
            argv += ["%s/%s/resolve/%s/%s" % (self.a.hub_url, shape["repo"], shape["commit"],
                                             f["path"]), "-o", os.path.join(out, f["path"])]
            paths.append(os.path.join(out, f["path"]))
        settle()
        snaps = [self.probe.snap()]
        rc, wall, cpu = run(argv, self.logf)
        snaps.append(self.probe.snap())
        if rc != 0:
            raise SystemExit("curl failed (exit %d):\n%s" % (rc, tail(self.logf)))
        ossl_wall, ossl_cpu = self.hash_files("openssl", paths, shape, i)
        snaps.append(self.probe.snap())
        rc, sync_wall, sync_cpu = run(["sync", "--"] + paths, self.logf)  # fsync(2) each file
        snaps.append(self.probe.snap())
        if rc != 0:
            raise SystemExit("sync failed (exit %d)" % rc)
        sha_wall, sha_cpu = self.hash_files("sha256sum", paths, shape, i)
        snaps.append(self.probe.snap())
        shutil.rmtree(out, ignore_errors=True)
        d = [Probe.delta(a, b) for a, b in zip(snaps, snaps[1:])]  # curl, openssl, sync, sha256sum

        def row(parts, walls, cpus, **extra):
            return dict({"s": sum(walls), "cpu": sum(cpus),
                         "hub_cpu": sum(d[k]["hub"] for k in parts),
                         "machine": sum(d[k]["machine"] for k in parts)}, **extra)

        return {
            "curl": row([0], [wall], [cpu], top_thread_cpu=cpu),  # curl is one thread
            "curl+sha256sum": row([0, 3], [wall, sha_wall], [cpu, sha_cpu],
                                  sha256sum_s=sha_wall, sha256sum_cpu=sha_cpu),
            "curl+openssl": row([0, 1], [wall, ossl_wall], [cpu, ossl_cpu],
                                openssl_s=ossl_wall, openssl_cpu=ossl_cpu),
            "curl+openssl+fsync": row([0, 1, 2], [wall, ossl_wall, sync_wall],
                                      [cpu, ossl_cpu, sync_cpu], openssl_s=ossl_wall,
                                      openssl_cpu=ossl_cpu, sync_s=sync_wall, sync_cpu=sync_cpu),
        }

    # ---- openssl alone ---------------------------------------------------------------------------

    def openssl_run(self, shape: dict, i: int) -> dict:
        """`openssl dgst -sha256` of the shape's bytes, one file after another in one process (one
        core), timed alone: the Hub's blobs, the same bytes as the downloaded files, cached by
        warm() and never dirty, so neither the disk nor writeback is in it."""
        settle()
        s0 = self.probe.snap()
        wall, cpu = self.hash_files("openssl", [f["blob"] for f in shape["files"]], shape, i)
        d = Probe.delta(s0, self.probe.snap())
        return {OPENSSL: {"s": wall, "cpu": cpu, "hub_cpu": d["hub"], "machine": d["machine"],
                          "top_thread_cpu": cpu}}  # openssl dgst is one thread

    # ---- gswarm ---------------------------------------------------------------------------------

    def gswarm(self, *args) -> list:
        return [self.a.gswarm, "--host", self.a.grpc] + list(args)

    def gswarm_remove(self, name: str) -> None:
        model_dir = os.path.join(self.a.model_dir, name)
        rc, _, _ = run(self.gswarm("rm", name), self.logf, 60)
        if rc != 0:
            raise SystemExit("gswarm rm %s failed (exit %d):\n%s" % (name, rc, tail(self.logf)))
        deadline = time.monotonic() + 30
        while os.path.exists(model_dir):
            if time.monotonic() > deadline:
                raise SystemExit("%s still there 30 s after gswarm rm" % model_dir)
            time.sleep(0.05)

    def gswarm_run(self, shape: dict, i: int) -> dict:
        name = "bench-%s" % shape["key"]
        settle()
        sampler = ThreadSampler(self.a.gswarm_pid)
        p0 = self.probe.snap()
        rc, wall, cli_cpu = run(self.gswarm("download", "hf://" + shape["repo"], "--name", name),
                                os.path.join(self.a.work, "cli.log"))
        p1 = self.probe.snap()
        top_thread = sampler.stop()
        if rc != 0:
            raise SystemExit("gswarm download failed (exit %d):\n%s"
                             % (rc, tail(os.path.join(self.a.work, "cli.log"))))
        model_dir = os.path.join(self.a.model_dir, name)
        for f in shape["files"]:
            p = os.path.join(model_dir, f["path"])
            if not os.path.isfile(p) or os.path.getsize(p) != f["size"]:
                raise SystemExit("gswarm run %d: %s missing or of the wrong size" % (i, p))
        self.gswarm_remove(name)
        d = Probe.delta(p0, p1)
        return {"gswarm": {"s": wall, "cpu": d["gswarm"] + cli_cpu, "agent_cpu": d["gswarm"],
                           "cli_cpu": cli_cpu, "hub_cpu": d["hub"], "machine": d["machine"],
                           "top_thread_cpu": top_thread}}

    # ---- resume after kill -9 --------------------------------------------------------------------

    def job(self, job_id: str):
        """GET /jobs/{id}: the job; None when the host does not know it; {} when none answered."""
        status, body = http_json("GET", "%s/jobs/%s" % (self.a.http_url, job_id), timeout=5)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            return {}
        return body.get("job", body)

    def restart_gswarm(self, what: str = "resume", env: dict = None) -> None:
        """Starts `gswarm start` again as run.sh did (--restart-argv: the same HOME, config and
        ports, log level info so that the agent's resume line is logged), appending to its log;
        `env`: settings added to its environment (the argv is `env ... NAME=VALUE ... gswarm ...`:
        they go just before the binary, after run.sh's). Its pid goes to --restart-pid-file, from
        which run.sh stops it should this script not. `what` names the step in errors."""
        with open(self.a.restart_argv, "rb") as f:
            raw = f.read()
        argv = [a.decode() for a in raw[:-1].split(b"\0")]  # printf '%s\0': one NUL after each
        if env:
            if self.a.gswarm not in argv:
                raise SystemExit("%s: %s not in %s" % (what, self.a.gswarm, self.a.restart_argv))
            at = argv.index(self.a.gswarm)
            argv[at:at] = ["%s=%s" % kv for kv in sorted(env.items())]
        out = open(self.a.gswarm_log, "ab")  # closed by stop_restarted()
        self.restarted = (subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT), out)
        proc = self.restarted[0]
        if self.a.restart_pid_file:
            tmp = self.a.restart_pid_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % proc.pid)
            os.replace(tmp, self.a.restart_pid_file)

        def ready():
            if proc.poll() is not None:
                raise SystemExit("%s: the restarted gswarm start exited (%d):\n%s"
                                 % (what, proc.returncode, tail(self.a.gswarm_log)))
            return http_json("GET", self.a.http_url + "/health", timeout=1)[0] == 200
        wait_until(ready, 30, "%s: the restarted gswarm start answering /health" % what)

    def stop_restarted(self) -> None:
        """Stops and reaps the gswarm start restart_gswarm() started: TERM, then KILL after 10 s."""
        if self.restarted is None:
            return
        proc, out = self.restarted
        self.restarted = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()
        if self.a.restart_pid_file:
            try:
                os.unlink(self.a.restart_pid_file)
            except FileNotFoundError:
                pass

    def resume_run(self) -> dict:
        """Downloads the single shape's big file with the Hub pacing it, SIGKILLs `gswarm start`
        (host and agent) once the .part holds --resume-at-mb MiB, clears the pacing, starts gswarm
        again and waits for the job (which the host keeps in host.db and sends to the agent again
        when it reconnects; downloaded again from the CLI should the host have lost it). Reads
        from gswarm's log how many bytes the agent re-read to restore the file's hash state."""
        shape = self.repos["single"]
        big = max(shape["files"], key=lambda f: f["size"])
        name = "bench-resume"
        pid = self.a.gswarm_pid
        rate = int(self.a.resume_rate_mb * MiB)
        at = self.a.resume_at_mb * MiB
        if at > big["size"] * 3 // 4:
            at = big["size"] * 3 // 4
            log("resume: %s is %.0f MiB: killing at %.0f MiB staged instead of %d"
                % (big["path"], big["size"] / MiB, at / MiB, self.a.resume_at_mb))
        part = os.path.join(self.a.model_dir, ".gswarm-staging", name, big["path"] + ".part")
        cli_log = os.path.join(self.a.work, "cli.log")
        settle()
        fault = {"rate_limit_bytes_per_s": rate, "path": "%s/%s" % (shape["repo"], big["path"])}
        status, body = http_json("POST", self.a.hub_url + "/_fake/faults", fault)
        if status != 200:
            raise SystemExit("resume: the fake Hub answered %d to fault %s: %s"
                             % (status, fault, body))
        try:
            t0 = time.monotonic()
            cli = subprocess.run(self.gswarm("--json", "download", "hf://" + shape["repo"],
                                             "--name", name, "--detach"),
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                 timeout=60)
            if cli.returncode != 0:
                raise SystemExit("resume: gswarm download --detach failed (exit %d):\n%s%s"
                                 % (cli.returncode, cli.stdout, cli.stderr))
            try:
                started = json.loads(cli.stdout)
                job_id = started.get("id") or started["job"]["id"]
            except (ValueError, KeyError, TypeError, AttributeError):
                raise SystemExit("resume: gswarm --json download --detach printed no job id:\n%s"
                                 % cli.stdout) from None
            log("resume: job %s, %s paced at %.0f MiB/s; kill -9 of gswarm start (pid %d) once "
                "%.0f MiB are staged" % (job_id, big["path"], rate / MiB, pid, at / MiB))

            def staged():
                if gone(pid):
                    raise SystemExit("resume: gswarm start (pid %d) exited during the paced "
                                     "download:\n%s" % (pid, tail(self.a.gswarm_log)))
                n = file_size(part)
                return n is not None and n > at
            wait_until(staged, 60 + 3 * at / rate, "resume: %.0f MiB staged in %s"
                       % (at / MiB, part), interval=0.01)
            os.kill(pid, signal.SIGKILL)
            t_kill = time.monotonic()
            wait_until(lambda: gone(pid), 10, "resume: gswarm start (pid %d) gone after SIGKILL"
                       % pid, interval=0.01)
            partial = file_size(part)
            checkpoint = file_size(part + ".hash")
        finally:
            cleared = http_json("DELETE", self.a.hub_url + "/_fake/faults")[0] == 200
        if not cleared:
            raise SystemExit("resume: the fake Hub did not clear its faults")
        log("resume: killed at %d bytes staged (%s); restarting gswarm start"
            % (partial or 0, "checkpoint %d bytes" % checkpoint if checkpoint is not None
               else "no checkpoint file"))

        log_offset = file_size(self.a.gswarm_log) or 0
        self.restart_gswarm()
        t_ready = time.monotonic()
        proc = self.restarted[0]
        last = {}

        def ended():
            if proc.poll() is not None:
                raise SystemExit("resume: the restarted gswarm start exited (%d):\n%s"
                                 % (proc.returncode, tail(self.a.gswarm_log)))
            j = self.job(job_id)
            if j is None:
                return "unknown"
            if j:
                last["job"] = j
                if j.get("state") in JOB_DONE:
                    return j["state"]
            return None
        end = wait_until(ended, RUN_TIMEOUT_S, "resume: job %s to end after the restart" % job_id)
        reissued = end != "succeeded"
        if reissued:
            log("resume: job %s %s after the restart (%s); downloading again from the CLI"
                % (job_id, end, last.get("job", {}).get("message", "")))
            rc, _, _ = run(self.gswarm("download", "hf://" + shape["repo"], "--name", name),
                           cli_log)
            if rc != 0:
                raise SystemExit("resume: gswarm download failed (exit %d):\n%s"
                                 % (rc, tail(cli_log)))
        t_done = time.monotonic()
        restarted_cpu = proc_cpu(proc.pid)
        model_dir = os.path.join(self.a.model_dir, name)
        for f in shape["files"]:
            p = os.path.join(model_dir, f["path"])
            if file_size(p) != f["size"]:
                raise SystemExit("resume: %s missing or of the wrong size" % p)

        with open(self.a.gswarm_log, "rb") as f:
            f.seek(log_offset)
            text = f.read().decode(errors="replace")
        hits = [m for m in RESUME_LINE.finditer(text) if m.group(1) == big["path"]]
        resumed_at = int(hits[-1].group(2)) if hits else None
        reread = int(hits[-1].group(3)) if hits else None
        if not hits:
            log("resume: no \"%s: resuming at byte N (re-read M bytes ...)\" line in gswarm's log "
                "after the restart: re-read bytes n/a" % big["path"])
        self.gswarm_remove(name)
        r = {"file": big["path"], "file_bytes": big["size"], "rate_bytes_per_s": rate,
             "kill_after_bytes": at, "partial_bytes": partial, "checkpoint_file_bytes": checkpoint,
             "resumed_at_bytes": resumed_at, "reread_bytes": reread,
             "goal_reread_bytes": CHECKPOINT_BYTES,
             "met": None if reread is None else reread <= CHECKPOINT_BYTES,
             "job_id": job_id, "job_state_after_restart": end, "reissued": reissued,
             "paced_s": t_kill - t0, "restart_s": t_ready - t_kill, "resume_s": t_done - t_kill,
             "total_s": t_done - t0, "restarted_gswarm_cpu_s": restarted_cpu}
        log("resume: partial %s, re-read %s, resume %.2f s (restart %.2f s), total %.2f s"
            % (mib(partial), mib(reread), r["resume_s"], r["restart_s"], r["total_s"]))
        return r

    # ---- segments: one big file over N connections, each capped --------------------------------

    def server_pid(self) -> int:
        """The `gswarm start` now running: the one run.sh started, or the one restarted here."""
        return self.restarted[0].pid if self.restarted is not None else self.a.gswarm_pid

    def stop_gswarm(self, what: str) -> None:
        """Stops the `gswarm start` now running and waits until it is gone (its ports free): the
        restarted one as stop_restarted() does; run.sh's with TERM, then KILL after 30 s."""
        if self.restarted is not None:
            self.stop_restarted()
            return
        pid = self.a.gswarm_pid
        if gone(pid):
            return
        os.kill(pid, signal.SIGTERM)
        try:
            wait_until(lambda: gone(pid), 30, "%s: gswarm start (pid %d) gone after TERM"
                       % (what, pid), interval=0.05)
        except SystemExit:
            log("%s: gswarm start (pid %d) still there 30 s after TERM: KILL" % (what, pid))
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: gone(pid), 10, "%s: gswarm start (pid %d) gone after KILL"
                       % (what, pid), interval=0.05)

    def wait_agent_online(self, what: str) -> None:
        """Until the host counts a node online (GET /health: nodes_online), so that a download
        right after a restart finds the local agent connected again."""
        def online():
            status, body = http_json("GET", self.a.http_url + "/health", timeout=2)
            return status == 200 and isinstance(body, dict) and int(
                body.get("nodes_online", body.get("nodesOnline", 0)) or 0) >= 1
        wait_until(online, 30, "%s: the local agent online after the restart" % what,
                   interval=0.1)

    def hub_stats(self) -> dict:
        status, body = http_json("GET", self.a.hub_url + "/_fake/stats", timeout=10)
        if status != 200 or not isinstance(body, dict):
            raise SystemExit("segments: the fake Hub answered %d to GET /_fake/stats" % status)
        return body

    def paced_run(self, arm: str, shape: dict, big: dict, i: int) -> dict:
        """One download of the single shape while the Hub paces the big file: curl (one
        connection, every file one after another) or the running gswarm start, whatever its
        client.download_connections. Also counts, from the Hub's stats (reset first), the big
        file's body responses (200/206) and how many of them the pacing fault covered."""
        settle()
        if http_json("POST", self.a.hub_url + "/_fake/stats/reset")[0] != 200:
            raise SystemExit("segments: the fake Hub did not reset its stats")
        hub0 = proc_cpu(self.a.hub_pid)
        if arm == "curl":
            out = os.path.join(self.a.work, "curl-segments")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            argv = ["curl", "-sSfL", "--create-dirs", "--max-time", str(RUN_TIMEOUT_S)]
            paths = []
            for f in shape["files"]:
                paths.append(os.path.join(out, f["path"]))
                argv += ["%s/%s/resolve/%s/%s" % (self.a.hub_url, shape["repo"], shape["commit"],
                                                 f["path"]), "-o", paths[-1]]
            rc, wall, cpu = run(argv, self.logf)
            if rc != 0:
                raise SystemExit("segments: curl failed (exit %d):\n%s" % (rc, tail(self.logf)))
            for f, p in zip(shape["files"], paths):
                if file_size(p) != f["size"]:
                    raise SystemExit("segments: curl run %d: %s of the wrong size" % (i, p))
            shutil.rmtree(out, ignore_errors=True)
        else:
            pid = self.server_pid()
            name = "bench-segments"
            cli_log = os.path.join(self.a.work, "cli.log")
            g0 = proc_cpu(pid)
            rc, wall, cli_cpu = run(self.gswarm("download", "hf://" + shape["repo"], "--name",
                                                name), cli_log)
            cpu = proc_cpu(pid) - g0 + cli_cpu
            if rc != 0:
                raise SystemExit("segments: gswarm download failed (exit %d):\n%s"
                                 % (rc, tail(cli_log)))
            model_dir = os.path.join(self.a.model_dir, name)
            for f in shape["files"]:
                p = os.path.join(model_dir, f["path"])
                if file_size(p) != f["size"]:
                    raise SystemExit("segments: gswarm run %d: %s missing or of the wrong size"
                                     % (i, p))
        hub_cpu = proc_cpu(self.a.hub_pid) - hub0
        st = self.hub_stats()
        if arm != "curl":
            self.gswarm_remove(name)
        key = "%s/%s" % (shape["repo"], big["path"])
        bodies = [e for e in st.get("log", []) if e.get("file") == key and e.get("method") == "GET"
                  and e.get("status") in (200, 206)]
        return {"s": wall, "cpu": cpu, "hub_cpu": hub_cpu, "responses": len(bodies),
                "range_responses": sum(1 for e in bodies if e.get("range")),
                "paced_responses": st.get("faults_fired", {}).get("rate_limit_bytes_per_s", 0),
                "big_file_bytes_sent": sum(e.get("bytes", 0) for e in bodies)}

    def segments_run(self) -> dict:
        """The single shape with the Hub pacing every response of its big file (each Range
        request too: the fault has no `times`, so it never runs out) at --segment-rate-mb MiB/s:
        gswarm as it runs (client.download_connections 1, run.sh's config) and curl, alternating,
        then gswarm restarted with GSWARM_CLIENT_DOWNLOAD_CONNECTIONS=--segment-connections.
        Stops whichever gswarm start was running; the restarted one is stopped by main()."""
        shape = self.repos["single"]
        big = max(shape["files"], key=lambda f: f["size"])
        rate = int(self.a.segment_rate_mb * MiB)
        n = self.a.segment_connections
        repeat = self.a.segment_repeat or self.a.repeat
        one, many = "gswarm 1 connection", "gswarm %d connections" % n
        if big["size"] < STRIPE_MIN_BYTES:
            log("segments: %s is %.0f MiB, under the %d MiB from which gswarm stripes a file: "
                "%s will use one" % (big["path"], big["size"] / MiB, STRIPE_MIN_BYTES // MiB, many))
        fault = {"rate_limit_bytes_per_s": rate, "path": "%s/%s" % (shape["repo"], big["path"])}
        status, body = http_json("POST", self.a.hub_url + "/_fake/faults", fault)
        if status != 200:
            raise SystemExit("segments: the fake Hub answered %d to fault %s: %s"
                             % (status, fault, body))
        runs = {one: [], many: [], "curl": []}

        def record(arm, i):
            r = self.paced_run("curl" if arm == "curl" else "gswarm", shape, big, i)
            runs[arm].append(r)
            log("segments run %d  %-22s %6.2f s  %7.1f MB/s  %d responses of %s (%d paced)"
                % (i + 1, arm, r["s"], shape["bytes"] / r["s"] / 1e6, r["responses"],
                   big["path"], r["paced_responses"]))
        try:
            log("segments: %s paced at %.0f MiB/s per response; %d runs each of %s, curl, then %s"
                % (big["path"], rate / MiB, repeat, one, many))
            for i in range(repeat):
                for arm in ((one, "curl") if i % 2 == 0 else ("curl", one)):
                    record(arm, i)
            self.stop_gswarm("segments")
            self.restart_gswarm("segments", {CONNECTIONS_ENV: str(n)})
            self.wait_agent_online("segments")
            log("segments: gswarm start restarted with %s=%d (pid %d)"
                % (CONNECTIONS_ENV, n, self.server_pid()))
            for i in range(repeat):
                record(many, i)
        finally:
            cleared = http_json("DELETE", self.a.hub_url + "/_fake/faults")[0] == 200
        if not cleared:
            raise SystemExit("segments: the fake Hub did not clear its faults")

        cap = rate / 1e6
        gb = shape["bytes"] / 1e9
        summary = {}
        for arm, rs in runs.items():
            secs = sorted(r["s"] for r in rs)
            med = statistics.median(secs)
            summary[arm] = {
                "runs": rs, "best_s": secs[0], "median_s": med,
                "best_mb_s": shape["bytes"] / secs[0] / 1e6,
                "median_mb_s": shape["bytes"] / med / 1e6,
                "vs_cap_median": shape["bytes"] / med / 1e6 / cap,
                "responses": statistics.median(r["responses"] for r in rs),
                "paced_responses": statistics.median(r["paced_responses"] for r in rs),
                "cpu_s_per_gb": statistics.median(r["cpu"] for r in rs) / gb,
                "hub_cpu_s_per_gb": statistics.median(r["hub_cpu"] for r in rs) / gb}
        ratio = summary[many]["median_mb_s"] / summary[one]["median_mb_s"]
        r = {"repo": shape["repo"], "file": big["path"], "file_bytes": big["size"],
             "bytes": shape["bytes"], "rate_bytes_per_s": rate, "connections": n,
             "repeat": repeat, "arms": summary, "one": one, "many": many,
             "ratio_median": ratio,
             "ratio_best": summary[many]["best_mb_s"] / summary[one]["best_mb_s"],
             "goal": GOAL_SEGMENTS, "met": ratio >= GOAL_SEGMENTS}
        if summary[many]["responses"] <= 1:
            log("segments: %s got %s in one response: this gswarm did not split it into ranges "
                "(no client.download_connections?)" % (many, big["path"]))
        log("segments: %s %.1f MB/s, %s %.1f MB/s, curl %.1f MB/s: %.2fx"
            % (one, summary[one]["median_mb_s"], many, summary[many]["median_mb_s"],
               summary["curl"]["median_mb_s"], ratio))
        return r

    # ---- the whole run --------------------------------------------------------------------------

    def warm(self) -> None:
        """Untimed: every blob the hub serves is read once, so both tools start with it cached."""
        for shape in self.repos.values():
            for f in shape["files"]:
                with open(f["blob"], "rb") as fh:
                    while fh.read(8 << 20):
                        pass

    def main(self) -> dict:
        started = time.time()
        load0 = loadavg()
        self.warm()
        runs = {}
        for key in self.a.shapes:
            shape = dict(self.repos[key], key=key)
            runs[key] = {}
            for i in range(self.a.repeat):
                # Alternate who goes first, so neither always follows the other's writeback.
                order = (self.curl_run, self.gswarm_run) if i % 2 == 0 else (self.gswarm_run,
                                                                             self.curl_run)
                for fn in (self.openssl_run,) + order:
                    for tool, r in fn(shape, i).items():
                        runs[key].setdefault(tool, []).append(r)
                        log("%-6s run %d  %-22s %6.2f s  %7.1f MB/s  cpu %5.2f s  hub %5.2f s"
                            % (key, i + 1, tool, r["s"], shape["bytes"] / r["s"] / 1e6, r["cpu"],
                               r["hub_cpu"]))
        # After the shapes: it kills the `gswarm start` the runs above measure.
        resume = self.resume_run() if self.a.resume else None
        # Last: it restarts gswarm start with another client.download_connections.
        segments = self.segments_run() if self.a.segments else None
        return self.report(runs, started, load0, resume, segments)

    @staticmethod
    def limit(shape: dict, summary: dict, cores: int):
        """What gswarm's MB/s is held against, or None without gswarm and openssl runs. One LFS
        file: its SHA-256 runs on one core, so openssl on one core. Several: the files hash in
        parallel, so the slower of the transfer (bare curl) and every core hashing."""
        g, o, c = summary.get("gswarm"), summary.get(OPENSSL), summary.get("curl")
        if not (g and o and c):
            return None
        if sum(1 for f in shape["files"] if f.get("lfs")) <= 1:
            lim = {"kind": "openssl 1 core", "bound_by": OPENSSL,
                   "median_mb_s": o["median_mb_s"], "best_mb_s": o["best_mb_s"]}
        else:
            hashing = cores * o["median_mb_s"]
            lim = {"kind": "min(curl, %d x openssl 1 core)" % cores,
                   "bound_by": "curl" if c["median_mb_s"] <= hashing else
                   "%d x %s" % (cores, OPENSSL),
                   "curl_median_mb_s": c["median_mb_s"], "hashing_median_mb_s": hashing,
                   "median_mb_s": min(c["median_mb_s"], hashing),
                   "best_mb_s": min(c["best_mb_s"], cores * o["best_mb_s"])}
        g["vs_limit_median"] = g["median_mb_s"] / lim["median_mb_s"]
        g["vs_limit_best"] = g["best_mb_s"] / lim["best_mb_s"]
        lim.update(gswarm_median_mb_s=g["median_mb_s"], vs_limit_median=g["vs_limit_median"],
                   vs_limit_best=g["vs_limit_best"], goal=GOAL_VS_LIMIT,
                   met=g["vs_limit_median"] >= GOAL_VS_LIMIT)
        # Context, not the goal: receiving and writing cost CPU too, on the same cores. A verifying
        # download spends at least curl's CPU per GB plus openssl's, so the cores cannot carry more
        # than cores / (both): the ceiling the limit above leaves out.
        per_gb = c["cpu_s_per_gb"] + o["cpu_s_per_gb"]
        if per_gb > 0:
            ceiling = min(lim["median_mb_s"], cores * 1000.0 / per_gb)
            lim.update(cpu_ceiling_mb_s=ceiling, curl_cpu_s_per_gb=c["cpu_s_per_gb"],
                       openssl_cpu_s_per_gb=o["cpu_s_per_gb"],
                       vs_cpu_ceiling_median=g["median_mb_s"] / ceiling)
        return lim

    def report(self, runs: dict, started: float, load0: str, resume, segments=None) -> dict:
        cores = len(os.sched_getaffinity(0))  # nproc
        results = []
        goals = {}
        for key, tools in runs.items():
            shape = self.repos[key]
            nbytes = shape["bytes"]
            gb = nbytes / 1e9
            summary = {}
            for tool in sorted(tools, key=lambda t: TOOL_ORDER.index(t) if t in TOOL_ORDER
                               else len(TOOL_ORDER)):
                rs = tools[tool]
                secs = sorted(r["s"] for r in rs)
                med = statistics.median(secs)
                med_run = min(rs, key=lambda r: abs(r["s"] - med))
                summary[tool] = {
                    "runs": rs, "best_s": secs[0], "median_s": med,
                    "best_mb_s": nbytes / secs[0] / 1e6, "median_mb_s": nbytes / med / 1e6,
                    "cpu_s_per_gb": statistics.median(r["cpu"] for r in rs) / gb,
                    "hub_cpu_s_per_gb": statistics.median(r["hub_cpu"] for r in rs) / gb,
                    "machine_cpu_s_per_gb": statistics.median(r["machine"] for r in rs) / gb,
                    "rest_cpu_s_per_gb": statistics.median(
                        r["machine"] - r["cpu"] - r["hub_cpu"] for r in rs) / gb,
                    "median_run": med_run,
                }
                if all("top_thread_cpu" in r for r in rs):
                    summary[tool]["top_thread_busy"] = statistics.median(
                        r["top_thread_cpu"] / r["s"] for r in rs)
            base = summary["curl"]
            for s in summary.values():
                s["vs_curl_median"] = s["median_mb_s"] / base["median_mb_s"]
                s["vs_curl_best"] = s["best_mb_s"] / base["best_mb_s"]
            lim = self.limit(shape, summary, cores)
            if lim is not None:
                goals["%s_vs_limit" % key] = {k: lim[k] for k in ("kind", "bound_by", "median_mb_s",
                                                                  "vs_limit_median", "goal", "met")}
            results.append({"shape": key, "label": shape["label"], "repo": shape["repo"],
                            "files": len(shape["files"]), "bytes": nbytes, "tools": summary,
                            "limit": lim})
        if resume is not None:
            goals["resume_reread"] = {"reread_bytes": resume["reread_bytes"],
                                      "goal": resume["goal_reread_bytes"], "met": resume["met"]}
        if segments is not None:
            goals["segments_vs_one_connection"] = {
                "connections": segments["connections"],
                "rate_bytes_per_s": segments["rate_bytes_per_s"],
                "one_connection_median_mb_s": segments["arms"][segments["one"]]["median_mb_s"],
                "segments_median_mb_s": segments["arms"][segments["many"]]["median_mb_s"],
                "curl_median_mb_s": segments["arms"]["curl"]["median_mb_s"],
                "ratio_median": segments["ratio_median"], "goal": segments["goal"],
                "met": segments["met"]}
        # Windows counted once: curl+openssl+fsync holds curl's window (and sha256sum's is left
        # out), openssl 1 core and gswarm their own.
        every = [r for tools in runs.values() for t in ("curl+openssl+fsync", OPENSSL, "gswarm")
                 for r in tools.get(t, [])]
        rest = sum(r["machine"] - r["cpu"] - r["hub_cpu"] for r in every)
        rest_cores = max(0.0, rest / sum(r["s"] for r in every)) if every else 0.0
        return {
            "benchmark": "download",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "repeat": self.a.repeat,
            "machine": {"cores": os.cpu_count(), "usable_cores": cores, "cpu": cpu_model(),
                        "kernel": platform.release(), "loadavg_before": load0,
                        "loadavg_after": loadavg(), "rest_cores_busy": rest_cores},
            "versions": {"curl": first_line(["curl", "--version"]),
                         "openssl": first_line(["openssl", "version"]),
                         "gswarm": first_line([self.a.gswarm, "version"]),
                         "gswarm_binary": self.a.gswarm,
                         "gswarm_built_utc": time.strftime(
                             "%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(self.a.gswarm))),
                         "build_type": self.a.build_type, "source": git_state()},
            "shapes": {k: {"repo": v["repo"], "label": v["label"], "files": len(v["files"]),
                           "bytes": v["bytes"]} for k, v in self.repos.items()},
            "notes": ["MB = 10^6 bytes, GB = 10^9 bytes, MiB = 2^20 bytes",
                      "gswarm CPU = `gswarm start` (host + agent) + CLI",
                      "gswarm verifies sha256 of every LFS file while writing and fsyncs each file",
                      "sha256sum is coreutils' own SHA-256; openssl dgst uses OpenSSL's (SHA-NI "
                      "where the CPU has it), as gswarm does",
                      "openssl 1 core: openssl dgst -sha256 of the Hub's cached blobs (the same "
                      "bytes), one process, timed alone",
                      "vs limit: gswarm's median MB/s over openssl 1 core's (one LFS file) or over "
                      "min(curl, usable cores x openssl 1 core) (several); goal >= %.2f"
                      % GOAL_VS_LIMIT,
                      "resume: bytes the agent re-read to restore the hash state after kill -9, "
                      "from its log; goal <= one checkpoint interval (%d bytes)" % CHECKPOINT_BYTES,
                      "segments: the Hub paces every response of the big file (each Range "
                      "request too) at the given rate, a per-connection cap; gswarm with "
                      "client.download_connections 1 and N, curl as the reference; goal: N over "
                      "1 connection >= %.1f (median MB/s)" % GOAL_SEGMENTS,
                      "gswarm fetches up to 4 files at once; curl fetches them one after another "
                      "over one connection"],
            "goals": goals,
            "results": results,
            "resume": resume,
            "segments": segments,
        }


TOOL_ORDER = ["curl", "curl+sha256sum", "curl+openssl", "curl+openssl+fsync", OPENSSL, "gswarm"]


def mib(n) -> str:
    return "n/a" if n is None else "%.1f MiB" % (n / MiB)


def columns(cols: list, rows: list, left: int) -> list:
    """Lines of an aligned table: the first `left` columns left-aligned, the rest right."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(  # noqa: E731
        v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
    return [fmt(cols)] + [fmt(row) for row in rows]


def table(report: dict) -> str:
    cols = ["shape", "tool", "best s", "median s", "best MB/s", "median MB/s", "vs curl",
            "vs limit", "CPU s/GB", "top thread %", "hub CPU s/GB", "rest CPU s/GB"]
    rows = []
    limits = []
    for r in report["results"]:
        for tool, s in r["tools"].items():
            rows.append([r["label"], tool, "%.2f" % s["best_s"], "%.2f" % s["median_s"],
                         "%.0f" % s["best_mb_s"], "%.0f" % s["median_mb_s"],
                         "%.2f" % s["vs_curl_median"],
                         "%.2f" % s["vs_limit_median"] if "vs_limit_median" in s else "-",
                         "%.2f" % s["cpu_s_per_gb"],
                         "%.0f" % (100 * s["top_thread_busy"]) if "top_thread_busy" in s else "-",
                         "%.2f" % s["hub_cpu_s_per_gb"],
                         "%.2f" % max(0.0, s["rest_cpu_s_per_gb"])])
        lim = r["limit"]
        if lim is None:
            continue
        if lim["kind"] == "openssl 1 core":
            what = "openssl 1 core's %.0f MB/s (one LFS file: its SHA-256 runs on one core)" % (
                lim["median_mb_s"])
        else:
            what = "%s = min(%.0f, %.0f) = %.0f MB/s, bound by %s" % (
                lim["kind"], lim["curl_median_mb_s"], lim["hashing_median_mb_s"],
                lim["median_mb_s"], lim["bound_by"])
        limits.append("  %s: gswarm %.0f MB/s over %s -> %.2f (%s)" % (
            r["label"], lim["gswarm_median_mb_s"], what, lim["vs_limit_median"],
            "met" if lim["met"] else "NOT met"))
        if "cpu_ceiling_mb_s" in lim:
            limits.append("    CPU ceiling: that, or %d cores / (curl %.2f + openssl %.2f CPU s/GB),"
                          " whichever is lower = %.0f MB/s -> gswarm at %.2f of it" % (
                              report["machine"]["usable_cores"], lim["curl_cpu_s_per_gb"],
                              lim["openssl_cpu_s_per_gb"], lim["cpu_ceiling_mb_s"],
                              lim["vs_cpu_ceiling_median"]))
    m = report["machine"]
    v = report["versions"]
    head = ["download benchmark, %s, %d runs each, %d cores (%s), load %s -> %s"
            % (report["started_utc"], report["repeat"], m["cores"], m["cpu"],
               m["loadavg_before"], m["loadavg_after"]),
            "%s (%s, built %s; checkout %s); %s; %s"
            % (v["gswarm"], v["build_type"] or "?", v["gswarm_built_utc"], v["source"], v["curl"],
               v["openssl"]),
            "the rest of the machine kept %.2f of %d cores busy during the runs (other work, "
            "kernel writeback and loopback softirq)" % (m["rest_cores_busy"], m["cores"])]
    text = "\n".join(head + columns(cols, rows, 2)) + "\n" + (
        "vs curl: median MB/s over curl's median MB/s. CPU: the tool's own (gswarm: server + CLI)."
        " top thread: the tool's busiest thread's CPU over the wall time (100: one thread is the"
        " limit). hub: the fake Hub's CPU; rest: everything else the machine did in the runs'"
        " windows. openssl 1 core: `openssl dgst -sha256` of the same bytes (page cache warm),"
        " one process, timed alone.\n")
    if limits:
        text += ("vs limit (gswarm; goal >= %.2f): median MB/s over what verifying the shape can "
                 "reach on %d cores:\n%s\n" % (GOAL_VS_LIMIT, m["usable_cores"], "\n".join(limits)))
    res = report.get("resume")
    if res is not None:
        goal = "n/a (no log line)" if res["met"] is None else (
            "met" if res["met"] else "NOT met")
        text += "\n" + "\n".join(
            ["resume after kill -9 of gswarm start: %s of %s, paced at %.0f MiB/s until %s were "
             "staged, then gswarm started again and the job resumed unpaced%s"
             % (res["file"], mib(res["file_bytes"]), res["rate_bytes_per_s"] / MiB,
                mib(res["kill_after_bytes"]),
                "" if not res["reissued"] else " (the job was %s after the restart, so it was "
                "downloaded again from the CLI)" % res["job_state_after_restart"])]
            + columns(["partial at kill", "checkpoint file", "resumed at", "re-read on resume",
                       "goal <= 64 MiB", "restart s", "resume s", "total s"],
                      [[mib(res["partial_bytes"]),
                        "-" if res["checkpoint_file_bytes"] is None else
                        "%d B" % res["checkpoint_file_bytes"],
                        mib(res["resumed_at_bytes"]), mib(res["reread_bytes"]), goal,
                        "%.2f" % res["restart_s"], "%.2f" % res["resume_s"],
                        "%.2f" % res["total_s"]]], 0)) + "\n" + (
            "re-read: bytes of the .part the agent read again to restore its SHA-256 state (from "
            "its log line \"resuming at byte N (re-read M bytes ...)\"). restart: kill to /health "
            "answering; resume: kill to the file in place; total: from the download's start.\n")
    seg = report.get("segments")
    if seg is not None:
        rows = []
        for arm, s in seg["arms"].items():
            rows.append([arm, "%.2f" % s["best_s"], "%.2f" % s["median_s"],
                         "%.1f" % s["best_mb_s"], "%.1f" % s["median_mb_s"],
                         "%.2f" % s["vs_cap_median"], "%g" % s["responses"],
                         "%g" % s["paced_responses"], "%.2f" % s["cpu_s_per_gb"],
                         "%.2f" % s["hub_cpu_s_per_gb"]])
        text += "\n" + "\n".join(
            ["segments: %s (%s, %s), the Hub pacing every response of %s at %.0f MiB/s "
             "(%.1f MB/s: a per-connection cap), %d runs each"
             % (seg["repo"], seg["file"], mib(seg["file_bytes"]), seg["file"],
                seg["rate_bytes_per_s"] / MiB, seg["rate_bytes_per_s"] / 1e6, seg["repeat"])]
            + columns(["tool", "best s", "median s", "best MB/s", "median MB/s", "vs cap",
                       "responses", "paced", "CPU s/GB", "hub CPU s/GB"], rows, 1)) + "\n" + (
            "%s over %s: %.2fx median (best %.2fx); goal >= %.1f: %s\n"
            % (seg["many"], seg["one"], seg["ratio_median"], seg["ratio_best"], seg["goal"],
               "met" if seg["met"] else "NOT met")) + (
            "" if seg["arms"][seg["many"]]["responses"] > 1 else
            "(%s got the file in one response: this gswarm did not split it into ranges)\n"
            % seg["many"]) + (
            "MB/s: bytes of all the repo's files / seconds. vs cap: median MB/s over the "
            "per-connection cap. responses: the big file's GET responses with a body (200/206; "
            "one per Range request), paced: those the Hub paced (median).\n")
    return text


def main() -> int:
    p = argparse.ArgumentParser(description="measuring half of bench/download/run.sh")
    p.add_argument("--repos", required=True, help="make_repo.py --out file")
    p.add_argument("--hub-url", required=True)
    p.add_argument("--hub-pid", type=int, required=True)
    p.add_argument("--gswarm", required=True, help="the gswarm binary (CLI)")
    p.add_argument("--grpc", required=True, help="gswarm start's gRPC address")
    p.add_argument("--http-url", default="", help="gswarm start's REST base URL (resume)")
    p.add_argument("--gswarm-pid", type=int, required=True)
    p.add_argument("--model-dir", required=True, help="gswarm's model_cache_dir")
    p.add_argument("--work", required=True, help="scratch directory (curl's output, logs)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--shapes", default="single,multi")
    p.add_argument("--build-type", default="", help="CMAKE_BUILD_TYPE, for the report")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="skip the resume step (kill -9 of gswarm start mid-download)")
    p.add_argument("--resume-at-mb", type=int, default=200,
                   help="resume: kill once the .part holds this many MiB (default 200)")
    p.add_argument("--resume-rate-mb", type=float, default=64,
                   help="resume: the Hub paces the file at this many MiB/s until the kill "
                        "(default 64)")
    p.add_argument("--restart-argv", default="",
                   help="resume: file with gswarm start's command line, NUL-terminated arguments")
    p.add_argument("--restart-pid-file", default="",
                   help="resume: where the restarted gswarm start's pid is written")
    p.add_argument("--gswarm-log", default="", help="resume: gswarm start's log file")
    p.add_argument("--no-segments", dest="segments", action="store_false",
                   help="skip the segments step (the big file under a per-connection cap, one "
                        "connection against --segment-connections)")
    p.add_argument("--segment-rate-mb", type=float, default=24,
                   help="segments: the Hub paces each response of the big file at this many "
                        "MiB/s (default 24)")
    p.add_argument("--segment-connections", type=int, default=4,
                   help="segments: client.download_connections of the second gswarm (default 4)")
    p.add_argument("--segment-repeat", type=int, default=0,
                   help="segments: runs per tool (default: --repeat)")
    args = p.parse_args()
    args.shapes = [s for s in args.shapes.split(",") if s]
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.resume:
        if not (args.http_url and args.restart_argv and args.gswarm_log):
            p.error("the resume step needs --http-url, --restart-argv and --gswarm-log "
                    "(or pass --no-resume)")
        if args.resume_at_mb < 1 or args.resume_rate_mb <= 0:
            p.error("--resume-at-mb and --resume-rate-mb must be positive")
    if args.segments:
        if not (args.http_url and args.restart_argv and args.gswarm_log):
            p.error("the segments step needs --http-url, --restart-argv and --gswarm-log "
                    "(or pass --no-segments)")
        if args.segment_rate_mb <= 0 or args.segment_connections < 2 or args.segment_repeat < 0:
            p.error("--segment-rate-mb must be positive, --segment-connections at least 2")
    # A TERM (run.sh's cleanup, timeout) unwinds, so that a restarted gswarm is stopped.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    bench = Bench(args)
    try:
        report = bench.main()
    finally:
        bench.stop_restarted()
    return benchlib.emit(report, table(report), args.json, indent=1)


if __name__ == "__main__":
    sys.exit(main())
