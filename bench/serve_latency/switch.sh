#!/usr/bin/env bash
# Switch benchmark: two models sharing one router slot (host.max_loaded_models 1, keep_alive_s
# -1), requests alternating A, B, A, B, ... through the router (each one forces a switch), two
# ways in one run, each on a fresh `gswarm start`:
#   sleep/wake  the fake engine with vLLM's sleep calls: the evicted instance sleeps, and wakes
#               on its model's next request (same process)
#   stop/start  the same engine command, without sleep calls: the evicted instance stops, and
#               the other model cold-starts
#   bash bench/serve_latency/switch.sh          # about a minute; table on stdout
#   bash bench/serve_latency/switch.sh --json   # JSON on stdout, table and progress on stderr
#   bash bench/serve_latency/switch.sh --switches 10
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; nothing is built)
#   SKIP_BUILD=1  use the binary as it is
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   COLD_START_S  the fake engine's --startup-delay (default 5)
#   WAKE_S        the fake engine's --wake-delay (default 0.2)
#   GSWARM_LOG    copy gswarm's logs to FILE.sleep and FILE.stop at exit
#
# Everything it writes (gswarm's HOMEs and model caches, the model, the engines' logs) lives in a
# temporary directory on TMPDIR's filesystem (default /tmp), the DRAM tiers in one under
# /dev/shm; both are removed at exit, with every process it started.
# shellcheck disable=SC2154  # tmp, shm, gswarm_pid, gswarm_env: set by bench_tmpdir, start_bg,
#                             # gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init "serve_latency switch"
BENCH_STOP_TENTHS=300  # SIGTERM: the agent stops its instances (cleanup_on_shutdown), then exits.
cold_start_s=${COLD_START_S:-5}
wake_s=${WAKE_S:-0.2}
switches=6
json=()
while (($#)); do
  case $1 in
    --switches) switches=${2:?--switches needs a number}; shift 2 ;;
    --json) json=(--json); shift ;;
    -h | --help) sed -n '2,/^# shellcheck/{/^# shellcheck/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) log "unknown argument $1 (--switches N, --json)"; exit 2 ;;
  esac
done
[[ $switches =~ ^[1-9][0-9]*$ ]] || { log "--switches must be a positive number"; exit 2; }

bench_build_gswarm
bench_need_tools curl "$python"

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-switch-bench.XXXXXX"
bench_tmpdir shm /dev/shm/gswarm-switch-bench.XXXXXX
# Any engine still running from this run (a killed gswarm cannot stop its own): its command line
# names a model directory of this run (the disk tier, or the DRAM tier that the router demotes an
# evicted model to). Each runs in its own process group.
# shellcheck disable=SC2317  # reached through the EXIT trap
bench_on_exit() { kill_groups_of "fake_engine.py --model ($tmp|$shm)/"; }

"$python" "$root/bench/serve_latency/measure.py" model --dir "$tmp/src" --mb 1
no_engines() { ! pgrep -f "fake_engine.py --model $1/" >/dev/null; }  # $1: a regex

# run_way KEY: a fresh gswarm start whose default engine sleeps (KEY sleep) or not (KEY stop),
# models A and B downloaded, switch.py measure, then gswarm stopped and its engines gone.
run_way() {
  local key=$1 dir=$tmp/$1 http_port grpc_port data_port calls=''
  read -r http_port grpc_port data_port < <(free_ports 3)
  mkdir -p "$dir/home" "$dir/models" "$shm/$key"
  if [[ $key = sleep ]]; then
    calls="
      sleep: [\"POST /sleep?level={sleep_level}\"]
      wake: [\"POST /wake_up\"]
      reload: ['POST /collective_rpc {{\"method\": \"reload_weights\"}}']"
  fi
  # The same command, env and delays for both ways: only the sleep calls differ.
  write_config "$dir/home/.gswarm.conf" --home "$dir/home" --cleanup --http "$http_port" \
    --grpc "$grpc_port" --models "$dir/models" --dram "$shm/$key" --dram-gb 1 \
    --data-port "$data_port" --client-extra "\
  default_engine: bench
  engines:
    bench:
      command: \"$python $root/tests/support/fake_engine.py --model {model_path} --served-model-name {model_name} --host {host} --port {port} --enable-sleep-mode --startup-delay $cold_start_s --wake-delay $wake_s --simulated-gpu-mib 512\"
      health_path: /health
      ready_timeout_s: 60
      env: {VLLM_SERVER_DEV_MODE: \"1\"}$calls"
  # The router's slot: one model loaded (awake) at a time, none unloaded for idleness.
  sed -i 's/^host:$/host:\n  max_loaded_models: 1\n  keep_alive_s: -1/' "$dir/home/.gswarm.conf"

  gswarm_env gswarm_env "$dir/home"
  local cli=("${gswarm_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
  bench_keep_log "$dir/gswarm.log" "${GSWARM_LOG:+$GSWARM_LOG.$key}"
  bench_show_log "$dir/gswarm.log"
  start_bg gswarm_pid "$dir/gswarm.log" "${gswarm_env[@]}" "$gswarm_bin" --log-level warn start \
    --bind 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port" --data-port "$data_port" \
    --node-id bench-node
  wait_http "$gswarm_pid" "http://127.0.0.1:$http_port/health" 30 gswarm
  wait_node "$gswarm_pid" 30 bench-node "gswarm's local agent" "${cli[@]}"
  log "$key: gswarm ready (pid $gswarm_pid, http $http_port, grpc $grpc_port)"
  "${cli[@]}" download "file://$tmp/src" --name bench-a >&2
  "${cli[@]}" download "file://$tmp/src" --name bench-b >&2

  "${gswarm_env[@]}" timeout --foreground 900 "$python" "$root/bench/serve_latency/switch.py" \
    measure --way "$key" --http "http://127.0.0.1:$http_port" --gswarm "$gswarm_bin" \
    --grpc "127.0.0.1:$grpc_port" --model-a bench-a --model-b bench-b \
    --engine-dir "$dir/models" --engine-dir "$shm/$key" --switches "$switches" \
    --out "$tmp/$key.json"

  # gswarm stops its instances on SIGTERM; then no engine of this way may be left.
  stop_proc "$gswarm_pid" "$BENCH_STOP_TENTHS"
  unset 'bench_pids[-1]' 'bench_stop_tenths[-1]'  # reaped: the exit trap must not signal the pid
  local mine="($dir/models|$shm/$key)"
  if ! wait_for $$ 15 no_engines "$mine"; then
    log "$key: engines left after gswarm stopped; killing them"
    kill_groups_of "fake_engine.py --model $mine/"
    wait_for $$ 10 no_engines "$mine" || { log "$key: engines would not die"; exit 1; }
  fi
}

run_way sleep
run_way stop

report_args=(--cold-start-s "$cold_start_s" --wake-s "$wake_s")
bench_build_type report_args "$gswarm_bin"
"$python" "$root/bench/serve_latency/switch.py" report "$tmp/sleep.json" "$tmp/stop.json" \
  "${report_args[@]}" "${json[@]}"
