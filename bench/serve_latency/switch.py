#!/usr/bin/python3
"""The measuring half of bench/serve_latency/switch.sh: two models sharing one router slot
(host.max_loaded_models 1, keep_alive_s -1), switched by requests A, B, A, B, ... through the
router, once with an engine that sleeps (the router puts the evicted one to sleep and wakes it on
its next request) and once with the same engine without sleep calls (the router stops the evicted
one and cold-starts the other). switch.sh starts a fresh `gswarm start` per way and runs:

  switch.py measure --way sleep|stop --http URL --gswarm BIN --grpc H:P --model-a A --model-b B
                    --engine-dir DIR --switches N --out FILE
      warms both models once (A then B, timed as first loads), then times N requests
      alternating A, B, ... (each forces a switch), and checks from GET /serving, the router's
      events and /proc that the way did what it says (woke the same processes, or cold-started)
  switch.py report FILE... [--json]
      the table (markdown) and, with --json, the JSON on stdout (the table then on stderr)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402  (bench/serve_latency/measure.py: http, pct, machine)
import benchlib  # noqa: E402  (bench/benchlib.py; measure put bench/ on sys.path)

REQUEST_TIMEOUT_S = 120  # one switching request: a cold start is a few seconds
EVENTS_TIMEOUT_S = 30
ENDED = ("stopped", "failed")
WAYS = {"sleep": "sleep/wake", "stop": "stop/start"}


def log(msg):
    sys.stderr.write("serve_latency switch bench: %s\n" % msg)
    sys.stderr.flush()


def chat(url, model, text):
    """One chat completion through the router, timed; raises unless HTTP 200."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
    t0 = time.monotonic()
    status, answer = measure.http("POST", url + "/v1/chat/completions", body,
                                  timeout=REQUEST_TIMEOUT_S)
    elapsed = time.monotonic() - t0
    if status != 200 or ((answer or {}).get("model") != model):
        raise RuntimeError("POST /v1/chat/completions for %s answered %d: %s"
                           % (model, status, answer))
    return elapsed


def serving(url):
    status, answer = measure.http("GET", url + "/serving", timeout=10)
    if status != 200:
        raise RuntimeError("GET /serving answered %d: %s" % (status, answer))
    return (answer or {}).get("instances", [])


def active(instances, model):
    return [i for i in instances if i.get("model_name") == model and i.get("state") not in ENDED]


def engine_pids(engine_dirs):
    """Live fake engines of this way: their command line names a model under one of
    engine_dirs (the disk tier, or the DRAM tier the router demotes an evicted model to)."""
    markers = [("--model " + d.rstrip("/") + "/").encode() for d in engine_dirs]
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            with open("/proc/%s/stat" % d) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"fake_engine.py" in cmd and any(m in cmd for m in markers) and state != "Z":
            pids.append(int(d))
    return sorted(pids)


def router_events(a):
    """Every router event of this (fresh) gswarm, oldest first."""
    argv = [a.gswarm, "--host", a.grpc, "events", "--kind", "router", "--last", "4096", "--json"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=EVENTS_TIMEOUT_S)
    if r.returncode != 0:
        raise RuntimeError("`%s` exited %d: %s" % (" ".join(argv), r.returncode, r.stderr))
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def snapshot(a, model):
    """The model's one ready instance: id, engine pid, state_reason, load_time_ms, source_tier."""
    ready = [i for i in active(serving(a.http), model) if i.get("state") == "ready"]
    if len(ready) != 1:
        raise RuntimeError("%s has %d ready instances after its request: %s"
                           % (model, len(ready), json.dumps(serving(a.http))))
    i = ready[0]
    return {"id": i.get("id"), "pid": int(i.get("pid", 0) or 0),
            "state_reason": i.get("state_reason", ""),
            "load_time_ms": int(i.get("load_time_ms", 0) or 0),
            "source_tier": i.get("source_tier", "")}


