"""Router overhead: the same short non-streaming completions sent through the host's router and
straight to the fake engine behind it, in one run, interleaved; then the time of a switch of the
"default" alias under load. Standard library only (Debian's /usr/bin/python3).

  measure.py --host http://127.0.0.1:PORT --a MODEL_A --b MODEL_B [--duration 5] [--rounds 2]
             [--concurrency 1 32] [--max-tokens 4] [--skip-rows] [--skip-switch] [--json]

The load generator: one thread per concurrent client, each with its own keep-alive
http.client connection (reopened when the server closes it), sending POST /v1/completions
{"model", "prompt": "hi", "max_tokens": N (--max-tokens, 4)} back to back for --duration seconds. Its own CPU time
is reported, to show whether it (rather than the router or the engine) was the limit.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request


MAX_TOKENS = 4  # --max-tokens


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def get_json(url):
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as r:
        return json.loads(r.read())


def post_json(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
        return json.loads(r.read())


class Client(threading.Thread):
    """Back-to-back requests on one keep-alive connection; records (start, end, status, model)."""

    def __init__(self, base_url, model, stop, start_barrier, keep_records=False):
        super().__init__(daemon=True)
        u = urllib.parse.urlsplit(base_url)
        self.addr = (u.hostname, u.port)
        body = {"prompt": "hi", "max_tokens": MAX_TOKENS}
        if model is not None:
            body["model"] = model
        self.payload = json.dumps(body).encode()
        self.stop = stop
        self.barrier = start_barrier
        self.lat = []
        self.records = [] if keep_records else None
        self.errors = 0
        self.error_samples = []

    def run(self):
        conn = http.client.HTTPConnection(*self.addr, timeout=30)
        hdrs = {"Content-Type": "application/json"}
        self.barrier.wait()

        def send(conn):
            conn.request("POST", "/v1/completions", body=self.payload, headers=hdrs)
            r = conn.getresponse()
            return r.read(), r.status

        while not self.stop.is_set():
            first_error = None
            for attempt in (0, 1):
                t0 = time.perf_counter()  # a retry is timed on its own
                try:
                    raw, status = send(conn)
                    break
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = http.client.HTTPConnection(*self.addr, timeout=30)
                    if attempt == 0:
                        first_error = e  # a keep-alive connection the server had closed: retry
                        continue
                    self.errors += 1
                    if len(self.error_samples) < 3:
                        self.error_samples.append(f"{first_error!r} then {e!r}")
            else:
                continue  # both attempts failed
            t1 = time.perf_counter()
            if status != 200:
                self.errors += 1
                if len(self.error_samples) < 3:
                    self.error_samples.append(f"HTTP {status}: {raw[:200]!r}")
                continue
            self.lat.append(t1 - t0)
            if self.records is not None:
                self.records.append((t0, t1, json.loads(raw).get("model")))
        conn.close()


def load(base_url, model, concurrency, duration, keep_records=False, during=None):
    """Runs `concurrency` clients for `duration` s; `during(t_start)` runs on this thread
    meanwhile. Returns a dict of results."""
    stop = threading.Event()
    barrier = threading.Barrier(concurrency + 1)
    clients = [Client(base_url, model, stop, barrier, keep_records) for _ in range(concurrency)]
    for c in clients:
        c.start()
    cpu0 = os.times()
    barrier.wait()
    t0 = time.perf_counter()
    extra = during(t0) if during else None
    remaining = duration - (time.perf_counter() - t0)
    if remaining > 0:
        time.sleep(remaining)
    stop.set()
    for c in clients:
        c.join(60)
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    lat = [x for c in clients for x in c.lat]
    return {
        "requests": len(lat), "errors": sum(c.errors for c in clients),
        "error_samples": [s for c in clients for s in c.error_samples][:3],
        "wall_s": wall, "rps": len(lat) / wall,
        "p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3, "max_ms": max(lat) * 1e3,
        "gen_cpu_pct": 100.0 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall,
        "records": [r for c in clients for r in c.records] if keep_records else None,
        "extra": extra,
    }


def measure_switch(args):
    """Switches the "default" alias under load; returns the summary dict."""
    # Switch under load: "default" requests at --switch-concurrency; A -> B in the middle.
    post_json(f"{args.host}/v1/models/switch", {"model": args.a})
    switch = {}

    def do_switch(t0):
        time.sleep(args.duration / 2)
        s0 = time.perf_counter()
        ans = post_json(f"{args.host}/v1/models/switch", {"model": args.b})
        s1 = time.perf_counter()
        switch.update(call_ms=(s1 - s0) * 1e3, t0=s0, t1=s1, answer=ans)
    res = load(args.host, None, args.switch_concurrency, args.duration, keep_records=True,
               during=do_switch)
    recs = res["records"]
    around = [(e - s) * 1e3 for s, e, _ in recs
              if e >= switch["t0"] - 0.1 and s <= switch["t1"] + 0.1]
    before = {m for s, e, m in recs if e < switch["t0"]}
    after = {m for s, e, m in recs if s > switch["t1"]}
    # More switches under the same kind of load, for switch_time_us's spread.
    times_us = [switch["answer"]["switch_time_us"]]

    def many(t0):
        for k in range(args.switches):
            time.sleep(args.duration / (args.switches + 1))
            ans = post_json(f"{args.host}/v1/models/switch", {"model": (args.a, args.b)[k % 2]})
            times_us.append(ans["switch_time_us"])
    res2 = load(args.host, None, args.switch_concurrency, args.duration, during=many)
    return {
        "switch_time_us": switch["answer"]["switch_time_us"],
        "switch_call_ms": switch["call_ms"],
        "switch_time_us_median": pct(times_us, 50), "switch_time_us_max": max(times_us),
        "switches": len(times_us),
        "max_latency_around_switch_ms": max(around) if around else float("nan"),
        "requests_around_switch": len(around),
        "p99_ms_same_load": res["p99_ms"], "p50_ms_same_load": res["p50_ms"],
        "errors": res["errors"] + res2["errors"], "requests": res["requests"] + res2["requests"],
        "models_before": sorted(before), "models_after": sorted(after),
        "switch_concurrency": args.switch_concurrency,
    }


def rows_table(rows):
    """The direct/router rows as a Markdown table."""
    lines = ["| concurrency | direct req/s | router req/s | throughput ratio | direct p50 ms | "
             "router p50 ms | added p50 ms | direct p99 ms | router p99 ms | added p99 ms | "
             "load gen CPU % (direct/router) | errors |",
             "|" + " ---: |" * 12]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['direct_rps']:.0f} | {r['router_rps']:.0f} | "
            f"{r['throughput_ratio']:.2f} | {r['direct_p50_ms']:.3f} | {r['router_p50_ms']:.3f} | "
            f"{r['added_p50_ms']:+.3f} | {r['direct_p99_ms']:.3f} | {r['router_p99_ms']:.3f} | "
            f"{r['added_p99_ms']:+.3f} | {r['direct_gen_cpu_pct']:.0f}/"
            f"{r['router_gen_cpu_pct']:.0f} | {r['errors']} |")
    return "\n".join(lines)


def switch_line(sw):
    """The switch-under-load summary in one line."""
    return (f"switch under load ({sw['switch_concurrency']} clients, \"default\"): "
            f"switch_time_us {sw['switch_time_us']:.1f} (median of {sw['switches']}: "
            f"{sw['switch_time_us_median']:.1f}, max {sw['switch_time_us_max']:.1f}); "
            f"POST /v1/models/switch round trip {sw['switch_call_ms']:.2f} ms; max latency of "
            f"the {sw['requests_around_switch']} requests within 100 ms of it "
            f"{sw['max_latency_around_switch_ms']:.2f} ms (same load: p50 "
            f"{sw['p50_ms_same_load']:.2f}, p99 {sw['p99_ms_same_load']:.2f} ms); "
            f"failed requests {sw['errors']} of {sw['requests']}; answers named "
            f"{sw['models_before']} before, {sw['models_after']} after")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True, help="the host's HTTP URL")
    ap.add_argument("--a", required=True, help="model measured (one ready instance)")
    ap.add_argument("--b", required=True, help="second model, for the switch (ready)")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--switch-concurrency", type=int, default=8)
    ap.add_argument("--switches", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=4,
                    help="tokens per completion: with a paced engine, its time per request")
    ap.add_argument("--skip-rows", action="store_true", help="no direct/router rounds")
    ap.add_argument("--skip-switch", action="store_true", help="no switch under load")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global MAX_TOKENS
    MAX_TOKENS = args.max_tokens

    insts = [i for i in get_json(f"{args.host}/serving/{args.a}").get("instances", [])
             if i.get("state") == "ready"]
    if len(insts) != 1:
        sys.exit(f"measure.py: want exactly one ready instance of {args.a}, got {insts}")
    engine = insts[0]["endpoint"]
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    log(f"router {args.host}, engine {engine} ({args.a})")

    # Warm-up (connections, the router's upstream pool), not measured.
    load(engine, args.a, 4, 1.0)
    load(args.host, args.a, 4, 1.0)

    runs = {}  # (conc, way) -> [result per round]
    for rnd in range(0 if args.skip_rows else args.rounds):
        for conc in args.concurrency:
            order = [("direct", engine), ("router", args.host)]
            if rnd % 2:
                order.reverse()
            for way, url in order:
                res = load(url, args.a, conc, args.duration)
                runs.setdefault((conc, way), []).append(res)
                log(f"round {rnd + 1} c={conc} {way}: {res['rps']:.0f} req/s, p50 "
                    f"{res['p50_ms']:.3f} ms, p99 {res['p99_ms']:.3f} ms, errors {res['errors']}, "
                    f"load generator CPU {res['gen_cpu_pct']:.0f}%"
                    + (f" {res['error_samples']}" if res["errors"] else ""))

    def med(xs):
        return pct(xs, 50)
    rows = []
    for conc in [] if args.skip_rows else args.concurrency:
        d, r = runs[(conc, "direct")], runs[(conc, "router")]
        row = {"concurrency": conc}
        for key in ("rps", "p50_ms", "p99_ms", "gen_cpu_pct"):
            row[f"direct_{key}"] = med([x[key] for x in d])
            row[f"router_{key}"] = med([x[key] for x in r])
        row["added_p50_ms"] = row["router_p50_ms"] - row["direct_p50_ms"]
        row["added_p99_ms"] = row["router_p99_ms"] - row["direct_p99_ms"]
        row["throughput_ratio"] = row["router_rps"] / row["direct_rps"]
        row["errors"] = sum(x["errors"] for x in d + r)
        rows.append(row)

    sw = None if args.skip_switch else measure_switch(args)

    if args.json:
        print(json.dumps({"rows": rows, "switch": sw}, indent=2))
    out = sys.stderr if args.json else sys.stdout
    if rows:
        print(rows_table(rows), file=out)
    if sw:
        print(("\n" if rows else "") + switch_line(sw), file=out)


if __name__ == "__main__":
    main()
