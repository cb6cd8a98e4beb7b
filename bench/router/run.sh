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
#
# Everything it writes lives in a temporary directory on TMPDIR's filesystem (default /tmp) and
# one under /dev/shm, both removed at exit, with every process it started.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
[[ $build_dir = /* ]] || build_dir=$root/$build_dir
gswarm_bin=${GSWARM_BIN:-$build_dir/cli/gswarm}
python=/usr/bin/python3
fake_engine=${FAKE_ENGINE:-$root/tests/support/fake_engine.py}

log() { echo "router bench: $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 && -z ${GSWARM_BIN:-} ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja >&2
  ninja -C "$build_dir" ${NINJA_JOBS:+-j "$NINJA_JOBS"} gswarm >&2
fi
[[ -x $gswarm_bin ]] || { log "$gswarm_bin not found or not executable (build it, or set BUILD_DIR)"; exit 1; }
for tool in curl "$python"; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gswarm-router-bench.XXXXXX")
shm=$(mktemp -d /dev/shm/gswarm-router-bench.XXXXXX)
gswarm_pid=
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $gswarm_pid ]]; then
    if kill -0 "$gswarm_pid" 2>/dev/null; then
      # SIGTERM: the agent stops its instances (cleanup_on_shutdown), then exits.
      kill -TERM "$gswarm_pid" 2>/dev/null || true
      for _ in $(seq 300); do kill -0 "$gswarm_pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$gswarm_pid" 2>/dev/null || true
    fi
    wait "$gswarm_pid" 2>/dev/null || true
  fi
  # Any engine still running from this run (a killed gswarm cannot stop its own): its command
  # line names this run's model directories. Each runs in its own process group.
  local pid pgid
  for pid in $(pgrep -f "fake_engine.py --model ($tmp|$shm)/" || true); do
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ') || continue
    [[ -n $pgid && $pgid != 0 ]] && kill -KILL -- "-$pgid" 2>/dev/null || true
  done
  [[ -z ${GSWARM_LOG:-} || ! -f $tmp/gswarm.log ]] || cp "$tmp/gswarm.log" "$GSWARM_LOG" || true
  if [[ $rc -ne 0 && -s $tmp/gswarm.log ]]; then
    log "gswarm.log (last 20 lines):"
    tail -n 20 "$tmp/gswarm.log" >&2
  fi
  rm -rf "$tmp" "$shm"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $2 seconds for command $3... to succeed while process $1 lives.
wait_for() {
  local pid=$1 secs=$2 deadline
  shift 2
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# --- gswarm start, with the fake engine (no pacing) as its default engine ------------------------
read -r http_port grpc_port data_port < <("$python" -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

home=$tmp/home
models=$tmp/models
dram=$shm/dram
mkdir -p "$home" "$models" "$dram"
cat >"$home/.gswarm.conf" <<EOF
host:
  host: 127.0.0.1
  port: $http_port
  grpc_port: $grpc_port
  model_cache_dir: $models
  huggingface_cache_dir: $home/.cache/huggingface
  auto_discover_models: false
  cleanup_on_shutdown: true
  storage_devices:
    disk: {enabled: true, path: $models}
    dram: {enabled: true, path: $dram, max_size_gb: 1}
client:
  host_url: http://127.0.0.1:$http_port
  host_grpc: 127.0.0.1:$grpc_port
  model_cache_dir: $models
  dram_cache_dir: $dram
  dram_cache_size: 1
  data_port: $data_port
  default_engine: fake
  engines:
    fake:
      command: "$python $fake_engine --model {model_path} --served-model-name {model_name} --host {host} --port {port} --tokens-per-second 0 --disable-log-requests"
      health_path: /health
      ready_timeout_s: 60
EOF

gswarm_env=(env -u GSWARM_CONFIG -u GSWARM_HOST -u GSWARM_TOKEN -u GSWARM_LOG_LEVEL
  -u HF_TOKEN -u HF_ENDPOINT -u HF_HUB_OFFLINE -u HF_HUB_CACHE -u HUGGING_FACE_HUB_TOKEN
  HOME="$home" HF_HOME="$home/.cache/huggingface")
"${gswarm_env[@]}" "$gswarm_bin" --log-level warn start --bind 127.0.0.1 --port "$http_port" \
  --grpc-port "$grpc_port" --data-port "$data_port" --node-id bench-node >"$tmp/gswarm.log" 2>&1 &
gswarm_pid=$!
wait_for "$gswarm_pid" 30 curl -fsS --max-time 1 "http://127.0.0.1:$http_port/health" ||
  { log "gswarm did not answer http://127.0.0.1:$http_port/health within 30 s"; exit 1; }
wait_for "$gswarm_pid" 30 bash -c "'$gswarm_bin' --host 127.0.0.1:$grpc_port --json nodes | grep -q bench-node" ||
  { log "gswarm's local agent did not come online within 30 s"; exit 1; }
log "gswarm ready (pid $gswarm_pid, http $http_port, grpc $grpc_port)"

# --- two tiny models (the fake engine's own generator), registered and served ---------------------
cli=("${gswarm_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
for name in bench-a bench-b; do
  "$python" -c 'import sys; sys.path.insert(0, sys.argv[1]); import fake_engine as fe; fe.write_tiny_model(sys.argv[2])' \
    "$root/tests/support" "$tmp/src/$name"
  "${cli[@]}" download "file://$tmp/src/$name" --name "$name" >&2
  "${cli[@]}" serve "$name" --gpu cpu >&2
done

# --- measure --------------------------------------------------------------------------------------
"${gswarm_env[@]}" timeout --foreground 900 "$python" "$root/bench/router/measure.py" \
  --host "http://127.0.0.1:$http_port" --a bench-a --b bench-b "$@"