def run_way(a):
    if serving(a.http):
        raise RuntimeError("gswarm already serves something: %s" % serving(a.http))
    models = [a.model_a, a.model_b]
    pids_seen = set()
    # The warm-up: each model's first load (a cold start either way), A then B.
    first, warm = [], {}
    for m in models:
        first.append(chat(a.http, m, "warm %s" % m) * 1e3)
        warm[m] = [snapshot(a, m)["id"]]
        pids_seen.update(engine_pids(a.engine_dir))
        log("%s: first load of %s took %.0f ms" % (a.way, m, first[-1]))
    runs, served, alive_max = [], [], 0
    load_before = os.getloadavg()
    for k in range(a.switches):
        m = models[k % 2]  # B was last: A first
        runs.append(chat(a.http, m, "switch %d to %s" % (k + 1, m)) * 1e3)
        snap = snapshot(a, m)  # untimed
        snap["model"] = m
        served.append(snap)
        alive = engine_pids(a.engine_dir)
        alive_max = max(alive_max, len(alive))
        pids_seen.update(alive)
        log("%s: switch %d/%d to %s: %.0f ms (instance %s, pid %d, from %s%s)" % (
            a.way, k + 1, a.switches, m, runs[-1], snap["id"], snap["pid"], snap["source_tier"],
            ", " + snap["state_reason"] if snap["state_reason"] else ""))
    events = router_events(a)
    counts = {}
    for e in events:
        counts[e.get("action", "?")] = counts.get(e.get("action", "?"), 0) + 1
    ids = sorted({s["id"] for s in served} | {i for v in warm.values() for i in v})
    final = {m: [(i.get("id"), i.get("state")) for i in active(serving(a.http), m)]
             for m in models}
    return {"way": WAYS[a.way], "key": a.way, "switches": a.switches,
            "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "first_load_ms": first, "runs_ms": runs, "served": served,
            "warm_instances": warm, "final_instances": final, "instance_ids": ids,
            "engine_pids_seen": sorted(pids_seen), "engines_alive_max": alive_max,
            "router_events": counts, "check": check(a.way, a.switches, served, warm, ids,
                                                    pids_seen, alive_max, counts)}


def check(way, n, served, warm, ids, pids_seen, alive_max, counts):
    """{ok, what, problems}: did the way really wake the same engines, or really cold-start?"""
    problems = []
    if way == "sleep":
        want_ids = sorted(i for v in warm.values() for i in v)
        if len(want_ids) != 2 or ids != want_ids:
            problems.append("instances %s, warm-up made %s" % (ids, want_ids))
        if len(pids_seen) != 2 or alive_max != 2:
            problems.append("%d engine processes seen (%d at once), not 2"
                            % (len(pids_seen), alive_max))
        if counts.get("woke", 0) != n:
            problems.append("%d woke events for %d switches" % (counts.get("woke", 0), n))
        if counts.get("loaded", 0) != 2:
            problems.append("%d loaded events, not 2 (the warm-up)" % counts.get("loaded", 0))
        not_woken = [s["id"] for s in served if not s["state_reason"].startswith("woke in")]
        if not_woken:
            problems.append("not woken: %s" % not_woken)
        what = ("%d instances, %d engine pids for %d switches; router: %d slept, %d woke, "
                "%d loaded" % (len(ids), len(pids_seen), n, counts.get("slept", 0),
                               counts.get("woke", 0), counts.get("loaded", 0)))
    else:
        if len(ids) != n + 2 or len({s["id"] for s in served}) != n:
            problems.append("%d instances for %d switches + 2 warm-up loads" % (len(ids), n))
        if len(pids_seen) != n + 2 or alive_max != 1:
            problems.append("%d engine processes seen (%d at once), not %d (1 at once)"
                            % (len(pids_seen), alive_max, n + 2))
        if counts.get("loaded", 0) != n + 2:
            problems.append("%d loaded events, not %d" % (counts.get("loaded", 0), n + 2))
        if counts.get("slept", 0) or counts.get("woke", 0):
            problems.append("it slept or woke")
        what = ("%d instances, %d engine pids for %d switches; router: %d evicted, %d loaded, "
                "%d slept" % (len(ids), len(pids_seen), n, counts.get("evicted", 0),
                              counts.get("loaded", 0), counts.get("slept", 0)))
    return {"ok": not problems, "what": what, "problems": problems}


