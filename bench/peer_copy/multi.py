"""The multi mode of bench/peer_copy (run.sh --multi): a striped download from three peers against
one from a single peer and against curl of the same file, on node D.

run.sh --multi starts the fake Hub (tests/support/fake_hf_hub.py) serving two repos made by
`measure.py hub-repos` with the same big file (one safetensors file, MULTI_FILE_MB MiB, plus
config.json and .gitattributes): STRIPED_REPO and SOLO_REPO. It starts node A (`gswarm start`,
host and agent) and nodes B, C, D (`gswarm client`), each with its own HOME, model cache, data
port and HF_ENDPOINT pointing at the fake Hub, and then `measure.py multi`, which is this file's
MultiBench:

- untimed setup: STRIPED_REPO's pinned commit onto A (from the Hub), then onto B and C at once
  (from A's data port: the host prefers peers), SOLO_REPO's pinned commit onto A only;
- untimed, --warmup one-peer downloads onto D (removed again): the first download onto a fresh
  node costs several times the kernel CPU of later ones;
- timed, REPEAT rounds, the order rotating each round, after `sync` and warming the page cache
  with every source copy (warm) or dropping it (cold):
    3 peers  POST /download of STRIPED_REPO@commit onto D, wait: A, B and C hold it, so D stripes
             its big file over all three data ports (16 MiB ranges, one connection each);
    1 peer   the same for SOLO_REPO@commit: only A holds it (the host picks peers by repo and
             commit, not by model name, so a second repo is what keeps B and C out);
    curl     `curl -o` of the big file from A's data port (/ORG/REPO/resolve/COMMIT/FILE), bare:
             no verification, no fsync;
  D's copy is removed after every gswarm run (`gswarm rm NAME --node node-d`, waited for);
- timed, after those three in every round unless run.sh got --no-fanout (MULTI_FANOUT=0), the
  fan-out pair, the first of the two alternating between rounds (bench/peer_copy/fanout.py):
    2 targets at once  POST /download of SOLO_REPO@commit onto C and onto D, released together,
                       until both answered (both pull from A); both copies removed after;
    curl x2 at once    two curls of SOLO_REPO's big file from A's data port, released together;
  their MB/s counts the bytes both targets got, and both rows' "vs curl" is over curl x2's, which
  the report's `goals` holds against 0.9.

Each job's bytes_from_peers and bytes_from_hub are recorded; a "3 peers" run must have every
byte from peers and D's log must say "and 2 more" peers, a "1 peer" run must name no more peers,
or the run stops, saying why.
"""

import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchlib import (aligned, cpu_model, first_line, git_state, loadavg, log,  # noqa: E402
                      machine_busy, proc_user_sys, run, tail, versions_line)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fanout  # noqa: E402  (bench/peer_copy/fanout.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRIPED_REPO = "bench-org/striped-model"
SOLO_REPO = "bench-org/solo-model"
BIG_FILE = "model.safetensors"
NAMES = {STRIPED_REPO: "striped", SOLO_REPO: "solo"}
VARIANTS = ("3 peers", "1 peer", "curl")
# --order's names for them.
VARIANT_KEYS = {"striped": "3 peers", "solo": "1 peer", "curl": "curl"}
SOURCES = ("node-a", "node-b", "node-c")
TARGET = "node-d"
SETUP_TIMEOUT_S = 900  # one untimed download of the setup (the first comes from the Python Hub)
RUN_TIMEOUT_S = 300
DROP_CACHES = "/proc/sys/vm/drop_caches"
_GEN_VERSION = 1  # bump when the repos' layout changes: a kept DATA_DIR regenerates


# ---- the repos ----------------------------------------------------------------------------------

def _fake_hub():
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "support"))
    import fake_hf_hub  # noqa: PLC0415
    return fake_hf_hub


