#!/usr/bin/env bash
# Router benchmark, in one run, the same engine behind everything:
#   throughput  non-streaming chat completions with wrk (-t2) at concurrency 32 and 256 through
#               the host's router, through nginx as a plain keep-alive reverse proxy, and direct
#   latency     the same with one connection (wrk -t1 -c1): added p50 / p99 of router and nginx
#   streams     N concurrent streamed completions (default 10,000) through the router and direct,
#               each checked whole and in order; wall time ratio and gswarm's RSS per open stream
#   switch      the time of a switch of the "default" alias under load (measure.py, Python engine)
#   python      measure.py's direct/router rows on the Python fake engine (not in the default run)
# The engine of the first three is bench/router/sse_engine (C++, Boost.Asio), started by gswarm's
# agent like any engine; the switch uses tests/support/fake_engine.py.
#
#   bash bench/router/run.sh                       # builds, then a few minutes; tables on stdout
#   bash bench/router/run.sh --json > out.json     # JSON on stdout, tables and progress on stderr
#   bash bench/router/run.sh --only throughput,latency --duration 10 --rounds 5
#   bash bench/router/run.sh --only streams --streams 500
#   TOKENS_PER_SECOND=250 bash bench/router/run.sh --only python --max-tokens 4
#
# Flags: --only LIST (comma-separated parts above; default throughput,latency,streams,switch),
#   --duration S (5) and --rounds N (3): each wrk run and measure.py; --streams N (10000),
#   --chunks N (20) and --interval-ms MS (250): per stream (first chunk at once: 4.75 s),
#   --stream-timeout S (180), --ramp N (64: streams at most waiting for headers at once),
#   --nginx-workers N|auto (auto), --no-pin (the latency part leaves CPU placement to the
#   scheduler), --json. Any other flag goes to measure.py (--concurrency, --max-tokens,
#   --switch-concurrency, --switches).
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; gswarm is not built)
#   SKIP_BUILD=1  use the binaries as they are ($BUILD_DIR/bench/{sse_engine,stream_load} too)
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   GSWARM_LOG    copy gswarm's log to this file at exit
#   FAKE_ENGINE   the Python engine script (default: tests/support/fake_engine.py)
#   TOKENS_PER_SECOND  the Python engine's pace (default 0: answers at once)
#
# Everything it writes lives in a temporary directory on TMPDIR's filesystem (default /tmp) and
# one under /dev/shm, both removed at exit, with every process it started.
# shellcheck disable=SC2154  # tmp, shm, *_pid, *_env: set by bench_tmpdir, start_bg, gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init router
here=$root/bench/router
fake_engine=${FAKE_ENGINE:-$root/tests/support/fake_engine.py}
BENCH_STOP_TENTHS=300  # SIGTERM: the agent stops its instances (cleanup_on_shutdown), then exits.

only=throughput,latency,streams,switch
duration=5 rounds=3 streams=10000 chunks=20 interval_ms=250 stream_timeout=180 ramp=64
nginx_workers=auto json=0 pin=1
measure_args=()
while (($#)); do
  case $1 in
    --only) only=$2 ;;
    --duration) duration=$2 ;;
    --rounds) rounds=$2 ;;
    --streams) streams=$2 ;;
    --chunks) chunks=$2 ;;
    --interval-ms) interval_ms=$2 ;;
    --stream-timeout) stream_timeout=$2 ;;
    --ramp) ramp=$2 ;;
    --nginx-workers) nginx_workers=$2 ;;
    --json) json=1; shift; continue ;;
    --no-pin) pin=0; shift; continue ;;
    *) measure_args+=("$1"); shift; continue ;;
  esac
  shift 2
