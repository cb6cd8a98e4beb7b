#!/usr/bin/env bash
# Peer copy benchmark: a generated multi-file model on node A (`gswarm start`), copied to node B
# (`gswarm client`, its own HOME, model cache and data port) over loopback by GSwarm's cross-node
# copy (REST POST /copy, wait), against curl fetching the same files from A's data port (the very
# URLs B's downloader asks for), then sha256sum, then fsync, in one run. Warm (A's files in the
# page cache) and, where /proc/sys/vm/drop_caches is writable, cold (caches dropped before each run).
#   bash bench/peer_copy/run.sh            # builds build/, then ~2 min; table on stdout
#   bash bench/peer_copy/run.sh --json     # JSON on stdout, table and progress on stderr
#   bash bench/peer_copy/run.sh --repeat 5 --modes warm
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; nothing is built)
#   SKIP_BUILD=1  use the binary as it is
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   SHARDS, SHARD_MB  the model: SHARDS safetensors files of SHARD_MB MiB (default 4 x 256)
#   REPEAT        runs per tool and mode, interleaved (default 3; best and median reported)
#   GSWARM_LOG    copy the two agents' logs to $GSWARM_LOG.a and $GSWARM_LOG.b at exit
#
# Everything it writes (a copy of the gswarm binary, both HOMEs, both model caches, curl's output)
# lives in one temporary directory on TMPDIR's filesystem (default /tmp), the two DRAM tiers in one
# under /dev/shm; both are removed at exit (trap), after both gswarm processes are stopped and
# reaped.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
[[ $build_dir = /* ]] || build_dir=$root/$build_dir
gswarm_bin=${GSWARM_BIN:-$build_dir/cli/gswarm}
python=/usr/bin/python3
name=big

log() { echo "peer_copy bench: $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 && -z ${GSWARM_BIN:-} ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja >&2
  ninja -C "$build_dir" ${NINJA_JOBS:+-j "$NINJA_JOBS"} gswarm >&2
fi
[[ -x $gswarm_bin ]] || { log "$gswarm_bin not found or not executable (build it, or set BUILD_DIR)"; exit 1; }
for tool in curl sha256sum sync "$python"; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gswarm-peer-copy-bench.XXXXXX")
shm=$(mktemp -d /dev/shm/gswarm-peer-copy-bench.XXXXXX)
# A private copy of the binary (mtime kept): a rebuild of $gswarm_bin during the run cannot break
# the CLI calls made between runs.
build_cache=$(dirname "$(dirname "$gswarm_bin")")/CMakeCache.txt
cp -p "$gswarm_bin" "$tmp/gswarm"
gswarm_bin=$tmp/gswarm
a_pid=
b_pid=
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
  stop_proc "$b_pid"
  stop_proc "$a_pid"
  if [[ -n ${GSWARM_LOG:-} ]]; then
    [[ ! -f $tmp/a.log ]] || cp "$tmp/a.log" "$GSWARM_LOG.a" || true
    [[ ! -f $tmp/b.log ]] || cp "$tmp/b.log" "$GSWARM_LOG.b" || true
  fi
  if [[ $rc -ne 0 ]]; then
    for f in a.log b.log; do
      if [[ -s $tmp/$f ]]; then
        log "$f (last 20 lines):"
        tail -n 20 "$tmp/$f" >&2
      fi
    done
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

# --- two nodes: A is `gswarm start` (host + agent), B is `gswarm client` -------------------------
# The sockets stay open until all ports are known, so no two can coincide.
read -r http_port grpc_port a_data_port b_data_port < <("$python" -c '
import socket
s = [socket.socket() for _ in range(4)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')

a_home=$tmp/a/home
a_models=$tmp/a/models
b_home=$tmp/b/home
b_models=$tmp/b/models
mkdir -p "$a_home" "$a_models" "$b_home" "$b_models" "$shm/a" "$shm/b" "$tmp/work"
cat >"$a_home/.gswarm.conf" <<CONF
host:
  host: 127.0.0.1
  port: $http_port
  grpc_port: $grpc_port
  model_cache_dir: $a_models
  huggingface_cache_dir: $a_home/.cache/huggingface
  auto_discover_models: false
  storage_devices:
    disk: {enabled: true, path: $a_models}
    dram: {enabled: true, path: $shm/a, max_size_gb: 1}
client:
  host_url: http://127.0.0.1:$http_port
  host_grpc: 127.0.0.1:$grpc_port
  node_id: node-a
  model_cache_dir: $a_models
  dram_cache_dir: $shm/a
  dram_cache_size: 1
  data_port: $a_data_port
CONF
cat >"$b_home/.gswarm.conf" <<CONF
client:
  host_url: http://127.0.0.1:$http_port
  host_grpc: 127.0.0.1:$grpc_port
  node_id: node-b
  model_cache_dir: $b_models
  dram_cache_dir: $shm/b
  dram_cache_size: 1
  data_port: $b_data_port
CONF

# A clean environment per node: its own HOME, nothing from the caller's GSWARM_* or HF_* settings.
clean_env=(env -u GSWARM_CONFIG -u GSWARM_HOST -u GSWARM_TOKEN -u GSWARM_LOG_LEVEL
  -u HF_TOKEN -u HF_ENDPOINT -u HF_HUB_OFFLINE -u HF_HUB_CACHE -u HUGGING_FACE_HUB_TOKEN
  -u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY)
a_env=("${clean_env[@]}" HOME="$a_home" HF_HOME="$a_home/.cache/huggingface")
b_env=("${clean_env[@]}" HOME="$b_home" HF_HOME="$b_home/.cache/huggingface")

"${a_env[@]}" "$gswarm_bin" --log-level warn start --bind 127.0.0.1 --port "$http_port" \
  --grpc-port "$grpc_port" --data-port "$a_data_port" --node-id node-a >"$tmp/a.log" 2>&1 &
a_pid=$!
wait_for "$a_pid" 30 curl -fsS --max-time 1 "http://127.0.0.1:$http_port/health" ||
  { log "gswarm start did not answer http://127.0.0.1:$http_port/health within 30 s"; exit 1; }
cli=("${a_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
wait_for "$a_pid" 30 bash -c "$(printf '%q ' "${cli[@]}") --json nodes | grep -q node-a" ||
  { log "node-a did not come online within 30 s"; exit 1; }

"${b_env[@]}" "$gswarm_bin" --log-level warn client >"$tmp/b.log" 2>&1 &
b_pid=$!
wait_for "$b_pid" 30 bash -c "$(printf '%q ' "${cli[@]}") --json nodes | grep -q node-b" ||
  { log "node-b did not come online within 30 s"; exit 1; }
log "node-a: gswarm start pid $a_pid (http $http_port, data $a_data_port); node-b: gswarm client pid $b_pid (data $b_data_port)"

# --- the model: generated, imported onto A's disk tier (file://), the source removed -------------
"$python" "$root/bench/peer_copy/measure.py" model --dir "$tmp/src/$name" \
  --shards "${SHARDS:-4}" --shard-mb "${SHARD_MB:-256}"
"${cli[@]}" download "file://$tmp/src/$name" --name "$name" --node node-a >&2
rm -rf "$tmp/src"  # A's disk tier's copy is the one served
[[ -f $a_models/$name/.gswarm/manifest.json ]] ||
  { log "the model is not at $a_models/$name (no manifest)"; exit 1; }

# --- measure --------------------------------------------------------------------------------------
measure_args=(--gswarm "$gswarm_bin" --grpc "127.0.0.1:$grpc_port"
  --http "http://127.0.0.1:$http_port" --data-url "http://127.0.0.1:$a_data_port"
  --name "$name" --a-pid "$a_pid" --b-pid "$b_pid" --a-dir "$a_models/$name"
  --b-dir "$b_models/$name" --work "$tmp/work" --repeat "${REPEAT:-3}")
if [[ -f $build_cache ]]; then
  measure_args+=(--build-type "$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build_cache")")
fi
"${a_env[@]}" timeout --foreground 900 "$python" "$root/bench/peer_copy/measure.py" \
  measure "${measure_args[@]}" "$@"