def summary(w):
    r = w["runs_ms"]
    out = {"n": len(r), "median_ms": statistics.median(r), "p90_ms": measure.pct(r, 90),
           "min_ms": min(r), "max_ms": max(r)}
    if w["key"] == "sleep":  # the agent's own wake time, from state_reason "woke in X s"
        woke = [float(s["state_reason"].split()[2]) * 1e3 for s in w["served"]
                if s["state_reason"].startswith("woke in ")]
        if woke:
            out["engine_median_ms"] = statistics.median(woke)
    else:  # the agent's spawn-to-ready of each new instance
        loads = [s["load_time_ms"] for s in w["served"] if s["load_time_ms"]]
        if loads:
            out["engine_median_ms"] = statistics.median(loads)
    return out


def report(a):
    ways = []
    for path in a.files:
        with open(path) as f:
            ways.append(json.load(f))
    for w in ways:
        w.update(summary(w))
    by = {w["key"]: w for w in ways}
    ratio = (by["stop"]["median_ms"] / by["sleep"]["median_ms"]
             if "stop" in by and "sleep" in by else None)
    rep = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "machine": measure.machine(), "build_type": a.build_type, "git": benchlib.git_state(),
           "cold_start_s": a.cold_start_s, "wake_s": a.wake_s, "ways": ways,
           "ratio_median_stop_over_sleep": ratio}
    return rep, table(rep)


def table(rep):
    m = rep["machine"]
    out = ["serve_latency switch: 2 models, 1 slot (max_loaded_models 1), fake engine with "
           "--startup-delay %s (cold start) and --wake-delay %s; %s" % (
               rep["cold_start_s"], rep["wake_s"], rep["date"]),
           "machine: %d CPUs (%s), kernel %s; build %s, tree %s" % (
               m["cpus"], m["cpu_model"], m["kernel"], rep["build_type"] or "?", rep["git"]),
           "",
           "| way | switches | median ms | p90 ms | min ms | max ms | engine median ms | "
           "first loads ms (A, B) | load avg | check |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for w in rep["ways"]:
        eng = w.get("engine_median_ms")
        out.append("| %s | %d | %.0f | %.0f | %.0f | %.0f | %s | %s | %.2f | %s: %s |" % (
            w["way"], w["n"], w["median_ms"], w["p90_ms"], w["min_ms"], w["max_ms"],
            "%.0f" % eng if eng is not None else "",
            ", ".join("%.0f" % x for x in w["first_load_ms"]), w["loadavg_before"][0],
            "ok" if w["check"]["ok"] else "FAILED (%s)" % "; ".join(w["check"]["problems"]),
            w["check"]["what"]))
    if rep["ratio_median_stop_over_sleep"] is not None:
        out += ["", "stop/start median / sleep/wake median: %.1f×"
                % rep["ratio_median_stop_over_sleep"]]
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="time one way")
    m.add_argument("--way", choices=sorted(WAYS), required=True)
    m.add_argument("--http", required=True, help="gswarm start's REST URL (the router)")
    m.add_argument("--gswarm", required=True, help="the gswarm binary (CLI, for the events)")
    m.add_argument("--grpc", required=True, help="gswarm start's gRPC address")
    m.add_argument("--model-a", required=True)
    m.add_argument("--model-b", required=True)
    m.add_argument("--engine-dir", required=True, action="append",
                   help="the way's model tiers (repeat): its engines' --model lies under one")
    m.add_argument("--switches", type=int, default=6)
    m.add_argument("--out", required=True, help="the way's results (JSON)")
    r = sub.add_parser("report", help="the table of the ways' results")
    r.add_argument("files", nargs="+")
    r.add_argument("--cold-start-s", default="")
    r.add_argument("--wake-s", default="")
    r.add_argument("--build-type", default="")
    r.add_argument("--json", action="store_true", help="JSON on stdout, the table on stderr")
    a = p.parse_args()
    if a.cmd == "measure":
        if a.switches < 1:
            p.error("--switches must be at least 1")
        result = run_way(a)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
        return 0
    rep, text = report(a)
    benchlib.emit(rep, text, a.json)
    return 0 if all(w["check"]["ok"] for w in rep["ways"]) else 1


if __name__ == "__main__":
    sys.exit(main())