done
want() { [[ ,$only, = *,$1,* ]]; }
for part in ${only//,/ }; do
  [[ $part =~ ^(throughput|latency|streams|switch|python)$ ]] ||
    { log "unknown part $part (throughput, latency, streams, switch, python)"; exit 2; }
done

# --- binaries -------------------------------------------------------------------------------------
bench_build_gswarm
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  [[ -z ${GSWARM_BIN:-} ]] || cmake -S "$root" -B "$build_dir" -G Ninja >&2
  ninja -C "$build_dir" ${NINJA_JOBS:+-j "$NINJA_JOBS"} sse_engine stream_load >&2
fi
for bin in sse_engine stream_load; do
  [[ -x $build_dir/bench/$bin ]] || { log "$build_dir/bench/$bin not found (build it)"; exit 1; }
done
bench_need_tools curl "$python"
if want throughput || want latency; then bench_need_tools wrk nginx; fi

# Every stream is a descriptor in the load generator and the engine, and two in gswarm (client
# and upstream side).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fds=$(ulimit -n)
if want streams && [[ $fds != unlimited ]] && ((fds < 2 * streams + 200)); then
  log "warning: open files limit $fds < 2 x $streams streams + 200: the router cannot hold them" \
    "all (raise the hard limit, or pass --streams $(((fds - 200) / 2)))"
fi

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-router-bench.XXXXXX"
bench_tmpdir shm /dev/shm/gswarm-router-bench.XXXXXX
bench_keep_log "$tmp/gswarm.log" "${GSWARM_LOG:-}"
bench_show_log "$tmp/gswarm.log"
bench_show_log "$tmp/nginx/error.log"
# Private copies: a rebuild during the run cannot swap a binary under it.
cp "$gswarm_bin" "$tmp/gswarm"
cp "$build_dir/bench/sse_engine" "$build_dir/bench/stream_load" "$tmp/"
# Any engine still running from this run (a killed gswarm cannot stop its own): its command line
# names this run's model directories. Each runs in its own process group.
# shellcheck disable=SC2317  # reached through the EXIT trap
bench_on_exit() { kill_groups_of "(fake_engine.py|sse_engine) --model ($tmp|$shm)/"; }

# --- gswarm start, with both engines --------------------------------------------------------------
read -r http_port grpc_port data_port nginx_port < <(free_ports 4)
home=$tmp/home
models=$tmp/models
dram=$shm/dram
mkdir -p "$home" "$models" "$dram"
write_config "$home/.gswarm.conf" --home "$home" --cleanup --http "$http_port" --grpc "$grpc_port" \
  --models "$models" --dram "$dram" --dram-gb 1 --data-port "$data_port" --client-extra "\
  default_engine: fake
  engines:
    fake:
      command: \"$python $fake_engine --model {model_path} --served-model-name {model_name} --host {host} --port {port} --tokens-per-second ${TOKENS_PER_SECOND:-0} --disable-log-requests\"
      health_path: /health
      ready_timeout_s: 60
    sse:
      command: \"$tmp/sse_engine --model {model_path} --served-model-name {model_name} --host {host}
        --port {port} --chunks $chunks --interval-ms $interval_ms\"
      health_path: /health
      ready_timeout_s: 30"

# Every stream is one request in flight on one instance: the router must not queue or refuse them.
gswarm_env gswarm_env "$home" GSWARM_CLIENT_MAX_CONCURRENT_REQUESTS=$((streams + 1000)) \
  GSWARM_HOST_ROUTER_QUEUE_SIZE=$((streams + 1000))
cli=("${gswarm_env[@]}" "$tmp/gswarm" --host "127.0.0.1:$grpc_port")
start_bg gswarm_pid "$tmp/gswarm.log" "${gswarm_env[@]}" "$tmp/gswarm" --log-level warn start \
  --bind 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port" --data-port "$data_port" \
  --node-id bench-node
wait_http "$gswarm_pid" "http://127.0.0.1:$http_port/health" 30 gswarm
wait_node "$gswarm_pid" 30 bench-node "gswarm's local agent" "${cli[@]}"
log "gswarm ready (pid $gswarm_pid, http $http_port, grpc $grpc_port)"

# --- tiny models (the fake engine's own generator), registered and served -----------------------
serve() {  # serve NAME ENGINE
  "$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import fake_engine as fe; fe.write_tiny_model(sys.argv[2])' \
    "$root/tests/support" "$tmp/src/$1"
  "${cli[@]}" download "file://$tmp/src/$1" --name "$1" >&2
  "${cli[@]}" serve "$1" --gpu cpu --engine "$2" >&2
}
instance() {  # instance NAME FIELD: a field of NAME's one ready instance
  curl -fsS "http://127.0.0.1:$http_port/serving/$1" | "$python" -c '
import json, sys
ready = [i for i in json.load(sys.stdin).get("instances", []) if i.get("state") == "ready"]
print(ready[0][sys.argv[1]])' "$2"
}
results=$tmp/results.jsonl
: >"$results"
router=http://127.0.0.1:$http_port
if want throughput || want latency || want streams; then
  serve bench-s sse
  direct=$(instance bench-s endpoint)
  engine_pid=$(instance bench-s pid)
  log "sse_engine at $direct (pid $engine_pid)"
fi

# --- nginx: a plain reverse proxy with upstream keep-alive in front of the same engine -----------
if want throughput || want latency; then
  mkdir -p "$tmp/nginx"
  cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $nginx_workers;
worker_rlimit_nofile $fds;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  keepalive_requests 100000;  # as the router's server (nginx's default: 1000)
  upstream engine {
    server ${direct#http://};
    keepalive 256;
    keepalive_requests 100000;
  }
  server {
    listen 127.0.0.1:$nginx_port backlog=4096;
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  start_bg nginx_pid "$tmp/nginx/stderr.log" nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" \
    -c "$tmp/nginx/nginx.conf"
  wait_http "$nginx_pid" "http://127.0.0.1:$nginx_port/health" 10 nginx
  log "nginx ready (pid $nginx_pid, port $nginx_port, worker_processes $nginx_workers)"
fi

# --- wrk: throughput and latency ------------------------------------------------------------------
url_of() {
  case $1 in
    direct) echo "$direct" ;;
    nginx) echo "http://127.0.0.1:$nginx_port" ;;
    router) echo "$router" ;;
  esac
}
export WRK_BODY='{"model":"bench-s","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
wrk_run() {  # wrk_run PART TARGET CONNECTIONS THREADS SECONDS ROUND
  local out line
  out=$(timeout --foreground $(($5 + 60)) "${wrk_prefix[@]}" wrk -t"$4" -c"$3" -d"$5"s \
    --latency -s "$here/wrk_post.lua" "$(url_of "$2")/v1/chat/completions") ||
    { log "wrk against $2 failed: $out"; exit 1; }
  line=$(sed -n 's/^WRK_JSON //p' <<<"$out")
  [[ -n $line ]] || { log "no WRK_JSON from wrk against $2: $out"; exit 1; }
  [[ $6 = warm ]] && return
  printf '{"part":"%s","target":"%s","concurrency":%d,"round":%d,"wrk":%s}\n' "$1" "$2" "$3" "$6" \
    "$line" >>"$results"
  "$python" - "$line" <<'EOF' | { read -r s; log "$1 round $6 c=$3 $2: $s"; }
import json, sys
w = json.loads(sys.argv[1])
errors = sum(v for k, v in w.items() if k.startswith("errors_"))
print("%.0f req/s, p50 %.3f ms, p99 %.3f ms, errors %d"
      % (w["requests"] / w["duration_us"] * 1e6, w["p50_us"] / 1e3, w["p99_us"] / 1e3, errors))
EOF
}
targets=(direct nginx router)
# With one connection, where the processes run decides the figure: on this kind of VM a wakeup
# across cores costs tens of microseconds, so the direct baseline alone swings between ~20 us (wrk
# and the engine on one core) and ~80 us (on two). The latency part therefore pins wrk to the
# first CPU and gswarm, nginx and the engine (every thread) to the others, for every target alike.
wrk_prefix=()
ncpu=$(nproc)
pin_servers() {  # pin_servers CPULIST
  local pid
  # shellcheck disable=SC2046  # nginx's workers: one pid a word
  for pid in "$gswarm_pid" "$engine_pid" "$nginx_pid" $(pgrep -P "$nginx_pid"); do
    taskset -a -p -c "$1" "$pid" >/dev/null || log "warning: could not pin every thread of $pid"
  done
}
if want throughput || want latency; then
  for t in "${targets[@]}"; do wrk_run warm "$t" 32 2 1 warm; done  # connections, upstream pools
