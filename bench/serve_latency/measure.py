#!/usr/bin/python3
"""The measuring half of bench/serve_latency/run.sh, which starts `gswarm start` with the fake
engine configured and puts the model on disk and in DRAM before it runs this.

  measure.py model --dir DIR --mb 400
      writes a safetensors model (config.json + model.safetensors, MB MiB of pseudo-random
      weights in 64 MiB tensors) that tests/support/fake_engine.py --load-weights reads in full
  measure.py measure --gswarm BIN --grpc H:P --http URL --name NAME --disk-dir D --dram-dir R ...
      times serve-to-ready, REPEAT times per way and source, interleaved, and prints the table

The ways, each from disk and from DRAM:
  by hand     Popen of the engine command the agent renders (same python, same flags, same model
              directory), then GET /health every --poll-ms until HTTP 200
  gswarm CLI  `gswarm serve NAME --from SRC --gpu cpu` until it exits 0 (it prints "ready at")
  gswarm REST POST /serve {"model_name", "source_device", "gpu_device": "cpu", "wait": true}
              until the answer (HTTP 200, instance ready)
Two references, outside the comparison: "by hand, fine poll" (the same as by hand with GET /health
every --fine-poll-ms, 10 ms: the engine's own time to ready, without the poll's rounding up) and
the CLI floor (`gswarm ps` once per repetition: process start, config, one gRPC call).
Before every disk run the model's files are dropped from the page cache
(posix_fadvise(DONTNEED) after fsync), so that disk runs read from the disk; DRAM runs read the
tier's copy under /dev/shm (tmpfs, always in memory). Instances are stopped between runs
(DELETE /instances/{id}, untimed); each hand-started engine is stopped with SIGTERM to its group.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FAKE_ENGINE = os.path.join(REPO, "tests", "support", "fake_engine.py")
PYTHON = "/usr/bin/python3"
MiB = 1 << 20
TENSOR_MB = 64
READY_TIMEOUT_S = 120
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import benchlib  # noqa: E402  (bench/benchlib.py)

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    sys.stderr.write("serve_latency bench: %s\n" % msg)
    sys.stderr.flush()


def engine_argv(model_path, name, port, host="127.0.0.1"):
    """The engine command run.sh configures (client.engines.fake), rendered the agent's way."""
    return [PYTHON, FAKE_ENGINE, "--model", model_path, "--served-model-name", name, "--host",
            host, "--port", str(port), "--load-weights"]


# ---- the model -----------------------------------------------------------------------------------

