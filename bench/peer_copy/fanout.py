"""The fan-out step of run.sh --multi (bench/peer_copy/multi.py): two targets pulling the same
model from one peer at the same time, against two curls at once (issue 14: node->node copy with
verification at least 0.9x bare curl, "and the same against 2 peers at once").

Each round, after multi.py's three rows, the first of the two alternating between rounds (none
with run.sh --no-fanout, which measure.py gets as MULTI_FANOUT=0):
  2 targets at once  POST /download of SOLO_REPO@commit (wait) onto node C and onto node D, each
                     from its own thread, both released together; timed from the release until
                     both answered. Only A holds that commit, so both pull from A's data port. Both
                     copies are checked like multi.py's runs (files and sizes; the Hub's sha256 in
                     the first round; every byte from peers; D's log names A alone), then removed
                     (`gswarm rm solo --node node-c`, then node-d, each waited for; untimed);
  curl x2 at once    two `curl -sSf -o` of the big file from A's data port, the URL multi.py's curl
                     row uses but of SOLO_REPO, released together into two scratch files on the
                     same filesystem, timed until both exited; deleted after.
MB/s: the bytes delivered to both targets together (2 x the repo's files, 2 x the big file for
curl) over the wall time; "vs curl" of both rows: over "curl x2 at once"'s median MB/s, which
goal() checks against GOAL.
"""

import functools
import os
import shutil
import threading
import time
import urllib.parse

from benchlib import RUN_TIMEOUT_S, run, tail

PAIR = "2 targets at once"
CURL_PAIR = "curl x2 at once"
VARIANTS = (PAIR, CURL_PAIR)
TARGETS = ("node-c", "node-d")
OTHERS = ("node-a", "node-b")  # "sources CPU" of both rows: A serves, B idles
GOAL = 0.9


def enabled() -> bool:
    """False when run.sh got --no-fanout (MULTI_FANOUT=0)."""
    return os.environ.get("MULTI_FANOUT", "1") != "0"


def at_once(calls, timeout: float, what: str) -> list:
    """Runs every call in `calls` on its own thread, all released together once started; returns
    each one's (result, monotonic time it returned), in order. A call that raised (SystemExit
    included) raises here once all have ended, the first in order; calls still running after
    `timeout` s raise a SystemExit naming `what` (their threads are daemons: the exit ends them)."""
    go = threading.Event()
    out = [None] * len(calls)

    def body(k, call):
        go.wait()
        try:
            out[k] = (True, call(), time.monotonic())
        except BaseException as e:  # pylint: disable=broad-except  # SystemExit: raised below
            out[k] = (False, e, time.monotonic())

    threads = [threading.Thread(target=body, args=(k, c), daemon=True)
               for k, c in enumerate(calls)]
    for t in threads:
        t.start()
    go.set()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        raise SystemExit("%s: not all %d done within %d s" % (what, len(calls), timeout))
    for ok, value, _ in out:
        if not ok:
            raise value
    return [(value, end) for _, value, end in out]


def pair_run(b, repo: str, name: str, mode: str, i: int) -> dict:
    """2 targets at once, on MultiBench `b`: `repo` (held by node A alone) onto nodes C and D at
    the same time; checked and removed again (untimed)."""
    b.settle(mode)
    log_before = len(b.target_log())
    p0 = b.snap()
    t0 = time.monotonic()
    done = at_once([functools.partial(b.download, repo, node, True, RUN_TIMEOUT_S)
                    for node in TARGETS], RUN_TIMEOUT_S + 30,
                   "%s run %d: POST /download of %s onto %s"
                   % (PAIR, i, repo, " and ".join(TARGETS)))
    p1 = b.snap()
    got = {node: b.check_copy(PAIR, i, repo, node, job, log_before)
           for node, (job, _) in zip(TARGETS, done)}
    # The host picks peers when it sends the download: neither target's copy is ready then, so
    # both must be pulling from A.
    first = got["node-d"]["first_peer"]  # D's log is at level info, C's at warn
    a_port = urllib.parse.urlsplit(b.nodes["node-a"]["data_url"]).port
    if urllib.parse.urlsplit(first).port != a_port:
        raise SystemExit("%s run %d: node D downloaded %s from %s, not from node A's data port %d"
                         % (PAIR, i, name, first, a_port))
    for node in TARGETS:
        b.remove_target(name, node)
    r = b.delta(p0, p1, TARGETS, OTHERS)
    r.update(bytes=len(TARGETS) * b.bytes,
             from_peers=sum(g["from_peers"] for g in got.values()),
             from_hub=sum(g["from_hub"] for g in got.values()), first_peer=first,
             targets_s={node: end - t0 for node, (_, end) in zip(TARGETS, done)})
    return r


