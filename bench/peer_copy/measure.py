#!/usr/bin/python3
"""The generating and measuring halves of bench/peer_copy/run.sh (which starts node A as
`gswarm start` and node B as `gswarm client`, each in its own HOME, and imports the model on A).

  measure.py model --dir DIR --shards 4 --shard-mb 256
      writes a safetensors model: SHARDS shards of SHARD_MB MiB of random bytes (each a valid
      safetensors file: 8-byte header length, JSON header, data), an index and a config.json.
  measure.py measure --gswarm BIN --grpc A --http URL --data-url URL --name N --a-pid P ...
      copies the model from A to B by GSwarm (POST /copy, wait) and fetches the same files from
      A's data port with curl, REPEAT times each per mode (warm, cold), interleaved, and prints
      a table (or JSON with --json; the table then goes to stderr).
  measure.py hub-repos --root DIR --big-file-mb 1024 --out repos.json
  measure.py multi --gswarm BIN --grpc A --http URL --repos repos.json --node ID PID DIR URL ...
      run.sh --multi: a download striped over three peers against one from a single peer and
      against curl, on a fourth node (bench/peer_copy/multi.py says how).

Per run it records wall seconds and CPU seconds (user + sys): curl's, sha256sum's and sync's
from wait4(); each gswarm process's utime + stime delta from /proc/PID/stat (A: `gswarm start`,
host and source agent, which serves the files; B: the target agent, which downloads, hashes,
writes and fsyncs); the busiest thread of each (sampled from /proc/PID/task); and the whole
machine's busy time from /proc/stat.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402  (bench/benchlib.py)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import multi  # noqa: E402  (bench/peer_copy/multi.py)
from benchlib import (aligned, cpu_model, first_line, git_state, loadavg, log,  # noqa: E402
                      machine_busy, proc_user_sys, run, tail, versions_line)

benchlib.set_name("peer_copy")
TICK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 300  # one transfer, any tool
DROP_CACHES = "/proc/sys/vm/drop_caches"


# ---- the model ----------------------------------------------------------------------------------

def write_model(d: str, shards: int, shard_mb: int) -> int:
    """A sharded safetensors model of random F16 weights; returns its bytes."""
    os.makedirs(d, exist_ok=True)
    weight_map = {}
    total = 0
    for i in range(1, shards + 1):
        fname = "model-%05d-of-%05d.safetensors" % (i, shards)
        tensor = "model.layers.%d.weight" % (i - 1)
        nbytes = shard_mb << 20
        header = {"__metadata__": {"format": "pt"},
                  tensor: {"dtype": "F16", "shape": [nbytes // 2], "data_offsets": [0, nbytes]}}
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)  # the data starts 8-byte aligned
        with open(os.path.join(d, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            left = nbytes
            while left:
                n = min(left, 16 << 20)
                f.write(os.urandom(n))
                left -= n
        weight_map[tensor] = fname
        total += 8 + len(h) + nbytes
    index = {"metadata": {"total_size": shards * (shard_mb << 20)}, "weight_map": weight_map}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "num_hidden_layers": shards, "torch_dtype": "float16"}
    for fname, doc in (("model.safetensors.index.json", index), ("config.json", config)):
        with open(os.path.join(d, fname), "w") as f:
            json.dump(doc, f, indent=2)
        total += os.path.getsize(os.path.join(d, fname))
    return total


# ---- probes -------------------------------------------------------------------------------------

class ThreadSampler:
    """Polls the CPU time of every thread of some processes while a run lasts, so that each one's
    busiest thread can be told even when the thread exits before the run ends (download workers
    do). Reads lose at most one interval of a thread's last CPU."""

    INTERVAL_S = 0.02

    def __init__(self, pids: dict):
        self.pids = pids
        self.names = {}
        self.base = {k: self._read(p) for k, p in pids.items()}
        self.last = {k: dict(v) for k, v in self.base.items()}
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _read(self, pid: int) -> dict:
        out = {}
        task = "/proc/%d/task" % pid
        for tid in os.listdir(task):
            try:
                with open("%s/%s/stat" % (task, tid)) as f:
                    text = f.read()
                comm = text[text.index("(") + 1:text.rindex(")")]
                fields = text.rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
                self.names[int(tid)] = comm
            except (OSError, IndexError, ValueError):
                pass  # exited meanwhile
        return out

    def _loop(self) -> None:
        while not self.stop_.wait(self.INTERVAL_S):
            for k, p in self.pids.items():
                self.last[k].update(self._read(p))

    def stop(self) -> dict:
        """{key: (CPU seconds of the busiest thread since the start, its name)}."""
        self.stop_.set()
        self.thread.join()
        out = {}
        for k, p in self.pids.items():
            self.last[k].update(self._read(p))
            deltas = [(v - self.base[k].get(t, 0.0), t) for t, v in self.last[k].items()]
            cpu, tid = max(deltas, default=(0.0, 0))
            out[k] = (cpu, self.names.get(tid, "?"))
        return out