def make_model(directory, mb):
    """config.json + model.safetensors of `mb` MiB (U8 tensors of up to 64 MiB, random bytes)."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": 4096, "num_hidden_layers": max(1, mb // TENSOR_MB),
                   "vocab_size": 32000, "max_position_embeddings": 4096}, f, indent=2)
    sizes = []
    left = mb * MiB
    while left > 0:
        sizes.append(min(left, TENSOR_MB * MiB))
        left -= sizes[-1]
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for i, n in enumerate(sizes):
        header["model.layers.%d.mlp.weight" % i] = {"dtype": "U8", "shape": [n],
                                                     "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path = os.path.join(directory, "model.safetensors")
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _ in range(mb):
            f.write(os.urandom(MiB))
        f.flush()
        os.fsync(f.fileno())
    os.rename(path + ".tmp", path)
    return directory


def drop_cache(directory):
    """Evicts a directory's files from the page cache (clean pages: fsync first)."""
    for root, _, names in os.walk(directory):
        for n in names:
            fd = os.open(os.path.join(root, n), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# ---- HTTP ----------------------------------------------------------------------------------------

def http(method, url, body=None, timeout=5.0):
    """(status, json or None); raises on no answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with _opener.open(req, timeout=timeout) as r:
            text = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read(), e.code
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, None


def free_port():
    import socket  # noqa: PLC0415
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the ways ------------------------------------------------------------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.poll_s = a.poll_ms / 1000.0
        self.seq = 0
        self.work = a.work
        os.makedirs(self.work, exist_ok=True)

    def model_dir(self, source):
        return self.a.disk_dir if source == "disk" else self.a.dram_dir

    def prepare(self, source):
        if source == "disk":
            drop_cache(self.a.disk_dir)

    def next_id(self):
        self.seq += 1
        return "inst-bench-%d" % self.seq

    def by_hand(self, source, poll_s=None):
        poll_s = self.poll_s if poll_s is None else poll_s
        port = free_port()
        out = open(os.path.join(self.work, "hand-%d.log" % self.seq), "wb")
        self.seq += 1
        url = "http://127.0.0.1:%d/health" % port
        t0 = time.monotonic()
        proc = subprocess.Popen(engine_argv(self.model_dir(source), self.a.name, port),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while True:
                try:
                    status, _ = http("GET", url, timeout=2.0)
                    if status == 200:
                        break
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("the engine exited %s; see %s" % (proc.returncode, out.name))
                if time.monotonic() - t0 > READY_TIMEOUT_S:
                    raise RuntimeError("the engine was not ready in %d s" % READY_TIMEOUT_S)
                time.sleep(poll_s)
            elapsed = time.monotonic() - t0
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.close()
        return elapsed, None

    def by_hand_fine(self, source):
        return self.by_hand(source, self.a.fine_poll_ms / 1000.0)

    def cli_floor(self):
        """A CLI call that does next to nothing (`gswarm ps`): process start, config, gRPC."""
        argv = [self.a.gswarm, "--host", self.a.grpc, "ps"]
        t0 = time.monotonic()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
        elapsed = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError("`%s` exited %d: %s" % (" ".join(argv), r.returncode, r.stderr))
        return elapsed

    def cli(self, source):
        iid = self.next_id()
        argv = [self.a.gswarm, "--host", self.a.grpc, "serve", self.a.name, "--from", source,
                "--gpu", "cpu", "--id", iid]
        t0 = time.monotonic()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=READY_TIMEOUT_S)
        elapsed = time.monotonic() - t0
        if r.returncode != 0 or "ready at" not in r.stdout:
            raise RuntimeError("`%s` exited %d: %s %s" % (" ".join(argv), r.returncode, r.stdout,
                                                         r.stderr))
        return elapsed, self.stop(iid)

    def rest(self, source):
        iid = self.next_id()
        body = {"model_name": self.a.name, "source_device": source, "gpu_device": "cpu",
                "instance_id": iid, "wait": True}
        t0 = time.monotonic()
        status, answer = http("POST", self.a.http + "/serve", body, timeout=READY_TIMEOUT_S)
        elapsed = time.monotonic() - t0
        inst = ((answer or {}).get("job") or {}).get("instance") or {}
        if status != 200 or inst.get("state") != "ready":
            raise RuntimeError("POST /serve answered %d: %s" % (status, answer))
        if inst.get("source_tier") != source:
            raise RuntimeError("asked for %s, served from %s" % (source, inst.get("source_tier")))
        return elapsed, self.stop(iid)

    def stop(self, iid):
        """Stops the instance; returns its load_time_ms (the agent's start-to-ready)."""
        status, answer = http("GET", self.a.http + "/serving")
        load_ms = None
        for inst in (answer or {}).get("instances", []):
            if inst.get("id") == iid:
                load_ms = int(inst.get("load_time_ms", 0) or 0)
        status, answer = http("DELETE", self.a.http + "/instances/" + iid, timeout=60)
        if status != 200:
            raise RuntimeError("DELETE /instances/%s answered %d: %s" % (iid, status, answer))
        return load_ms


WAYS = [("by hand", "by_hand"), ("gswarm CLI", "cli"), ("gswarm REST", "rest")]
# A reference, not a baseline: the engine's own time to ready, polled finely.
FINE = ("by hand, fine poll", "by_hand_fine")
SOURCES = ["disk", "dram"]


def pct(values, q):
    """Linear-interpolated percentile (q in 0..100)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "loadavg": os.getloadavg()}


def measure(a):
    b = Bench(a)
    ways = WAYS + ([FINE] if a.fine_poll_ms > 0 else [])
    combos = [(w, s) for s in SOURCES for w in ways]
    # One untimed round: imports, the CLI binary and the engine script are then in the page cache.
    log("warm-up round")
    for (label, fn), source in combos:
        b.prepare(source)
        getattr(b, fn)(source)
    results = {(w[0], s): {"s": [], "load_ms": []} for w, s in combos}
    floor = []
    load_before = os.getloadavg()
    for rep in range(a.repeat):
        # Rotate the order each repetition, so that no way always follows the same other one.
        order = combos[rep % len(combos):] + combos[:rep % len(combos)]
        for (label, fn), source in order:
            b.prepare(source)
            elapsed, load_ms = getattr(b, fn)(source)
            results[(label, source)]["s"].append(elapsed)
            if load_ms is not None:
                results[(label, source)]["load_ms"].append(load_ms)
        floor.append(b.cli_floor())
        log("repetition %d/%d done" % (rep + 1, a.repeat))
    rows = []
    for source in SOURCES:
        hand = results[("by hand", source)]["s"]
        for label, _ in ways:
            r = results[(label, source)]["s"]
            row = {"way": label, "source": source, "n": len(r),
                   "median_ms": statistics.median(r) * 1e3, "p90_ms": pct(r, 90) * 1e3,
                   "min_ms": min(r) * 1e3, "max_ms": max(r) * 1e3, "runs_ms": [x * 1e3 for x in r]}
            if label.startswith("gswarm"):
                row["overhead_median_ms"] = row["median_ms"] - statistics.median(hand) * 1e3
                row["overhead_p90_ms"] = row["p90_ms"] - pct(hand, 90) * 1e3
                lm = results[(label, source)]["load_ms"]
                if len(lm) == len(r):
                    row["agent_load_median_ms"] = statistics.median(lm)
                    # Per run: the serve's time less the agent's own start-to-ready, i.e. what
                    # gswarm spends outside the engine (request, dispatch, reporting, CLI).
                    outside = [x * 1e3 - y for x, y in zip(r, lm)]
                    row["outside_median_ms"] = statistics.median(outside)
                    row["outside_p90_ms"] = pct(outside, 90)
            rows.append(row)
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(),
            "loadavg_before": load_before, "model_mb": a.model_mb, "repeat": a.repeat,
            "poll_ms": a.poll_ms, "fine_poll_ms": a.fine_poll_ms,
            "cli_floor_median_ms": statistics.median(floor) * 1e3, "build_type": a.build_type,
            "rows": rows}


def table(report):
    m = report["machine"]
    out = ["serve latency: fake engine --load-weights, %d MiB model, %d runs per row, health poll "
           "%d ms, %s" % (report["model_mb"], report["repeat"], report["poll_ms"],
                          report["date"]),
           "machine: %d CPUs (%s), kernel %s, load avg %.2f before / %.2f after; build %s" % (
               m["cpus"], m["cpu_model"], m["kernel"], report["loadavg_before"][0],
               m["loadavg"][0], report["build_type"] or "?"),
           "CLI floor (`gswarm ps`, median): %.0f ms; fine poll: %d ms" % (
               report["cli_floor_median_ms"], report["fine_poll_ms"]),
           "",
           "| source | way | median ms | p90 ms | min ms | max ms | overhead median ms | "
           "overhead p90 ms | agent load_time_ms median | outside the engine median ms | "
           "outside p90 ms |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        def f(key):
            v = r.get(key)
            return "%+.0f" % v if key.startswith("overhead") and v is not None else (
                "%.0f" % v if v is not None else "")
        out.append("| %s | %s | %.0f | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s |" % (
            r["source"], r["way"], r["median_ms"], r["p90_ms"], r["min_ms"], r["max_ms"],
            f("overhead_median_ms"), f("overhead_p90_ms"), f("agent_load_median_ms"),
            f("outside_median_ms"), f("outside_p90_ms")))
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("model", help="write the model")
    m.add_argument("--dir", required=True)
    m.add_argument("--mb", type=int, default=400)
    r = sub.add_parser("measure", help="time the ways")
    r.add_argument("--gswarm", required=True, help="the gswarm binary (CLI)")
    r.add_argument("--grpc", required=True, help="gswarm start's gRPC address")
    r.add_argument("--http", required=True, help="gswarm start's REST URL")
    r.add_argument("--name", required=True, help="the model's name in gswarm")
    r.add_argument("--disk-dir", required=True, help="the model's directory on the disk tier")
    r.add_argument("--dram-dir", required=True, help="the model's directory on the DRAM tier")
    r.add_argument("--work", required=True, help="scratch directory (hand-started engines' logs)")
    r.add_argument("--model-mb", type=int, default=0, help="for the report")
    r.add_argument("--repeat", type=int, default=10)
    r.add_argument("--poll-ms", type=int, default=200,
                   help="by hand: GET /health interval (the agent's supervisor polls every 200 ms)")
    r.add_argument("--fine-poll-ms", type=int, default=10,
                   help="also time by hand with this GET /health interval (0: not)")
    r.add_argument("--build-type", default="")
    r.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    a = p.parse_args()
    if a.cmd == "model":
        t0 = time.monotonic()
        make_model(a.dir, a.mb)
        log("wrote a %d MiB model to %s in %.1f s" % (a.mb, a.dir, time.monotonic() - t0))
        return 0
    report = measure(a)
    return benchlib.emit(report, table(report), a.json)


if __name__ == "__main__":
    sys.exit(main())
