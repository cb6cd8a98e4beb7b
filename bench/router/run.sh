#!/usr/bin/env bash
# Router benchmark: short non-streaming completions through the host's OpenAI router against the
# same requests straight to the fake engine behind it (tests/support/fake_engine.py
# --tokens-per-second 0), in one run, at concurrency 1 and 32; then the time of a switch of the
# "default" alias under load.
#   bash bench/router/run.sh                 # builds build/, then ~1 min; table on stdout
#   bash bench/router/run.sh --json          # JSON on stdout, table and progress on stderr
#   bash bench/router/run.sh --duration 10 --rounds 3 --concurrency 1 8 32   # flags: measure.py
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; nothing is built)
#   SKIP_BUILD=1  use the binary as it is
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   GSWARM_LOG    copy gswarm's log to this file at exit
#   FAKE_ENGINE   the engine script (default: tests/support/fake_engine.py), for experiments
#   TOKENS_PER_SECOND  the engine's pace (default 0: answers at once, so only HTTP and the router
#                 are measured); with --max-tokens N each request takes the engine N / pace s,
#                 like a real engine generating N tokens
#
# Everything it writes lives in a temporary directory on TMPDIR's filesystem (default /tmp) and
# one under /dev/shm, both removed at exit, with every process it started.
# shellcheck disable=SC2154  # tmp, shm, *_pid, *_env: set by bench_tmpdir, start_bg, gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init router
fake_engine=${FAKE_ENGINE:-$root/tests/support/fake_engine.py}
BENCH_STOP_TENTHS=300  # SIGTERM: the agent stops its instances (cleanup_on_shutdown), then exits.

bench_build_gswarm
bench_need_tools curl "$python"

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-router-bench.XXXXXX"
bench_tmpdir shm /dev/shm/gswarm-router-bench.XXXXXX
bench_keep_log "$tmp/gswarm.log" "${GSWARM_LOG:-}"
bench_show_log "$tmp/gswarm.log"
# Any engine still running from this run (a killed gswarm cannot stop its own): its command line
# names this run's model directories. Each runs in its own process group.
# shellcheck disable=SC2317  # reached through the EXIT trap
bench_on_exit() { kill_groups_of "fake_engine.py --model ($tmp|$shm)/"; }

# --- gswarm start, with the fake engine (paced by TOKENS_PER_SECOND) as its default engine ------
read -r http_port grpc_port data_port < <(free_ports 3)

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
      ready_timeout_s: 60"

gswarm_env gswarm_env "$home"
cli=("${gswarm_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
start_bg gswarm_pid "$tmp/gswarm.log" "${gswarm_env[@]}" "$gswarm_bin" --log-level warn start \
  --bind 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port" --data-port "$data_port" \
  --node-id bench-node
wait_http "$gswarm_pid" "http://127.0.0.1:$http_port/health" 30 gswarm
wait_node "$gswarm_pid" 30 bench-node "gswarm's local agent" "${cli[@]}"
log "gswarm ready (pid $gswarm_pid, http $http_port, grpc $grpc_port)"

# --- two tiny models (the fake engine's own generator), registered and served ---------------------
for name in bench-a bench-b; do
  "$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import fake_engine as fe; fe.write_tiny_model(sys.argv[2])' \
    "$root/tests/support" "$tmp/src/$name"
  "${cli[@]}" download "file://$tmp/src/$name" --name "$name" >&2
  "${cli[@]}" serve "$name" --gpu cpu >&2
done

# --- measure --------------------------------------------------------------------------------------
"${gswarm_env[@]}" timeout --foreground 900 "$python" "$root/bench/router/measure.py" \
  --host "http://127.0.0.1:$http_port" --a bench-a --b bench-b "$@"
