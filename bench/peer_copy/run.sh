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
# --multi (anywhere among the arguments): the striped download instead. The fake Hub serves one
# big file (MULTI_FILE_MB MiB) in two repos; nodes A (`gswarm start`), B and C (`gswarm client`)
# download the first repo's pinned commit (untimed), A alone the second's; then node D (`gswarm
# client`) is timed downloading the first (striped over A, B and C), the second (one peer, A) and
# curl fetching the big file from A's data port; then the fan-out pair: nodes C and D downloading
# the second at the same time (both from A; "2 targets at once") against two curls of the big file
# at once ("curl x2 at once"), with a goal line (2 targets over curl x2, goal >= 0.9). REPEAT
# rounds, medians (bench/peer_copy/multi.py, bench/peer_copy/fanout.py). --no-fanout (anywhere
# among the arguments, or MULTI_FANOUT=0) leaves the fan-out pair out.
#   bash bench/peer_copy/run.sh --multi                  # generation, setup, then 3 rounds
#   MULTI_FILE_MB=256 REPEAT=1 bash bench/peer_copy/run.sh --multi --json
#   bash bench/peer_copy/run.sh --multi --no-fanout      # the three rows without the fan-out pair
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; nothing is built)
#   SKIP_BUILD=1  use the binary as it is
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   SHARDS, SHARD_MB  the model: SHARDS safetensors files of SHARD_MB MiB (default 4 x 256)
#   REPEAT        runs per tool and mode, interleaved (default 3; best and median reported)
#   GSWARM_LOG    copy the two agents' logs to $GSWARM_LOG.a and $GSWARM_LOG.b at exit
#                 (--multi: .a .b .c .d, and the fake Hub's to $GSWARM_LOG.hub)
#   MULTI_FILE_MB --multi: size of the big file in MiB (default 1024)
#   MULTI_FANOUT  --multi: 0 leaves the fan-out pair out, as --no-fanout does (default 1)
#   DATA_DIR      --multi: where the fake Hub's repos are generated; kept and reused when set
#                 (default: in the temp dir)
#
# Everything it writes (a copy of the gswarm binary, both HOMEs, both model caches, curl's output;
# --multi: four of each, and the Hub's repos unless DATA_DIR is set) lives in one temporary
# directory on TMPDIR's filesystem (default /tmp), the DRAM tiers in one under /dev/shm; both are
# removed at exit (trap), after every process it started is stopped and reaped.
# shellcheck disable=SC2154  # tmp, shm, *_pid, *_env: set by bench_tmpdir, start_bg, gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init peer_copy
name=big
multi=0
fanout=${MULTI_FANOUT:-1}
no_fanout=0
args=()
for arg in "$@"; do
  case $arg in
    --multi) multi=1 ;;
    --no-fanout) fanout=0 no_fanout=1 ;;
    *) args+=("$arg") ;;
  esac
done
[[ $fanout = [01] ]] || { log "MULTI_FANOUT must be 0 or 1, not $fanout"; exit 1; }
((multi || !no_fanout)) || { log "--no-fanout goes with --multi"; exit 1; }

bench_build_gswarm
bench_need_tools curl sha256sum sync "$python"

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-peer-copy-bench.XXXXXX"
bench_tmpdir shm /dev/shm/gswarm-peer-copy-bench.XXXXXX
# A private copy of the binary (mtime kept): a rebuild of $gswarm_bin during the run cannot break
# the CLI calls made between runs.
build_bin=$gswarm_bin
cp -p "$gswarm_bin" "$tmp/gswarm"
gswarm_bin=$tmp/gswarm
for node in a b c d hub; do
  [[ -z ${GSWARM_LOG:-} ]] || bench_keep_log "$tmp/$node.log" "$GSWARM_LOG.$node"
  bench_show_log "$tmp/$node.log"
done
# A clean environment per node: its own HOME, nothing from the caller's GSWARM_* or HF_* settings.
no_proxy=(-u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY)