def write_hub_repos(root: str, big_file_mb: int, out: str) -> None:
    """STRIPED_REPO and SOLO_REPO in the fake Hub's store under `root`, the same bytes in both
    (one blob), reused when already there with this size; `out` gets their commits and files."""
    fh = _fake_hub()
    root = os.path.abspath(root)
    gen = {"peer_copy_multi": _GEN_VERSION, "big_file_mb": big_file_mb}
    t0 = time.monotonic()
    hidden = 4096
    rows = big_file_mb * fh.MiB // (2 * hidden)  # bf16 [rows, hidden]: exactly big_file_mb MiB
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": hidden, "vocab_size": rows, "num_hidden_layers": 0,
              "torch_dtype": "bfloat16"}
    attributes = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    weights = fh.make_safetensors([("model.embed_tokens.weight", "BF16", [rows, hidden],
                                    "peer_copy:multi")])
    repos = {}
    for repo_id in (STRIPED_REPO, SOLO_REPO):
        repo = fh.load_repo(root, repo_id)
        if not fh._repo_intact(root, repo, gen):  # pylint: disable=protected-access
            repo = fh.write_repo(root, repo_id, [{
                "files": {".gitattributes": attributes, "config.json": config, BIG_FILE: weights},
                "message": "Add %s" % repo_id}],
                info={"library_name": "transformers", "tags": ["safetensors", "llama"]},
                generator=gen)
        repos[repo_id] = repo
        # The second repo's big file: the first one's blob, read back instead of generated again.
        entry = repo.files("main")[BIG_FILE]
        weights = pathlib.Path(os.path.join(root, "blobs", entry["sha256"]))
    doc = {}
    for repo_id, repo in repos.items():
        files = [{"path": p, "size": e["size"], "sha256": e["sha256"]}
                 for p, e in sorted(repo.files("main").items())]
        doc[repo_id] = {"repo": repo_id, "commit": repo.main, "files": files,
                        "bytes": sum(f["size"] for f in files)}
    if doc[STRIPED_REPO]["files"] != doc[SOLO_REPO]["files"]:
        raise SystemExit("the two repos' files differ: %s" % json.dumps(doc))
    with open(out + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(out + ".tmp", out)
    log("repos ready under %s in %.1f s (%s: %d MiB)" % (root, time.monotonic() - t0, BIG_FILE,
                                                          big_file_mb))


# ---- measuring ----------------------------------------------------------------------------------

def job_u64(job: dict, name: str) -> int:
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    value = job.get(name, job.get(camel))
    return int(value) if value is not None else 0


class MultiBench:
    def __init__(self, args, http):
        self.a = args
        self.http = http  # measure.py's http(method, url, body, timeout) -> (status, doc, text)
        self.nodes = {n[0]: {"pid": int(n[1]), "models": n[2], "data_url": n[3]}
                      for n in args.node}
        missing = set(SOURCES + (TARGET,)) - set(self.nodes)
        if missing:
            raise SystemExit("measure.py multi: no --node for %s" % ", ".join(sorted(missing)))
        with open(args.repos) as f:
            self.repos = json.load(f)
        self.files = self.repos[STRIPED_REPO]["files"]
        self.bytes = self.repos[STRIPED_REPO]["bytes"]
        self.big = next(f for f in self.files if f["path"] == BIG_FILE)
        os.makedirs(args.work, exist_ok=True)
        self.logf = os.path.join(args.work, "commands.log")
        self.verified = set()  # (variant, node) whose big file's sha256 was checked
        self.fanout = fanout.enabled()

    def source(self, repo: str) -> str:
        return "hf://%s@%s" % (repo, self.repos[repo]["commit"])

    def file_url(self, repo: str) -> str:
        """The big file of repo's pinned commit on node A's data port."""
        return "%s/%s/resolve/%s/%s" % (self.nodes["node-a"]["data_url"], repo,
                                        self.repos[repo]["commit"], BIG_FILE)

    # ---- the cluster ----------------------------------------------------------------------------

    def download(self, repo: str, node: str, wait: bool, timeout: float):
        body = {"model_name": NAMES[repo], "source_url": self.source(repo),
                "target_device": "disk", "node": node, "wait": wait}
        status, doc, text = self.http("POST", self.a.http + "/download", body, timeout=timeout)
        job = (doc or {}).get("job") if isinstance(doc, dict) else None
        if status != 200 or not job:
            raise SystemExit("POST /download of %s onto %s answered %d: %s"
                             % (repo, node, status, text[:500]))
        return job

    def get_job(self, job_id: str) -> dict:
        status, doc, text = self.http("GET", "%s/jobs/%s" % (self.a.http, job_id))
        if status != 200 or not isinstance(doc, dict):
            raise SystemExit("GET /jobs/%s answered %d: %s" % (job_id, status, text[:300]))
        return doc.get("job", doc)

    def wait_jobs(self, ids, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while True:
            jobs = [self.get_job(i) for i in ids]
            if all(j.get("state") in ("succeeded", "failed", "cancelled") for j in jobs):
                return jobs
            if time.monotonic() > deadline:
                raise SystemExit("jobs not done within %d s: %s" % (timeout, json.dumps(jobs)))
            time.sleep(0.2)

    def holders(self, name: str) -> set:
        status, doc, text = self.http("GET", "%s/models/%s" % (self.a.http, name))
        if status == 404:
            return set()
        if status != 200 or not isinstance(doc, dict):
            raise SystemExit("GET /models/%s answered %d: %s" % (name, status, text[:300]))
        model = doc.get("model", doc)
        return {r.get("node_id") for r in model.get("replicas", [])
                if r.get("tier") == "disk" and r.get("state") == "ready"}

    def setup(self) -> None:
        """Untimed: STRIPED_REPO onto A, then B and C at once; SOLO_REPO onto A only."""
        t0 = time.monotonic()
        for repo in (STRIPED_REPO, SOLO_REPO):
            job = self.download(repo, "node-a", True, SETUP_TIMEOUT_S)
            if job.get("state") != "succeeded":
                raise SystemExit("setup: %s onto node-a: %s" % (repo, json.dumps(job)))
        ids = [self.download(STRIPED_REPO, n, False, 30)["id"] for n in ("node-b", "node-c")]
        for job in self.wait_jobs(ids, SETUP_TIMEOUT_S):
            if job.get("state") != "succeeded":
                raise SystemExit("setup: %s onto %s: %s" % (STRIPED_REPO, job.get("node_id"),
                                                            json.dumps(job)))
        held = {NAMES[r]: self.holders(NAMES[r]) for r in NAMES}
        if held != {"striped": set(SOURCES), "solo": {"node-a"}}:
            raise SystemExit("setup: copies are on %s, expected striped on A, B, C and solo on A"
                             % held)
        log("setup: %s on node-a, node-b, node-c and %s on node-a in %.1f s"
            % (STRIPED_REPO, SOLO_REPO, time.monotonic() - t0))

    def remove_target(self, name: str, node: str = TARGET) -> None:
        """Untimed: `gswarm rm NAME --node NODE` (node D unless said), then until the node's
        directory and replica are gone (the other copies stay)."""
        before = self.holders(name) - {node}
        argv = [self.a.gswarm, "--host", self.a.grpc, "rm", name, "--node", node]
        rc, _, _ = run(argv, self.logf, 60)
        if rc != 0:
            raise SystemExit("gswarm rm %s --node %s failed (exit %d):\n%s"
                             % (name, node, rc, tail(self.logf)))
        n_dir = os.path.join(self.nodes[node]["models"], name)
        deadline = time.monotonic() + 30
        while os.path.exists(n_dir) or node in self.holders(name):
            if time.monotonic() > deadline:
                raise SystemExit("%s (or its replica) still there 30 s after gswarm rm" % n_dir)
            time.sleep(0.05)
        if self.holders(name) != before:
            raise SystemExit("gswarm rm %s --node %s changed the other copies: %s -> %s"
                             % (name, node, before, self.holders(name)))

    # ---- cache state and probes -----------------------------------------------------------------

    def settle(self, mode: str) -> None:
        """Untimed: write back what earlier runs left dirty, then drop the page cache (cold) or
        read every source copy into it (warm)."""
        subprocess.run(["sync"], check=True, timeout=120)
        if mode == "cold":
            with open(DROP_CACHES, "w") as f:
                f.write("3")
            return
        for node in SOURCES:
            for name in NAMES.values():
                d = os.path.join(self.nodes[node]["models"], name)
                for f in self.files if os.path.isdir(d) else ():
                    with open(os.path.join(d, f["path"]), "rb") as fh:
                        while fh.read(8 << 20):
                            pass

    def snap(self) -> dict:
        s = {"t": time.monotonic(), "machine": machine_busy()}
        for node, n in self.nodes.items():
            user, sys_ = proc_user_sys(n["pid"])
            s[node] = user + sys_
            s[node + "_user"] = user
        return s

    @staticmethod
    def delta(p0: dict, p1: dict, targets=(TARGET,), sources=SOURCES) -> dict:
        """Wall time, machine CPU, and the CPU of the `targets`' and `sources`' gswarm processes
        (node D and nodes A-C unless said) between two snap()s."""
        d = {k: p1[k] - p0[k] for k in p0}
        d_cpu = sum(d[n] for n in targets)
        d_user = sum(d[n + "_user"] for n in targets)
        return {"s": d["t"], "machine": d["machine"], "d_cpu": d_cpu, "d_user": d_user,
                "d_sys": d_cpu - d_user, "sources_cpu": sum(d[n] for n in sources)}

    # ---- the timed runs -------------------------------------------------------------------------

    def target_log(self) -> str:
        try:
            with open(self.a.d_log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_copy(self, variant: str, i: int, repo: str, node: str, job: dict,
                   log_before: int) -> dict:
        """Untimed, after a timed download of repo onto node (job: what POST /download answered):
        the node's files and sizes, the big file's sha256 against the Hub's (once per variant and
        node), every byte from peers and none from the Hub, and onto node D (whose log is at level
        info, the others' at warn) the peers D's log names past log_before: "and 2 more" for 3
        peers, none more otherwise. Returns the job's bytes by source and D's first peer."""
        name = NAMES[repo]
        if job.get("state") != "succeeded":
            raise SystemExit("%s run %d: the download onto %s failed: %s"
                             % (variant, i, node, json.dumps(job)))
        job = self.get_job(job["id"])
        n_dir = os.path.join(self.nodes[node]["models"], name)
        for f in self.files:
            p = os.path.join(n_dir, f["path"])
            if not os.path.isfile(p) or os.path.getsize(p) != f["size"]:
                raise SystemExit("%s run %d: %s missing or of the wrong size" % (variant, i, p))
        if (variant, node) not in self.verified:
            self.verified.add((variant, node))
            got = subprocess.run(["sha256sum", "--", os.path.join(n_dir, BIG_FILE)],
                                 capture_output=True, text=True, check=True).stdout.split()[0]
            if got != self.big["sha256"]:
                raise SystemExit("%s run %d: %s on %s has sha256 %s, the Hub's is %s"
                                 % (variant, i, BIG_FILE, node, got, self.big["sha256"]))
        from_peers = job_u64(job, "bytes_from_peers")
        from_hub = job_u64(job, "bytes_from_hub")
        said, more, want_more = None, None, 2 if variant == "3 peers" else 0
        if node == TARGET:  # what D's agent said about this download: its peers
            said = re.findall(r"download %s from peer (\S+)( and (\d+) more)?" % re.escape(name),
                              self.target_log()[log_before:])
            more = int(said[-1][2] or 0) if said else None
        if (said is not None and more != want_more) or from_hub != 0 or from_peers < self.bytes:
            raise SystemExit(
                "%s run %d: expected every byte onto %s from peers, %d peers besides the first: "
                "bytes_from_peers %d, bytes_from_hub %d (of %d), D's log: %s"
                % (variant, i, node, want_more, from_peers, from_hub, self.bytes,
                   "not read (onto %s)" % node if said is None
                   else said or "no \"download %s from peer\" line" % name))
        return {"from_peers": from_peers, "from_hub": from_hub,
                "first_peer": said[-1][0] if said else None}

    def gswarm_run(self, variant: str, mode: str, i: int) -> dict:
        repo = STRIPED_REPO if variant == "3 peers" else SOLO_REPO
        self.settle(mode)
        log_before = len(self.target_log())
        p0 = self.snap()
        job = self.download(repo, TARGET, True, RUN_TIMEOUT_S)
        p1 = self.snap()
        got = self.check_copy(variant, i, repo, TARGET, job, log_before)
        self.remove_target(NAMES[repo])
        r = self.delta(p0, p1)
        r.update(bytes=self.bytes, **got)
        return r

    def curl_run(self, mode: str, i: int) -> dict:
        out = os.path.join(self.a.work, "curl-out")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        url = self.file_url(STRIPED_REPO)
        argv = ["curl", "-sSf", "--noproxy", "*", "--max-time", str(RUN_TIMEOUT_S), url,
                "-o", os.path.join(out, BIG_FILE)]
        self.settle(mode)
        p0 = self.snap()
        rc, wall, cpu = run(argv, self.logf)
        p1 = self.snap()
        if rc != 0:
            raise SystemExit("curl %s failed (exit %d):\n%s" % (url, rc, tail(self.logf)))
        size = os.path.getsize(os.path.join(out, BIG_FILE))
        if size != self.big["size"]:
            raise SystemExit("curl run %d: %d bytes, expected %d" % (i, size, self.big["size"]))
        shutil.rmtree(out, ignore_errors=True)
        r = self.delta(p0, p1)
        r.update(s=wall, d_cpu=cpu, d_user=None, d_sys=None, bytes=size, from_peers=size,
                 from_hub=0)
        return r

    def main(self) -> dict:
        started = time.time()
        load0 = loadavg()
        self.setup()
        for n in range(self.a.warmup):
            # The first download onto a fresh node D costs several times the kernel CPU of later
            # ones, whichever variant it is: not what the rounds compare.
            r = self.gswarm_run("1 peer", self.a.modes[0], -1 - n)
            log("warm-up %d (untimed, 1 peer): %.2f s, D cpu %.2f s (user %.2f, sys %.2f)"
                % (n + 1, r["s"], r["d_cpu"], r["d_user"], r["d_sys"]))
        runs = {}
        pair = fanout.VARIANTS if self.fanout else ()
        for mode in self.a.modes:
            runs[mode] = {v: [] for v in VARIANTS + pair}
            order = tuple(VARIANT_KEYS[k] for k in self.a.order.split(","))
            for i in range(self.a.repeat):
                k = i % len(order)
                # The fan-out pair after the three, which of the two first alternating by round.
                for variant in order[k:] + order[:k] + (pair if i % 2 == 0 else pair[::-1]):
                    r = self.one_run(variant, mode, i)
                    runs[mode][variant].append(r)
                    log("%-4s run %d  %-17s %6.2f s  %7.1f MB/s  %s cpu %5.2f s%s  sources cpu "
                        "%5.2f s" % (mode, i + 1, variant, r["s"], r["bytes"] / r["s"] / 1e6,
                                     "C+D" if variant == fanout.PAIR else "D", r["d_cpu"],
                                     "" if r["d_user"] is None else
                                     " (user %.2f, sys %.2f)" % (r["d_user"], r["d_sys"]),
                                     r["sources_cpu"]))
        return self.report(runs, started, load0)

    def one_run(self, variant: str, mode: str, i: int) -> dict:
        if variant == "curl":
            return self.curl_run(mode, i)
        if variant == fanout.PAIR:
            return fanout.pair_run(self, SOLO_REPO, NAMES[SOLO_REPO], mode, i)
        if variant == fanout.CURL_PAIR:
            return fanout.curl_pair_run(self, self.file_url(SOLO_REPO), mode, i)
        return self.gswarm_run(variant, mode, i)

    def report(self, runs: dict, started: float, load0: str) -> dict:
        results = []
        goals = {}
        for mode, variants in runs.items():
            summary = {}
            for variant, rs in variants.items():
                secs = sorted(r["s"] for r in rs)
                med = statistics.median(secs)
                gb = rs[0]["bytes"] / 1e9
                summary[variant] = {
                    "runs": rs, "bytes": rs[0]["bytes"], "best_s": secs[0], "median_s": med,
                    "best_mb_s": rs[0]["bytes"] / secs[0] / 1e6,
                    "median_mb_s": rs[0]["bytes"] / med / 1e6,
                    "d_cpu_s_per_gb": statistics.median(r["d_cpu"] for r in rs) / gb,
                    "sources_cpu_s_per_gb": statistics.median(r["sources_cpu"] for r in rs) / gb,
                    "machine_cpu_s_per_gb": statistics.median(r["machine"] for r in rs) / gb,
                    "from_peers": statistics.median(r["from_peers"] for r in rs),
                    "from_hub": statistics.median(r["from_hub"] for r in rs),
                }
            for variant, s in summary.items():
                ref = fanout.CURL_PAIR if variant in fanout.VARIANTS else "curl"
                s["vs_curl"] = s["median_mb_s"] / summary[ref]["median_mb_s"]
                s["vs_one_peer"] = s["median_mb_s"] / summary["1 peer"]["median_mb_s"]
            results.append({"mode": mode, "variants": summary})
            if fanout.PAIR in summary:
                goals["%s_fanout_vs_curl_x2" % mode] = fanout.goal(summary)
        return {
            "benchmark": "peer_copy",
            "shape": "multi",
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": time.time() - started,
            "repeat": self.a.repeat,
            "warmup": self.a.warmup,
            "order": self.a.order,
            "fanout": self.fanout,
            "model": {"repos": [STRIPED_REPO, SOLO_REPO], "files": len(self.files),
                      "bytes": self.bytes, "big_file_bytes": self.big["size"]},
            "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                        "loadavg_before": load0, "loadavg_after": loadavg()},
            "versions": {"curl": first_line(["curl", "--version"]),
                         "gswarm": first_line([self.a.gswarm, "version"]),
                         "gswarm_binary": self.a.gswarm,
                         "gswarm_built_utc": time.strftime(
                             "%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.path.getmtime(self.a.gswarm))),
                         "build_type": self.a.build_type, "source": git_state()},
            "notes": ["MB = 10^6 bytes, GB = 10^9 bytes; medians of REPEAT runs",
                      "3 peers / 1 peer: POST /download hf://REPO@COMMIT onto node-d with wait, "
                      "end to end (all the repo's files); curl: the big file alone from node A's "
                      "data port, no verification, no fsync",
                      "D CPU: node D's agent (curl rows: curl); sources CPU: nodes A (host too), "
                      "B and C"] + ([
                          "2 targets at once: the solo repo onto nodes C and D at the same time, "
                          "both from node A, until both answered; curl x2 at once: two curls of "
                          "its big file from A's data port at the same time; MB/s: the bytes "
                          "both targets got; vs curl: over curl x2 at once's; D CPU: nodes C and "
                          "D (the two curls); sources CPU: nodes A and B"] if self.fanout else []),
            "results": results,
            "goals": goals,
        }


def table(report: dict) -> str:
    cols = ["cache", "variant", "best s", "median s", "best MB/s", "median MB/s", "vs curl",
            "vs 1 peer", "D CPU s/GB", "sources CPU s/GB", "machine CPU s/GB", "from peers MB",
            "from Hub MB"]
    rows = []
    for r in report["results"]:
        for variant, s in r["variants"].items():
            rows.append([r["mode"], variant, "%.2f" % s["best_s"], "%.2f" % s["median_s"],
                         "%.0f" % s["best_mb_s"], "%.0f" % s["median_mb_s"],
                         "%.2f" % s["vs_curl"], "%.2f" % s["vs_one_peer"],
                         "%.2f" % s["d_cpu_s_per_gb"], "%.2f" % s["sources_cpu_s_per_gb"],
                         "%.2f" % s["machine_cpu_s_per_gb"], "%.0f" % (s["from_peers"] / 1e6),
                         "%.0f" % (s["from_hub"] / 1e6)])
    m, v = report["machine"], report["versions"]
    head = ["peer_copy --multi benchmark, %s, %d runs each, %s %.2f GB (%d files, %.2f GB in all), "
            "%d cores (%s), load %s -> %s"
            % (report["started_utc"], report["repeat"], BIG_FILE,
               report["model"]["big_file_bytes"] / 1e9, report["model"]["files"],
               report["model"]["bytes"] / 1e9, m["cores"], m["cpu"], m["loadavg_before"],
               m["loadavg_after"]),
            versions_line(v)]
    text = "\n".join(head + aligned(cols, rows)) + "\n" + (
        "3 peers: node D stripes the big file over nodes A, B and C; 1 peer: only node A holds the "
        "commit; curl: the big file from node A's data port, unverified, no fsync. vs curl / vs 1 "
        "peer: median MB/s over theirs.\n")
    if report["goals"]:
        text += (
            "2 targets at once: nodes C and D download the 1-peer repo from node A at the same "
            "time; curl x2 at once: two curls of its big file from A's data port at the same time. "
            "Both: MB/s of the bytes both targets got until both finished, vs curl over curl x2 "
            "at once's, D CPU of C and D (the two curls), sources CPU of A and B.\n")
    for key, g in report["goals"].items():
        text += ("%s: " % key.split("_", 1)[0] if len(report["goals"]) > 1 else "") + \
            fanout.goal_line(g) + "\n"
    return text
