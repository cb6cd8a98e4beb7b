#!/usr/bin/python3
"""The measuring half of bench/download/run.sh (which starts the fake Hub and gswarm, then runs
this). For each repo shape it downloads the same files with curl and with gswarm, REPEAT times
each, interleaved, and prints a table (or JSON with --json; the table then goes to stderr).

Per run it records wall seconds and CPU seconds (user + sys): curl's, sha256sum's and sync's
from wait4(); gswarm's as the `gswarm start` process's utime + stime delta from /proc/PID/stat
(the agent that downloads and hashes runs inside it) plus the CLI's from wait4(); the fake Hub's
from /proc/PID/stat; and the whole machine's busy time from /proc/stat, so that what the rest of
the machine did during the run can be told apart.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402  (bench/benchlib.py)
from benchlib import (cpu_model, first_line, git_state, loadavg, log, machine_busy,  # noqa: E402
                      proc_cpu, run, tail)

benchlib.set_name("download")
TICK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 300  # one download, any tool


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


class Bench:
    def __init__(self, args):
        self.a = args
        self.probe = Probe(args.hub_pid, args.gswarm_pid)
        with open(args.repos) as f:
            self.repos = json.load(f)
        os.makedirs(args.work, exist_ok=True)
        self.logf = os.path.join(args.work, "commands.log")

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
                raise SystemExit("curl run %d: %s says %s has sha256 %s, expected %s"
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
                for fn in order:
                    for tool, r in fn(shape, i).items():
                        runs[key].setdefault(tool, []).append(r)
                        log("%-6s run %d  %-22s %6.2f s  %7.1f MB/s  cpu %5.2f s  hub %5.2f s"
                            % (key, i + 1, tool, r["s"], shape["bytes"] / r["s"] / 1e6, r["cpu"],
                               r["hub_cpu"]))
        return self.report(runs, started, load0)

    def report(self, runs: dict, started: float, load0: str) -> dict:
        results = []
        for key, tools in runs.items():
            shape = self.repos[key]
            nbytes = shape["bytes"]
            gb = nbytes / 1e9
            summary = {}
            for tool, rs in tools.items():
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
            results.append({"shape": key, "label": shape["label"], "repo": shape["repo"],
                            "files": len(shape["files"]), "bytes": nbytes, "tools": summary})
        # Windows counted once: curl+openssl+fsync holds curl's window (and sha256sum's is left
        # out), gswarm its own.
        every = [r for tools in runs.values() for t in ("curl+openssl+fsync", "gswarm")
                 for r in tools.get(t, [])]
        rest = sum(r["machine"] - r["cpu"] - r["hub_cpu"] for r in every)
        rest_cores = max(0.0, rest / sum(r["s"] for r in every))
        return {
            "benchmark": "download",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "repeat": self.a.repeat,
            "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                        "loadavg_before": load0, "loadavg_after": loadavg(),
                        "rest_cores_busy": rest_cores},
            "versions": {"curl": first_line(["curl", "--version"]),
                         "gswarm": first_line([self.a.gswarm, "version"]),
                         "gswarm_binary": self.a.gswarm,
                         "gswarm_built_utc": time.strftime(
                             "%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(self.a.gswarm))),
                         "build_type": self.a.build_type, "source": git_state()},
            "shapes": {k: {"repo": v["repo"], "label": v["label"], "files": len(v["files"]),
                           "bytes": v["bytes"]} for k, v in self.repos.items()},
            "notes": ["MB = 10^6 bytes, GB = 10^9 bytes",
                      "gswarm CPU = `gswarm start` (host + agent) + CLI",
                      "gswarm verifies sha256 of every LFS file while writing and fsyncs each file",
                      "sha256sum is coreutils' own SHA-256; openssl dgst uses OpenSSL's (SHA-NI "
                      "where the CPU has it), as gswarm does",
                      "gswarm fetches up to 4 files at once; curl fetches them one after another "
                      "over one connection"],
            "results": results,
        }


def table(report: dict) -> str:
    cols = ["shape", "tool", "best s", "median s", "best MB/s", "median MB/s", "vs curl",
            "CPU s/GB", "top thread %", "hub CPU s/GB", "rest CPU s/GB"]
    rows = []
    for r in report["results"]:
        for tool, s in r["tools"].items():
            rows.append([r["label"], tool, "%.2f" % s["best_s"], "%.2f" % s["median_s"],
                         "%.0f" % s["best_mb_s"], "%.0f" % s["median_mb_s"],
                         "%.2f" % s["vs_curl_median"], "%.2f" % s["cpu_s_per_gb"],
                         "%.0f" % (100 * s["top_thread_busy"]) if "top_thread_busy" in s else "-",
                         "%.2f" % s["hub_cpu_s_per_gb"],
                         "%.2f" % max(0.0, s["rest_cpu_s_per_gb"])])
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(  # noqa: E731
        v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
    m = report["machine"]
    v = report["versions"]
    head = ["download benchmark, %s, %d runs each, %d cores (%s), load %s -> %s"
            % (report["started_utc"], report["repeat"], m["cores"], m["cpu"],
               m["loadavg_before"], m["loadavg_after"]),
            "%s (%s, built %s; checkout %s); %s"
            % (v["gswarm"], v["build_type"] or "?", v["gswarm_built_utc"], v["source"], v["curl"]),
            "the rest of the machine kept %.2f of %d cores busy during the runs (other work, "
            "kernel writeback and loopback softirq)" % (m["rest_cores_busy"], m["cores"]),
            fmt(cols)]
    return "\n".join(head + [fmt(row) for row in rows]) + "\n" + (
        "vs curl: median MB/s over curl's median MB/s. CPU: the tool's own (gswarm: server + CLI)."
        " top thread: the tool's busiest thread's CPU over the wall time (100: one thread is the"
        " limit). hub: the fake Hub's CPU; rest: everything else the machine did in the runs'"
        " windows.\n")


def main() -> int:
    p = argparse.ArgumentParser(description="measuring half of bench/download/run.sh")
    p.add_argument("--repos", required=True, help="make_repo.py --out file")
    p.add_argument("--hub-url", required=True)
    p.add_argument("--hub-pid", type=int, required=True)
    p.add_argument("--gswarm", required=True, help="the gswarm binary (CLI)")
    p.add_argument("--grpc", required=True, help="gswarm start's gRPC address")
    p.add_argument("--gswarm-pid", type=int, required=True)
    p.add_argument("--model-dir", required=True, help="gswarm's model_cache_dir")
    p.add_argument("--work", required=True, help="scratch directory (curl's output, logs)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--shapes", default="single,multi")
    p.add_argument("--build-type", default="", help="CMAKE_BUILD_TYPE, for the report")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    args.shapes = [s for s in args.shapes.split(",") if s]
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    report = Bench(args).main()
    return benchlib.emit(report, table(report), args.json, indent=1)


if __name__ == "__main__":
    sys.exit(main())