# --- --multi: four nodes and the fake Hub ---------------------------------------------------------
if ((multi)); then
  data_dir=${DATA_DIR:-$tmp/hub-data}
  mkdir -p "$data_dir" "$tmp/work"
  "$python" "$root/bench/peer_copy/measure.py" hub-repos --root "$data_dir" \
    --big-file-mb "${MULTI_FILE_MB:-1024}" --out "$tmp/repos.json"
  start_bg hub_pid "$tmp/hub.log" "$python" "$root/tests/support/fake_hf_hub.py" \
    --root "$data_dir" --no-build --ready-file "$tmp/hub.url"
  wait_for "$hub_pid" 30 test -s "$tmp/hub.url" ||
    { log "the fake Hub did not start within 30 s"; exit 1; }
  hub_url=$(<"$tmp/hub.url")

  read -r http_port grpc_port a_port b_port c_port d_port < <(free_ports 6)
  declare -A data_port=([a]=$a_port [b]=$b_port [c]=$c_port [d]=$d_port) pid=()
  for node in a b c d; do
    mkdir -p "$tmp/$node/home" "$tmp/$node/models" "$shm/$node"
    home_opt=()
    [[ $node != a ]] || home_opt=(--home "$tmp/a/home")
    write_config "$tmp/$node/home/.gswarm.conf" "${home_opt[@]}" --node-id "node-$node" \
      --http "$http_port" --grpc "$grpc_port" --models "$tmp/$node/models" --dram "$shm/$node" \
      --dram-gb 1 --data-port "${data_port[$node]}"
  done
  gswarm_env a_env "$tmp/a/home" "${no_proxy[@]}" HF_ENDPOINT="$hub_url"
  start_bg a_pid "$tmp/a.log" "${a_env[@]}" "$gswarm_bin" --log-level warn start \
    --bind 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port" --data-port "$a_port" \
    --node-id node-a
  pid[a]=$a_pid
  wait_http "$a_pid" "http://127.0.0.1:$http_port/health" 30 "gswarm start"
  cli=("${a_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
  wait_node "$a_pid" 30 node-a node-a "${cli[@]}"
  for node in b c d; do
    gswarm_env node_env "$tmp/$node/home" "${no_proxy[@]}" HF_ENDPOINT="$hub_url"
    # D at level info: measure.py reads its "download NAME from peer URL and N more" lines.
    level=warn
    [[ $node != d ]] || level=info
    start_bg node_pid "$tmp/$node.log" "${node_env[@]}" "$gswarm_bin" --log-level "$level" client
    pid[$node]=$node_pid
    wait_node "$node_pid" 30 "node-$node" "node-$node" "${cli[@]}"
  done
  log "fake Hub $hub_url (pid $hub_pid); node-a: gswarm start pid ${pid[a]} (http $http_port);" \
    "data ports A $a_port, B $b_port, C $c_port, D $d_port"

  measure_args=(--gswarm "$gswarm_bin" --grpc "127.0.0.1:$grpc_port"
    --http "http://127.0.0.1:$http_port" --repos "$tmp/repos.json" --d-log "$tmp/d.log"
    --work "$tmp/work" --repeat "${REPEAT:-3}")
  for node in a b c d; do
    measure_args+=(--node "node-$node" "${pid[$node]}" "$tmp/$node/models"
      "http://127.0.0.1:${data_port[$node]}")
  done
  bench_build_type measure_args "$build_bin"
  # In the background and waited for, so that a TERM or INT reaches the trap at once (which stops
  # it with the rest).
  # measure.py's options are the three rows'; the fan-out pair's switch travels as MULTI_FANOUT.
  start_bg measure_pid - "${a_env[@]}" MULTI_FANOUT="$fanout" timeout 1800 "$python" \
    "$root/bench/peer_copy/measure.py" multi "${measure_args[@]}" "${args[@]}"
  rc=0
  wait "$measure_pid" || rc=$?
  exit "$rc"
fi

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
# In the background and waited for, so that a TERM or INT reaches the trap at once.
start_bg measure_pid - "${a_env[@]}" timeout 900 "$python" "$root/bench/peer_copy/measure.py" \
  measure "${measure_args[@]}" "${args[@]}"
rc=0
wait "$measure_pid" || rc=$?
exit "$rc"