def curl_pair_run(b, url: str, mode: str, i: int) -> dict:
    """curl x2 at once, on MultiBench `b`: two curls of `url` (the big file) into two scratch
    files, released together; the files are checked for size and deleted."""
    out = os.path.join(b.a.work, "curl-pair-out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    size = b.big["size"]
    paths = [os.path.join(out, "%d-%s" % (k, b.big["path"])) for k in range(len(TARGETS))]
    argvs = [["curl", "-sSf", "--noproxy", "*", "--max-time", str(RUN_TIMEOUT_S), url, "-o", p]
             for p in paths]
    b.settle(mode)
    p0 = b.snap()
    t0 = time.monotonic()
    done = at_once([functools.partial(run, argv, b.logf) for argv in argvs], RUN_TIMEOUT_S + 30,
                   "%s run %d: curl %s" % (CURL_PAIR, i, url))
    p1 = b.snap()
    for ((rc, _, _), _), p in zip(done, paths):
        if rc != 0:
            raise SystemExit("curl %s -o %s failed (exit %d):\n%s" % (url, p, rc, tail(b.logf)))
        if os.path.getsize(p) != size:
            raise SystemExit("%s run %d: %s has %d bytes, expected %d"
                             % (CURL_PAIR, i, p, os.path.getsize(p), size))
    shutil.rmtree(out, ignore_errors=True)
    total = len(paths) * size
    r = b.delta(p0, p1, (), OTHERS)
    r.update(d_cpu=sum(c for (_, _, c), _ in done), d_user=None, d_sys=None, bytes=total,
             from_peers=total, from_hub=0,
             targets_s={"curl %d" % (k + 1): end - t0 for k, (_, end) in enumerate(done)})
    return r


def goal(summary: dict) -> dict:
    """2 targets at once over curl x2 at once (median MB/s) against GOAL, from one cache state's
    summary (multi.py's report)."""
    pair, curls = summary[PAIR], summary[CURL_PAIR]
    ratio = pair["median_mb_s"] / curls["median_mb_s"]
    return {"median_mb_s": pair["median_mb_s"], "curl_x2_median_mb_s": curls["median_mb_s"],
            "ratio_median": ratio, "goal": GOAL, "met": ratio >= GOAL,
            # Where the cores are the limit, the ratio cannot pass the two rows' machine CPU per
            # GB over each other: the same cores doing more work per byte.
            "busy_cores": pair["machine_cpu_s_per_gb"] * pair["median_mb_s"] / 1e3,
            "cpu_ceiling": curls["machine_cpu_s_per_gb"] / pair["machine_cpu_s_per_gb"]}


def goal_line(g: dict) -> str:
    return ("%s over %s: %.2fx median; goal >= %.1f: %s\n"
            "  CPU ceiling: %.1f of %d cores busy during %s; where the cores are the limit it "
            "cannot pass machine CPU s/GB of %s over its own = %.2fx" % (
                PAIR, CURL_PAIR, g["ratio_median"], g["goal"], "met" if g["met"] else "NOT met",
                g["busy_cores"], os.cpu_count(), PAIR, CURL_PAIR, g["cpu_ceiling"]))
