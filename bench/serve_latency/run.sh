#!/usr/bin/env bash
# Serve latency benchmark: time from a serve request to a ready engine, for the fake engine
# (tests/support/fake_engine.py --load-weights) on a model of MODEL_MB MiB, from disk and from
# DRAM, through gswarm (`gswarm serve` end to end, and REST POST /serve with wait) against
# starting the same engine command by hand and polling its /health the same way, in one run.
#   bash bench/serve_latency/run.sh            # builds build/, then a minute or two; table on stdout
#   bash bench/serve_latency/run.sh --json     # JSON on stdout, table and progress on stderr
#   bash bench/serve_latency/run.sh --repeat 20 --poll-ms 100
#
# Environment:
#   BUILD_DIR     build directory (default: build)
#   GSWARM_BIN    gswarm binary to run (default: $BUILD_DIR/cli/gswarm; nothing is built)
#   SKIP_BUILD=1  use the binary as it is
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   MODEL_MB      size of the model's weights, MiB (default 400)
#   REPEAT        runs per way and source, interleaved (default 10; median and p90 reported)
#   GSWARM_LOG    copy gswarm's log to this file at exit
#
# Everything it writes (gswarm's HOME and model cache, the generated model, the engines' logs)
# lives in a temporary directory on TMPDIR's filesystem (default /tmp), the DRAM tier in one
# under /dev/shm; both are removed at exit, with every process it started (gswarm start stops
# its instances on the way out: cleanup_on_shutdown).
# shellcheck disable=SC2154  # tmp, shm, *_pid, *_env: set by bench_tmpdir, start_bg, gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init serve_latency
model_mb=${MODEL_MB:-400}
name=bench-model
BENCH_STOP_TENTHS=300  # SIGTERM: the agent stops its instances (cleanup_on_shutdown), then exits.

bench_build_gswarm
bench_need_tools curl "$python"

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-serve-bench.XXXXXX"
bench_tmpdir shm /dev/shm/gswarm-serve-bench.XXXXXX
bench_keep_log "$tmp/gswarm.log" "${GSWARM_LOG:-}"
bench_show_log "$tmp/gswarm.log"
# Any engine still running from this run (a killed gswarm cannot stop its own): its command line
# names this run's model directories. Each runs in its own process group.
# shellcheck disable=SC2317  # reached through the EXIT trap
bench_on_exit() { kill_groups_of "fake_engine.py --model ($tmp|$shm)/"; }

# --- gswarm start, with the fake engine as its default engine ------------------------------------
read -r http_port grpc_port data_port < <(free_ports 3)

home=$tmp/home
models=$tmp/models
dram=$shm/dram
mkdir -p "$home" "$models" "$dram" "$tmp/work"
# The engine command is the one measure.py starts by hand (engine_argv there): keep them equal.
write_config "$home/.gswarm.conf" --home "$home" --cleanup --http "$http_port" --grpc "$grpc_port" \
  --models "$models" --dram "$dram" --dram-gb 4 --data-port "$data_port" --client-extra "\
  default_engine: fake
  engines:
    fake:
      command: \"$python $root/tests/support/fake_engine.py --model {model_path} --served-model-name {model_name} --host {host} --port {port} --load-weights\"
      health_path: /health
      ready_timeout_s: 120"

gswarm_env gswarm_env "$home"
cli=("${gswarm_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port")
start_bg gswarm_pid "$tmp/gswarm.log" "${gswarm_env[@]}" "$gswarm_bin" --log-level warn start \
  --bind 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port" --data-port "$data_port" \
  --node-id bench-node
wait_http "$gswarm_pid" "http://127.0.0.1:$http_port/health" 30 gswarm
wait_node "$gswarm_pid" 30 bench-node "gswarm's local agent" "${cli[@]}"
log "gswarm ready (pid $gswarm_pid, http $http_port, grpc $grpc_port)"

# --- the model: generated, downloaded onto the disk tier (file://), copied to DRAM ----------------
"$python" "$root/bench/serve_latency/measure.py" model --dir "$tmp/src/$name" --mb "$model_mb"
"${cli[@]}" download "file://$tmp/src/$name" --name "$name" >&2
"${cli[@]}" copy "$name" --from disk --to dram >&2
rm -rf "$tmp/src"  # the disk tier's copy is the one measured
[[ -f $models/$name/model.safetensors && -f $dram/$name/model.safetensors ]] ||
  { log "the model is not at $models/$name and $dram/$name"; exit 1; }

# --- measure --------------------------------------------------------------------------------------
measure_args=(--gswarm "$gswarm_bin" --grpc "127.0.0.1:$grpc_port"
  --http "http://127.0.0.1:$http_port" --name "$name" --disk-dir "$models/$name"
  --dram-dir "$dram/$name" --work "$tmp/work" --model-mb "$model_mb" --repeat "${REPEAT:-10}")
bench_build_type measure_args "$gswarm_bin"
"${gswarm_env[@]}" timeout --foreground 900 "$python" "$root/bench/serve_latency/measure.py" \
  measure "${measure_args[@]}" "$@"
