"""Summarizes one run of bench/router/run.sh: the JSON lines it collected (wrk runs, stream loads)
and measure.py's JSON, as Markdown tables on stdout, or with --json as JSON on stdout and the
tables on stderr. Standard library only.

  report.py RESULTS.jsonl [--measure MEASURE.json] [--meta JSON] [--json]

Each line of RESULTS.jsonl is one measurement:
  {"part": "throughput" | "latency", "target": "direct" | "nginx" | "router", "concurrency": C,
   "round": R, "wrk": {...wrk_post.lua's WRK_JSON...}}
  {"part": "streams", "target": "direct" | "router", "round": R, "load": {...stream_load's JSON...}}
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import pct, rows_table, switch_line  # noqa: E402

TARGETS = ("direct", "nginx", "router")


def med(xs):
    return pct(xs, 50)


def wrk_summary(runs):
    """Median over rounds of req/s and latency percentiles (ms); errors summed."""
    def rps(w):
        return w["requests"] / (w["duration_us"] / 1e6)

    def errors(w):
        return sum(w[k] for k in w if k.startswith("errors_"))
    return {
        "rps": med([rps(r["wrk"]) for r in runs]),
        "p50_ms": med([r["wrk"]["p50_us"] / 1e3 for r in runs]),
        "p99_ms": med([r["wrk"]["p99_us"] / 1e3 for r in runs]),
        "requests": sum(r["wrk"]["requests"] for r in runs),
        "errors": sum(errors(r["wrk"]) for r in runs),
        "rounds_rps": [round(rps(r["wrk"])) for r in runs],
    }


def summarize(lines):
    out = {"throughput": [], "latency": [], "streams": []}
    by = {}
    for x in lines:
        key = (x["part"], x.get("concurrency"), x["target"])
        by.setdefault(key, []).append(x)
    for conc in sorted({c for p, c, _ in by if p == "throughput"}):
        row = {"concurrency": conc}
        for t in TARGETS:
            if ("throughput", conc, t) in by:
                row[t] = wrk_summary(by[("throughput", conc, t)])
        if "router" in row and "nginx" in row:
            row["router_over_nginx"] = row["router"]["rps"] / row["nginx"]["rps"]
        for t in ("router", "nginx"):
            if t in row and "direct" in row:
                row[f"{t}_over_direct"] = row[t]["rps"] / row["direct"]["rps"]
        out["throughput"].append(row)
    for t in TARGETS:
        if ("latency", 1, t) in by:
            row = {"target": t, **wrk_summary(by[("latency", 1, t)])}
            out["latency"].append(row)
    direct = next((r for r in out["latency"] if r["target"] == "direct"), None)
    for r in out["latency"]:
        if direct and r is not direct:
            r["added_p50_ms"] = r["p50_ms"] - direct["p50_ms"]
            r["added_p99_ms"] = r["p99_ms"] - direct["p99_ms"]
    for t in ("direct", "router"):
        for x in by.get(("streams", None, t), []):
            out["streams"].append({"target": t, "round": x["round"], **x["load"]})
    walls = {t: med([s["wall_s"] for s in out["streams"] if s["target"] == t])
             for t in ("direct", "router") if any(s["target"] == t for s in out["streams"])}
    if len(walls) == 2:
        out["streams_wall_ratio"] = walls["router"] / walls["direct"]
    return out


def tables(s, measure):
    text = []
    if s["throughput"]:
        text += ["Throughput, non-streaming chat completions (wrk -t2, median of rounds):", "",
                 "| concurrency | direct req/s | nginx req/s | router req/s | router/nginx | "
                 "router/direct | nginx/direct | p50 ms direct/nginx/router | "
                 "p99 ms direct/nginx/router | errors |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in s["throughput"]:
            def col(t, k, f):
                return format(r[t][k], f) if t in r else "-"

            def ratio(k):
                return f"{r[k]:.2f}" if k in r else "-"
            text.append(
                f"| {r['concurrency']} | {col('direct', 'rps', '.0f')} | "
                f"{col('nginx', 'rps', '.0f')} | {col('router', 'rps', '.0f')} | "
                f"{ratio('router_over_nginx')} | "
                f"{ratio('router_over_direct')} | {ratio('nginx_over_direct')} | "
                + "/".join(col(t, "p50_ms", ".2f") for t in TARGETS) + " | "
                + "/".join(col(t, "p99_ms", ".2f") for t in TARGETS) + " | "
                + str(sum(r[t]["errors"] for t in TARGETS if t in r)) + " |")
        text.append("")
    if s["latency"]:
        text += ["Latency, one connection (wrk -t1 -c1, median of rounds):", "",
                 "| target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in s["latency"]:
            added = (f"{r['added_p50_ms']:+.3f} | {r['added_p99_ms']:+.3f}"
                     if "added_p50_ms" in r else "- | -")
            text.append(f"| {r['target']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | "
                        f"{r['p99_ms']:.3f} | {added} | {r['errors']} |")
        text.append("")
    if s["streams"]:
        text += ["Concurrent streamed chat completions (stream_load):", "",
                 "| target | streams | ok | failed | wall s | stream p50 s | stream p99 s | "
                 "all open at s | most open | RSS before MiB | RSS at most open MiB | "
                 "RSS/open stream KiB |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
                 "---: |"]
        for r in s["streams"]:
            def mib(k):
                return f"{r[k] / 1024:.1f}" if r[k] >= 0 else "-"
            text.append(
                f"| {r['target']} | {r['streams']} | {r['ok']} | {r['failed']} | "
                f"{r['wall_s']:.2f} | {r['p50_s']:.2f} | {r['p99_s']:.2f} | "
                + (f"{r['all_open_s']:.2f}" if r["all_open_s"] >= 0 else "never") + " | "
                f"{r['max_open']} | {mib('rss_before_kib')} | {mib('rss_at_max_open_kib')} | "
                + (f"{r['rss_per_stream_kib']:.1f}" if r["rss_per_stream_kib"] >= 0 else "-")
                + " |")
        if "streams_wall_ratio" in s:
            text.append(f"\nwall time router/direct: {s['streams_wall_ratio']:.2f} (goal <= 1.2)")
        for r in s["streams"]:
            if r["failed"]:
                text.append(f"{r['target']}: {r['failed']} failed {r['errors']}, first: "
                            f"{r['first_error']}")
        text.append("")
    if measure and measure.get("rows"):
        text += ["Python fake engine, measure.py (direct vs router):", "",
                 rows_table(measure["rows"]), ""]
    if measure and measure.get("switch"):
        text += [switch_line(measure["switch"]), ""]
    return "\n".join(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--measure", help="measure.py's --json output")
    ap.add_argument("--meta", help="the run's settings (JSON object), copied into the output")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with open(args.results) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    measure = None
    if args.measure and os.path.getsize(args.measure) > 0:
        with open(args.measure) as f:
            measure = json.load(f)
    s = summarize(lines)
    if args.meta:
        s = {"settings": json.loads(args.meta), **s}
    if measure:
        s["measure"] = measure
    if args.json:
        print(json.dumps({**s, "runs": lines}, indent=2))
    print(tables(s, measure), file=sys.stderr if args.json else sys.stdout)


if __name__ == "__main__":
    main()
