#!/usr/bin/env bash
# Peer copy benchmark: a generated multi-file model on node A (`gswarm start`), copied to node B
# (`gswarm client`, its own HOME, model cache and data port) over loopback by GSwarm's cross-node
# copy (REST POST /copy, wait), against curl fetching the same files from A's data port (the very
# URLs B's downloader asks for), then sha256sum, then fsync, in one run. Warm (A's files in the
# page cache) and, where /proc/sys/vm/drop_caches is writable, cold (caches dropped before each run).
#   bash bench/peer_copy/run.sh            # builds build/, then a minute or two; table on stdout
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
# shellcheck disable=SC2154  # tmp, shm, *_pid, *_env: set by bench_tmpdir, start_bg, gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init peer_copy
name=big

bench_build_gswarm
bench_need_tools curl sha256sum sync "$python"

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-peer-copy-bench.XXXXXX"
bench_tmpdir shm /dev/shm/gswarm-peer-copy-bench.XXXXXX
# A private copy of the binary (mtime kept): a rebuild of $gswarm_bin during the run cannot break
# the CLI calls made between runs.
build_bin=$gswarm_bin
cp -p "$gswarm_bin" "$tmp/gswarm"
gswarm_bin=$tmp/gswarm
if [[ -n ${GSWARM_LOG:-} ]]; then
  bench_keep_log "$tmp/a.log" "$GSWARM_LOG.a"
  bench_keep_log "$tmp/b.log" "$GSWARM_LOG.b"
fi
bench_show_log "$tmp/a.log"
bench_show_log "$tmp/b.log"

# --- two nodes: A is `gswarm start` (host + agent), B is `gswarm client` -------------------------
read -r http_port grpc_port a_data_port b_data_port < <(free_ports 4)

a_home=$tmp/a/home
a_models=$tmp/a/models
b_home=$tmp/b/home
b_models=$tmp/b/models
mkdir -p "$a_home" "$a_models" "$b_home" "$b_models" "$shm/a" "$shm/b" "$tmp/work"
write_config "$a_home/.gswarm.conf" --home "$a_home" --node-id node-a --http "$http_port" \
  --grpc "$grpc_port" --models "$a_models" --dram "$shm/a" --dram-gb 1 --data-port "$a_data_port"
write_config "$b_home/.gswarm.conf" --node-id node-b --http "$http_port" \
  --grpc "$grpc_port" --models "$b_models" --dram "$shm/b" --dram-gb 1 --data-port "$b_data_port"

# A clean environment per node: its own HOME, nothing from the caller's GSWARM_* or HF_* settings.
no_proxy=(-u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY)
gswarm_env a_env "$a_home" "${no_proxy[@]}"
gswarm_env b_env "$b_home" "${no_proxy[@]}"

start_bg a_pid "$tmp/a.log" "${a_env[@]}" "$gswarm_bin" --log-level warn start --bind 127.0.0.1 \
  --port "$http_port" --grpc-port "$grpc_port" --data-port "$a_data_port" --node-id node-a
wait_http "$a_pid" "http://127.0.0.1:$http_port/health" 30 "gswarm start"
cli=("${a_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
wait_node "$a_pid" 30 node-a node-a "${cli[@]}"

start_bg b_pid "$tmp/b.log" "${b_env[@]}" "$gswarm_bin" --log-level warn client
wait_node "$b_pid" 30 node-b node-b "${cli[@]}"
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
bench_build_type measure_args "$build_bin"
"${a_env[@]}" timeout --foreground 900 "$python" "$root/bench/peer_copy/measure.py" \
  measure "${measure_args[@]}" "$@"
