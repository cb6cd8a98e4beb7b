-- wrk script of the router benchmark (bench/router/run.sh): POSTs the JSON body in $WRK_BODY to
-- the URL's path, and at the end prints one line "WRK_JSON {...}" with the counts and latency
-- percentiles (microseconds) that run.sh collects.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or '{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%.0f,"p90_us":%.0f,' ..
    '"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