class LandingWatch:
    """Polls the bytes under a directory tree (the target's model cache: staging and final) while
    a copy runs: when the first byte landed and when all of them had (written, not yet fsynced),
    in seconds from the start. Splits a copy into dispatch, transfer, and fsync plus finishing."""

    INTERVAL_S = 0.01

    def __init__(self, root: str, total: int):
        self.root, self.total = root, total
        self.t0 = time.monotonic()
        self.first = self.all = None
        self.stop_ = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _bytes(self) -> int:
        n = 0
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                try:
                    n += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        return n

    def _loop(self) -> None:
        while not self.stop_.wait(self.INTERVAL_S):
            n = self._bytes()
            now = time.monotonic() - self.t0
            if n > 0 and self.first is None:
                self.first = now
            if n >= self.total and self.all is None:
                self.all = now
                return

    def stop(self) -> tuple:
        self.stop_.set()
        self.thread.join()
        return self.first, self.all


class Probe:
    """CPU of node A's and node B's gswarm processes and of the machine over a window."""

    def __init__(self, a_pid: int, b_pid: int):
        self.pids = {"a": a_pid, "b": b_pid}

    def snap(self) -> dict:
        s = {}
        for k, p in self.pids.items():
            s[k + "_user"], s[k + "_sys"] = proc_user_sys(p)
            s[k] = s[k + "_user"] + s[k + "_sys"]
        s["machine"] = machine_busy()
        s["t"] = time.monotonic()
        return s

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        return {k: b[k] - a[k] for k in a}


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body=None, timeout: float = 10.0):
    """(status, parsed JSON or None, text) for any HTTP status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Accept": "application/json",
                                          "Content-Type": "application/json"})
    try:
        with _opener.open(req, timeout=timeout) as r:
            status, text = r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    try:
        return status, json.loads(text), text
    except ValueError:
        return status, None, text


def can_drop_caches() -> bool:
    try:
        with open(DROP_CACHES, "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


class Bench:
    def __init__(self, args):
        self.a = args
        self.probe = Probe(args.a_pid, args.b_pid)
        os.makedirs(args.work, exist_ok=True)
        self.logf = os.path.join(args.work, "commands.log")
        status, doc, text = http(
            "GET", "%s/api/models/gswarm/%s/revision/main?blobs=true" % (args.data_url, args.name))
        if status != 200 or not isinstance(doc, dict):
            raise SystemExit("node A's data port listing answered %d: %s" % (status, text[:300]))
        self.files = []
        for s in doc.get("siblings", []):
            path = s["rfilename"]
            sha = (s.get("lfs") or {}).get("sha256")
            if not sha:  # a small file without an LFS entry: its sha256 from A's copy
                sha = subprocess.run(["sha256sum", "--", os.path.join(args.a_dir, path)],
                                     capture_output=True, text=True, check=True).stdout.split()[0]
            self.files.append({"path": path, "size": int(s["size"]), "sha256": sha})
        self.bytes = sum(f["size"] for f in self.files)
        if not self.files or self.bytes == 0:
            raise SystemExit("node A's data port lists no files for %s: %s" % (args.name, text))

    # ---- cache state ----------------------------------------------------------------------------

    def settle(self, mode: str) -> None:
        """Untimed: write back what earlier runs left dirty, then drop the page cache (cold) or
        read A's files into it (warm)."""
        subprocess.run(["sync"], check=True, timeout=120)
        if mode == "cold":
            with open(DROP_CACHES, "w") as f:
                f.write("3")
        else:
            for f in self.files:
                with open(os.path.join(self.a.a_dir, f["path"]), "rb") as fh:
                    while fh.read(8 << 20):
                        pass

    # ---- curl -----------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return "%s/gswarm/%s/resolve/main/%s" % (self.a.data_url, self.a.name, path)

    def curl_run(self, mode: str, i: int) -> dict:
        out = os.path.join(self.a.work, "curl-out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        argv = ["curl", "-sSf", "--noproxy", "*", "--create-dirs", "--max-time",
                str(RUN_TIMEOUT_S)]
        paths = []
        for f in self.files:
            argv += [self.url(f["path"]), "-o", os.path.join(out, f["path"])]
            paths.append(os.path.join(out, f["path"]))
        self.settle(mode)
        sampler = ThreadSampler({"a": self.a.a_pid})
        p0 = self.probe.snap()
        rc, wall, cpu = run(argv, self.logf)
        p1 = self.probe.snap()
        top = sampler.stop()
        if rc != 0:
            raise SystemExit("curl failed (exit %d):\n%s" % (rc, tail(self.logf)))
        sha_out = os.path.join(self.a.work, "sha")
        rc, sha_wall, sha_cpu = run(["sha256sum", "--"] + paths, sha_out)
        p2 = self.probe.snap()
        if rc != 0:
            raise SystemExit("sha256sum failed (exit %d)" % rc)
        sums = {}
        with open(sha_out) as f:
            for line in f:
                digest, name = line.rstrip("\n").split("  ", 1)
                sums[name] = digest
        os.unlink(sha_out)
        for f, p in zip(self.files, paths):
            if sums.get(p) != f["sha256"]:
                raise SystemExit("curl run %d: %s has sha256 %s, expected %s"
                                 % (i, f["path"], sums.get(p), f["sha256"]))
        rc, sync_wall, sync_cpu = run(["sync", "--"] + paths, self.logf)  # fsync(2) each file
        p3 = self.probe.snap()
        if rc != 0:
            raise SystemExit("sync failed (exit %d)" % rc)
        shutil.rmtree(out, ignore_errors=True)
        d1, d2, d3 = Probe.delta(p0, p1), Probe.delta(p1, p2), Probe.delta(p2, p3)
        curl = {"s": wall, "cpu": cpu, "a_cpu": d1["a"], "b_cpu": 0.0, "machine": d1["machine"],
                "a_user": d1["a_user"], "a_sys": d1["a_sys"],
                "top_b": cpu, "top_b_name": "curl", "top_a": top["a"][0],
                "top_a_name": top["a"][1]}
        verify = dict(curl, s=wall + sha_wall, cpu=cpu + sha_cpu, a_cpu=d1["a"] + d2["a"],
                      machine=d1["machine"] + d2["machine"], sha256sum_s=sha_wall,
                      sha256sum_cpu=sha_cpu)
        fsync = dict(verify, s=verify["s"] + sync_wall, cpu=verify["cpu"] + sync_cpu,
                     a_cpu=verify["a_cpu"] + d3["a"],
                     machine=verify["machine"] + d3["machine"], sync_s=sync_wall,
                     sync_cpu=sync_cpu)
        for r in (verify, fsync):
            del r["top_b"], r["top_b_name"], r["top_a"], r["top_a_name"]
        out = {"curl": curl, "curl+sha256sum": verify, "curl+sha256sum+fsync": fsync}
        if self.a.parallel > 1:
            out["curl -Z (%d at once)" % self.a.parallel] = self.curl_parallel_run(mode, i)
        return out

    def curl_parallel_run(self, mode: str, i: int) -> dict:
        """A reference: the same files, PARALLEL at once (as many as gswarm's downloader fetches
        at once), no verification: what loopback and the disk give to parallel streams."""
        out = os.path.join(self.a.work, "curl-out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        argv = ["curl", "-sSf", "--noproxy", "*", "--create-dirs", "--max-time",
                str(RUN_TIMEOUT_S), "--parallel", "--parallel-max", str(self.a.parallel)]
        for f in self.files:
            argv += [self.url(f["path"]), "-o", os.path.join(out, f["path"])]
        self.settle(mode)
        sampler = ThreadSampler({"a": self.a.a_pid})
        p0 = self.probe.snap()
        rc, wall, cpu = run(argv, self.logf)
        p1 = self.probe.snap()
        top = sampler.stop()
        if rc != 0:
            raise SystemExit("curl --parallel failed (exit %d):\n%s" % (rc, tail(self.logf)))
        for f in self.files:
            p = os.path.join(out, f["path"])
            if os.path.getsize(p) != f["size"]:
                raise SystemExit("curl --parallel run %d: %s has the wrong size" % (i, p))
        shutil.rmtree(out, ignore_errors=True)
        d = Probe.delta(p0, p1)
        return {"s": wall, "cpu": cpu, "a_cpu": d["a"], "b_cpu": 0.0, "machine": d["machine"],
                "a_user": d["a_user"], "a_sys": d["a_sys"],
                "top_b": cpu, "top_b_name": "curl", "top_a": top["a"][0],
                "top_a_name": top["a"][1]}

    # ---- gswarm ---------------------------------------------------------------------------------

    def replica_nodes(self) -> set:
        status, doc, text = http("GET", "%s/models/%s" % (self.a.http, self.a.name))
        if status != 200 or not isinstance(doc, dict):
            raise SystemExit("GET /models/%s answered %d: %s" % (self.a.name, status, text[:300]))
        model = doc.get("model", doc)
        return {r.get("node_id") for r in model.get("replicas", []) if r.get("tier") == "disk"}

    def remove_b(self) -> None:
        """Untimed: `gswarm rm NAME --node node-b`, then until B's directory and replica are gone
        (A's stay)."""
        argv = [self.a.gswarm, "--host", self.a.grpc, "rm", self.a.name, "--node", "node-b"]
        rc, _, _ = run(argv, self.logf, 60)
        if rc != 0:
            raise SystemExit("gswarm rm --node node-b failed (exit %d):\n%s" % (rc, tail(self.logf)))
        deadline = time.monotonic() + 30
        while os.path.exists(self.a.b_dir) or "node-b" in self.replica_nodes():
            if time.monotonic() > deadline:
                raise SystemExit("%s (or its replica) still there 30 s after gswarm rm"
                                 % self.a.b_dir)
            time.sleep(0.05)
        if not os.path.isdir(self.a.a_dir) or "node-a" not in self.replica_nodes():
            raise SystemExit("gswarm rm --node node-b removed node A's copy too")

    def gswarm_run(self, mode: str, i: int) -> dict:
        body = {"model_name": self.a.name, "source_node": "node-a", "target_node": "node-b",
                "source_device": "disk", "target_device": "disk", "wait": True}
        self.settle(mode)
        sampler = ThreadSampler({"a": self.a.a_pid, "b": self.a.b_pid})
        p0 = self.probe.snap()
        watch = LandingWatch(os.path.dirname(self.a.b_dir), self.bytes)
        status, doc, text = http("POST", self.a.http + "/copy", body, timeout=RUN_TIMEOUT_S)
        p1 = self.probe.snap()
        first_byte, all_bytes = watch.stop()
        top = sampler.stop()
        job = (doc or {}).get("job") if isinstance(doc, dict) else None
        if status != 200 or not job or job.get("state") != "succeeded":
            raise SystemExit("POST /copy answered %d: %s" % (status, text[:500]))
        for f in self.files:
            p = os.path.join(self.a.b_dir, f["path"])
            if not os.path.isfile(p) or os.path.getsize(p) != f["size"]:
                raise SystemExit("gswarm run %d: %s missing or of the wrong size" % (i, p))
        if i == 0 and mode == self.a.modes[0]:  # once: the copy's bytes are A's (untimed)
            digests = subprocess.run(
                ["sha256sum", "--"] + [os.path.join(self.a.b_dir, f["path"]) for f in self.files],
                capture_output=True, text=True, check=True).stdout.split("\n")
            for f, line in zip(self.files, digests):
                if line.split("  ", 1)[0] != f["sha256"]:
                    raise SystemExit("gswarm copy: %s differs from node A's" % f["path"])
        self.remove_b()
        d = Probe.delta(p0, p1)
        return {"gswarm": {"s": p1["t"] - p0["t"], "cpu": d["a"] + d["b"], "a_cpu": d["a"],
                           "b_cpu": d["b"], "a_user": d["a_user"], "a_sys": d["a_sys"],
                           "b_user": d["b_user"], "b_sys": d["b_sys"], "machine": d["machine"], "top_b": top["b"][0],
                           "top_b_name": top["b"][1], "top_a": top["a"][0],
                           "top_a_name": top["a"][1], "first_byte_s": first_byte,
                           "all_bytes_s": all_bytes}}

    # ---- the whole run --------------------------------------------------------------------------

    def main(self) -> dict:
        started = time.time()
        load0 = loadavg()
        runs = {}
        for mode in self.a.modes:
            runs[mode] = {}
            for i in range(self.a.repeat):
                # Alternate who goes first, so neither always follows the other's writeback.
                order = (self.curl_run, self.gswarm_run) if i % 2 == 0 else (self.gswarm_run,
                                                                             self.curl_run)
                for fn in order:
                    for tool, r in fn(mode, i).items():
                        runs[mode].setdefault(tool, []).append(r)
                        log("%-4s run %d  %-22s %6.2f s  %7.1f MB/s  cpu %5.2f s  A %5.2f s"
                            % (mode, i + 1, tool, r["s"], self.bytes / r["s"] / 1e6, r["cpu"],
                               r["a_cpu"]))
        return self.report(runs, started, load0)

    def report(self, runs: dict, started: float, load0: str) -> dict:
        gb = self.bytes / 1e9
        results = []
        for mode, tools in runs.items():
            summary = {}
            for tool, rs in tools.items():
                secs = sorted(r["s"] for r in rs)
                med = statistics.median(secs)
                s = {
                    "runs": rs, "best_s": secs[0], "median_s": med,
                    "best_mb_s": self.bytes / secs[0] / 1e6, "median_mb_s": self.bytes / med / 1e6,
                    "cpu_s_per_gb": statistics.median(r["cpu"] for r in rs) / gb,
                    "a_cpu_s_per_gb": statistics.median(r["a_cpu"] for r in rs) / gb,
                    "b_cpu_s_per_gb": statistics.median(r["b_cpu"] for r in rs) / gb,
                    "rest_cpu_s_per_gb": statistics.median(
                        r["machine"] - r["cpu"] - (r["a_cpu"] if tool != "gswarm" else 0)
                        for r in rs) / gb,
                }
                if all("top_b" in r for r in rs):
                    s["top_b_busy"] = statistics.median(r["top_b"] / r["s"] for r in rs)
                    s["top_a_busy"] = statistics.median(r["top_a"] / r["s"] for r in rs)
                    s["top_b_name"] = rs[0]["top_b_name"]
                    s["top_a_name"] = rs[0]["top_a_name"]
                if all(r.get("all_bytes_s") is not None for r in rs):
                    s["first_byte_s"] = statistics.median(r["first_byte_s"] for r in rs)
                    s["all_bytes_s"] = statistics.median(r["all_bytes_s"] for r in rs)
                    s["after_bytes_s"] = statistics.median(r["s"] - r["all_bytes_s"] for r in rs)
                summary[tool] = s
            base = summary["curl"]
            for s in summary.values():
                s["vs_curl_median"] = s["median_mb_s"] / base["median_mb_s"]
                s["vs_curl_best"] = s["best_mb_s"] / base["best_mb_s"]
            results.append({"mode": mode, "tools": summary})
        return {
            "benchmark": "peer_copy",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "repeat": self.a.repeat,
            "model": {"name": self.a.name, "files": len(self.files), "bytes": self.bytes},
            "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                        "loadavg_before": load0, "loadavg_after": loadavg()},
            "versions": {"curl": first_line(["curl", "--version"]),
                         "gswarm": first_line([self.a.gswarm, "version"]),
                         "gswarm_binary": self.a.gswarm,
                         "gswarm_built_utc": time.strftime(
                             "%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(self.a.gswarm))),
                         "build_type": self.a.build_type, "source": git_state()},
            "notes": ["MB = 10^6 bytes, GB = 10^9 bytes",
                      "gswarm: POST /copy with wait, end to end; CPU = node A (gswarm start: host "
                      "and the serving agent) + node B (the target agent)",
                      "curl CPU = curl (+ sha256sum, + sync); A CPU = node A serving it",
                      "gswarm checks each file against the xxh3_128 A's manifest records while "
                      "writing and fsyncs each file; curl fetches the files one after another "
                      "over one connection"],
            "results": results,
        }


def table(report: dict) -> str:
    cols = ["cache", "tool", "best s", "median s", "best MB/s", "median MB/s", "vs curl",
            "CPU s/GB", "A CPU s/GB", "B CPU s/GB", "top thread B %", "top thread A %",
            "rest CPU s/GB"]
    rows = []
    for r in report["results"]:
        for tool, s in r["tools"].items():
            rows.append([r["mode"], tool, "%.2f" % s["best_s"], "%.2f" % s["median_s"],
                         "%.0f" % s["best_mb_s"], "%.0f" % s["median_mb_s"],
                         "%.2f" % s["vs_curl_median"], "%.2f" % s["cpu_s_per_gb"],
                         "%.2f" % s["a_cpu_s_per_gb"],
                         "%.2f" % s["b_cpu_s_per_gb"] if tool == "gswarm" else "-",
                         "%.0f" % (100 * s["top_b_busy"]) if "top_b_busy" in s else "-",
                         "%.0f" % (100 * s["top_a_busy"]) if "top_a_busy" in s else "-",
                         "%.2f" % s["rest_cpu_s_per_gb"]])
    m = report["machine"]
    v = report["versions"]
    head = ["peer_copy benchmark, %s, %d runs each, model %d files %.2f GB, %d cores (%s), "
            "load %s -> %s" % (report["started_utc"], report["repeat"], report["model"]["files"],
                               report["model"]["bytes"] / 1e9, m["cores"], m["cpu"],
                               m["loadavg_before"], m["loadavg_after"]),
            versions_line(v)] + aligned(cols, rows)
    split = []
    for r in report["results"]:
        g = r["tools"].get("gswarm", {})
        if "all_bytes_s" in g:
            split.append("gswarm %s, medians: first byte on B at %.2f s, all bytes on B (written, "
                         "not yet fsynced) at %.2f s, then %.2f s to the answer (fsync, rename, "
                         "manifest, report)" % (r["mode"], g["first_byte_s"], g["all_bytes_s"],
                                                g["after_bytes_s"]))
    return "\n".join(head + split) + "\n" + (
        "vs curl: median MB/s over curl's median MB/s. CPU: the tool's own (curl rows: curl, "
        "sha256sum, sync; gswarm: node A + node B). A: node A's gswarm process (serving). "
        "top thread: the busiest thread's CPU over the wall time (100: one thread is the limit). "
        "rest: everything else the machine did in the runs' windows (kernel writeback, softirq, "
        "other work).\n")


def main() -> int:
    p = argparse.ArgumentParser(description="bench/peer_copy/run.sh's helper")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model", help="write a generated safetensors model")
    m.add_argument("--dir", required=True)
    m.add_argument("--shards", type=int, default=4)
    m.add_argument("--shard-mb", type=int, default=256)
    q = sub.add_parser("measure", help="curl against gswarm's cross-node copy")
    q.add_argument("--gswarm", required=True, help="the gswarm binary (CLI)")
    q.add_argument("--grpc", required=True, help="the host's gRPC address")
    q.add_argument("--http", required=True, help="the host's REST URL")
    q.add_argument("--data-url", required=True, help="node A's data port URL")
    q.add_argument("--name", required=True)
    q.add_argument("--a-pid", type=int, required=True, help="node A's gswarm start")
    q.add_argument("--b-pid", type=int, required=True, help="node B's gswarm client")
    q.add_argument("--a-dir", required=True, help="the model's directory on node A")
    q.add_argument("--b-dir", required=True, help="where the copy lands on node B")
    q.add_argument("--work", required=True, help="scratch directory (curl's output, logs)")
    q.add_argument("--repeat", type=int, default=3)
    q.add_argument("--modes", default="warm,cold",
                   help="warm, cold (cold needs a writable %s; skipped otherwise)" % DROP_CACHES)
    q.add_argument("--parallel", type=int, default=4,
                   help="a reference row: curl --parallel-max N, unverified (0: none)")
    q.add_argument("--build-type", default="", help="CMAKE_BUILD_TYPE, for the report")
    q.add_argument("--json", action="store_true")
    h = sub.add_parser("hub-repos", help="the fake Hub's repos of the multi mode")
    h.add_argument("--root", required=True)
    h.add_argument("--big-file-mb", type=int, default=1024)
    h.add_argument("--out", required=True, help="JSON: the repos' commits and files")
    u = sub.add_parser("multi", help="3 peers against 1 peer against curl, on node D")
    u.add_argument("--gswarm", required=True, help="the gswarm binary (CLI)")
    u.add_argument("--grpc", required=True, help="the host's gRPC address")
    u.add_argument("--http", required=True, help="the host's REST URL")
    u.add_argument("--repos", required=True, help="hub-repos' JSON")
    u.add_argument("--node", nargs=4, action="append", required=True,
                   metavar=("ID", "PID", "MODELS", "DATA_URL"),
                   help="a node: its id, its gswarm process, model cache and data port URL "
                        "(node-a, node-b, node-c: the sources; node-d: the target)")
    u.add_argument("--d-log", required=True, help="node D's agent log (at level info)")
    u.add_argument("--work", required=True, help="scratch directory (curl's output, logs)")
    u.add_argument("--repeat", type=int, default=3)
    u.add_argument("--modes", default="warm",
                   help="warm and/or cold (cold needs a writable %s; skipped otherwise)"
                   % DROP_CACHES)
    u.add_argument("--warmup", type=int, default=1,
                   help="untimed one-peer downloads onto node D before the rounds (default 1)")
    u.add_argument("--order", default="striped,solo,curl",
                   help="the first round's order (3 peers, 1 peer, curl); it rotates each round")
    u.add_argument("--build-type", default="", help="CMAKE_BUILD_TYPE, for the report")
    u.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.cmd == "multi" and sorted(args.order.split(",")) != sorted(multi.VARIANT_KEYS):
        p.error("--order takes striped, solo and curl, each once, comma-separated")
    if args.cmd == "hub-repos":
        if args.big_file_mb < 1:
            p.error("--big-file-mb must be at least 1")
        multi.write_hub_repos(args.root, args.big_file_mb, args.out)
        return 0
    if args.cmd == "model":
        t0 = time.monotonic()
        n = write_model(args.dir, args.shards, args.shard_mb)
        log("wrote %s: %d shards, %.2f GB in %.1f s" % (args.dir, args.shards, n / 1e9,
                                                        time.monotonic() - t0))
        return 0
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    args.modes = [s for s in args.modes.split(",") if s]
    if any(s not in ("warm", "cold") for s in args.modes) or not args.modes:
        p.error("--modes takes warm and/or cold")
    if "cold" in args.modes and not can_drop_caches():
        log("%s is not writable: cold runs skipped (warm only)" % DROP_CACHES)
        args.modes = [s for s in args.modes if s != "cold"] or ["warm"]
    if args.cmd == "multi":
        report = multi.MultiBench(args, http).main()
        return benchlib.emit(report, multi.table(report), args.json)
    report = Bench(args).main()
    return benchlib.emit(report, table(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