fi
for ((r = 1; r <= rounds; r++)); do
  # The order turns every round, so no target always runs first (or right after another).
  order=("${targets[@]:r % 3}" "${targets[@]:0:r % 3}")
  if want throughput; then
    for c in 32 256; do
      for t in "${order[@]}"; do wrk_run throughput "$t" "$c" 2 "$duration" "$r"; done
    done
  fi
  if want latency; then
    if ((pin && ncpu >= 2)); then
      pin_servers "1-$((ncpu - 1))"
      wrk_prefix=(taskset -c 0)
    fi
    for t in "${order[@]}"; do wrk_run latency "$t" 1 1 "$duration" "$r"; done
    if ((pin && ncpu >= 2)); then
      pin_servers "0-$((ncpu - 1))"
      wrk_prefix=()
    fi
  fi
done

# --- streams: N concurrent streamed completions, direct then through the router -----------------
if want streams; then
  for t in direct router; do
    rss_pid=$engine_pid
    [[ $t = direct ]] || rss_pid=$gswarm_pid
    out=$(timeout --foreground $((stream_timeout + 60)) "$tmp/stream_load" \
      --url "$(url_of "$t")/v1/chat/completions" --model bench-s --streams "$streams" \
      --chunks "$chunks" --ramp "$ramp" --timeout-s "$stream_timeout" --rss-pid "$rss_pid")
    printf '{"part":"streams","target":"%s","round":1,"load":%s}\n' "$t" "$out" >>"$results"
    log "streams $t: $out"
    sleep 1  # the last connections close on both sides
  done
fi

# --- measure.py: switch under load, and its direct/router rows on the Python engine --------------
: >"$tmp/measure.json"
if want switch || want python; then
  serve bench-a fake
  serve bench-b fake
  skip=()
  want switch || skip+=(--skip-switch)
  want python || skip+=(--skip-rows)
  "${gswarm_env[@]}" timeout --foreground 900 "$python" "$here/measure.py" \
    --host "$router" --a bench-a --b bench-b --duration "$duration" --rounds "$rounds" \
    "${skip[@]}" "${measure_args[@]}" --json >"$tmp/measure.json"
fi

meta="{\"duration_s\":$duration,\"rounds\":$rounds,\"streams\":$streams,\"chunks\":$chunks,"
meta+="\"interval_ms\":$interval_ms,\"ramp\":$ramp,\"nginx_workers\":\"$nginx_workers\","
meta+="\"pin\":$pin,\"cpus\":$ncpu,\"open_files\":\"$fds\"}"
report=("$python" -B "$here/report.py" "$results" --measure "$tmp/measure.json" --meta "$meta")
((json)) && report+=(--json)
"${report[@]}"
