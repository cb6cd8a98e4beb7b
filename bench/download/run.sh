#!/usr/bin/env bash
# Download benchmark: the same Hugging Face repos, served by the fake Hub on loopback, fetched by
# curl (one file after another, then sha256sum or openssl dgst, then fsync) and by
# `gswarm download` (which verifies every LFS file's sha256 while writing), in one run. Two
# shapes: one big file (test-org/big-model) and a sharded multi-file repo
# (bench-org/sharded-model). bench/README.md describes the columns and holds results.
#   bash bench/download/run.sh            # builds build/, then about 1 min; table on stdout
#   bash bench/download/run.sh --json     # JSON on stdout, table and progress on stderr
#   bash bench/download/run.sh --repeat 5 --shapes multi
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; nothing is built)
#   SKIP_BUILD=1  use the binary as it is
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   BIG_FILE_MB   size of the single file, MiB (default 512)
#   SHARDS, SHARD_MB  the multi-file repo: SHARDS files of SHARD_MB MiB (default 8 x 64)
#   REPEAT        runs per tool and shape, interleaved (default 3; best and median reported)
#   DATA_DIR      where the generated repos live; kept and reused when set (default: a temp dir)
#   HUB_NODELAY=0 run the fake Hub without TCP_NODELAY, as the tests do: about 40 ms more per
#                 response (bench/download/hub.py says why)
#   GSWARM_LOG, HUB_LOG  copy gswarm's / the fake Hub's log to this file at exit
#
# Everything else (gswarm's HOME, its model cache, curl's output) lives in a temporary directory
# on TMPDIR's filesystem (default /tmp), removed at exit along with the processes it started.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
[[ $build_dir = /* ]] || build_dir=$root/$build_dir
gswarm_bin=${GSWARM_BIN:-$build_dir/cli/gswarm}
python=/usr/bin/python3

log() { echo "download bench: $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 && -z ${GSWARM_BIN:-} ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja >&2
  ninja -C "$build_dir" ${NINJA_JOBS:+-j "$NINJA_JOBS"} gswarm >&2
fi
if [[ ! -x $gswarm_bin ]]; then
  log "$gswarm_bin not found or not executable (build it, or set BUILD_DIR)"
  exit 1
fi
for tool in curl sha256sum openssl sync "$python"; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gswarm-download-bench.XXXXXX")
hub_pid=
gswarm_pid=
measure_pid=
# Stops one process we started: TERM, up to 10 s, then KILL; always reaped.
stop_proc() {
  local pid=$1
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_proc "$measure_pid"
  stop_proc "$gswarm_pid"
  stop_proc "$hub_pid"
  [[ -z ${GSWARM_LOG:-} || ! -f $tmp/gswarm.log ]] || cp "$tmp/gswarm.log" "$GSWARM_LOG" || true
  [[ -z ${HUB_LOG:-} || ! -f $tmp/hub.log ]] || cp "$tmp/hub.log" "$HUB_LOG" || true
  if [[ $rc -ne 0 ]]; then
    for f in gswarm.log hub.log; do
      if [[ -s $tmp/$f ]]; then
        log "$f (last 20 lines):"
        tail -n 20 "$tmp/$f" >&2
      fi
    done
  fi
  rm -rf "$tmp"
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

# --- the repos and the fake Hub -------------------------------------------------------------------
data_dir=${DATA_DIR:-$tmp/hub}
mkdir -p "$data_dir"
log "generating repos in $data_dir"
"$python" "$root/bench/download/make_repo.py" --root "$data_dir" \
  --big-file-mb "${BIG_FILE_MB:-512}" --shards "${SHARDS:-8}" --shard-mb "${SHARD_MB:-64}" \
  --out "$tmp/repos.json"

hub_prog=$root/bench/download/hub.py  # the fake Hub with TCP_NODELAY (see there)
[[ ${HUB_NODELAY:-1} = 1 ]] || hub_prog=$root/tests/support/fake_hf_hub.py
"$python" "$hub_prog" --root "$data_dir" --no-build \
  --ready-file "$tmp/hub.url" >"$tmp/hub.log" 2>&1 &
hub_pid=$!
if ! wait_for "$hub_pid" 30 test -s "$tmp/hub.url"; then
  log "the fake Hub did not start within 30 s"
  exit 1
fi
hub_url=$(<"$tmp/hub.url")
log "fake Hub at $hub_url (pid $hub_pid)"

# --- gswarm start ---------------------------------------------------------------------------------
# The three sockets stay open until all ports are known, so no two can coincide.
read -r http_port grpc_port data_port < <("$python" -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

home=$tmp/home
models=$tmp/models
mkdir -p "$home" "$models" "$tmp/dram"
cat >"$home/.gswarm.conf" <<EOF
host:
  host: 127.0.0.1
  port: $http_port
  grpc_port: $grpc_port
  model_cache_dir: $models
  huggingface_cache_dir: $home/.cache/huggingface
  auto_discover_models: false
  storage_devices:
    disk: {enabled: true, path: $models}
    dram: {enabled: true, path: $tmp/dram, max_size_gb: 1}
client:
  host_url: http://127.0.0.1:$http_port
  host_grpc: 127.0.0.1:$grpc_port
  model_cache_dir: $models
  dram_cache_dir: $tmp/dram
  dram_cache_size: 1
  data_port: $data_port
EOF

# A clean environment for gswarm: its own HOME, the fake Hub, nothing from the caller's GSWARM_* or
# HF_* settings.
gswarm_env=(env -u GSWARM_CONFIG -u GSWARM_HOST -u GSWARM_TOKEN -u GSWARM_LOG_LEVEL
  -u HF_TOKEN -u HF_HUB_OFFLINE -u HF_HUB_CACHE -u HUGGING_FACE_HUB_TOKEN
  HOME="$home" HF_HOME="$home/.cache/huggingface" HF_ENDPOINT="$hub_url")
"${gswarm_env[@]}" "$gswarm_bin" --log-level warn start --bind 127.0.0.1 --port "$http_port" \
  --grpc-port "$grpc_port" --data-port "$data_port" --node-id bench-node >"$tmp/gswarm.log" 2>&1 &
gswarm_pid=$!
if ! wait_for "$gswarm_pid" 30 curl -fsS --max-time 1 "http://127.0.0.1:$http_port/health"; then
  log "gswarm did not answer http://127.0.0.1:$http_port/health within 30 s"
  exit 1
fi
# The local agent registers over the agent link shortly after the host is up.
if ! wait_for "$gswarm_pid" 30 "${gswarm_env[@]}" bash -c \
  "'$gswarm_bin' --host 127.0.0.1:$grpc_port --json nodes | grep -q bench-node"; then
  log "gswarm's local agent did not come online within 30 s"
  exit 1
fi
log "gswarm ready (pid $gswarm_pid, grpc 127.0.0.1:$grpc_port)"

# --- measure --------------------------------------------------------------------------------------
measure_args=(--repos "$tmp/repos.json" --hub-url "$hub_url" --hub-pid "$hub_pid"
  --gswarm "$gswarm_bin" --grpc "127.0.0.1:$grpc_port" --gswarm-pid "$gswarm_pid"
  --model-dir "$models" --work "$tmp/work" --repeat "${REPEAT:-3}"
  --hub-nodelay "${HUB_NODELAY:-1}")
cache=$(dirname "$(dirname "$gswarm_bin")")/CMakeCache.txt
if [[ -f $cache ]]; then
  measure_args+=(--build-type "$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")")
fi
# In the background and waited for, so that a TERM or INT reaches the trap at once.
"${gswarm_env[@]}" timeout 900 "$python" "$root/bench/download/measure.py" \
  "${measure_args[@]}" "$@" &
measure_pid=$!
wait "$measure_pid"
