#!/usr/bin/env bash
# Download benchmark: the same Hugging Face repos, served by the fake Hub on loopback, fetched by
# curl (one file after another, then sha256sum or openssl dgst, then fsync) and by
# `gswarm download` (which verifies every LFS file's sha256 while writing), in one run, with
# `openssl dgst -sha256` of the same bytes alone (one core) as the limit gswarm is held against.
# Two shapes: one big file (test-org/big-model) and a sharded multi-file repo
# (bench-org/sharded-model). Then the resume step: a paced download of the big file, `kill -9` of
# `gswarm start` mid-file, a restart, and the bytes the agent re-read to restore its hash state.
# Last the segments step: the Hub caps each connection to the big file (every response paced), and
# gswarm with client.download_connections 1, gswarm restarted with 4, and curl fetch it.
# bench/README.md describes the columns and holds results.
#   bash bench/download/run.sh            # builds build/, then about 3.5 min; table on stdout
#   bash bench/download/run.sh --json     # JSON on stdout, table and progress on stderr
#   bash bench/download/run.sh --repeat 5 --shapes multi --no-resume
#   bash bench/download/run.sh --resume-at-mb 300 --resume-rate-mb 32   # the resume step's knobs
#   bash bench/download/run.sh --no-segments   # or --segment-rate-mb 24 --segment-connections 4
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
#   GSWARM_LOG, HUB_LOG  copy gswarm's / the fake Hub's log to this file at exit
#
# Everything else (gswarm's HOME, its model cache, curl's output) lives in a temporary directory
# on TMPDIR's filesystem (default /tmp), removed at exit along with the processes it started.
# shellcheck disable=SC2154  # tmp, shm, *_pid, *_env: set by bench_tmpdir, start_bg, gswarm_env
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
bench_init download

bench_build_gswarm
bench_need_tools curl sha256sum openssl sync "$python"

bench_tmpdir tmp "${TMPDIR:-/tmp}/gswarm-download-bench.XXXXXX"
bench_keep_log "$tmp/gswarm.log" "${GSWARM_LOG:-}"
bench_keep_log "$tmp/hub.log" "${HUB_LOG:-}"
bench_show_log "$tmp/gswarm.log"
bench_show_log "$tmp/hub.log"

# --- the repos and the fake Hub -------------------------------------------------------------------
data_dir=${DATA_DIR:-$tmp/hub}
mkdir -p "$data_dir"
log "generating repos in $data_dir"
"$python" "$root/bench/download/make_repo.py" --root "$data_dir" \
  --big-file-mb "${BIG_FILE_MB:-512}" --shards "${SHARDS:-8}" --shard-mb "${SHARD_MB:-64}" \
  --out "$tmp/repos.json"

hub_prog=$root/tests/support/fake_hf_hub.py
start_bg hub_pid "$tmp/hub.log" "$python" "$hub_prog" --root "$data_dir" --no-build \
  --ready-file "$tmp/hub.url"
if ! wait_for "$hub_pid" 30 test -s "$tmp/hub.url"; then
  log "the fake Hub did not start within 30 s"
  exit 1
fi
hub_url=$(<"$tmp/hub.url")
log "fake Hub at $hub_url (pid $hub_pid)"

# --- gswarm start ---------------------------------------------------------------------------------
read -r http_port grpc_port data_port < <(free_ports 3)

home=$tmp/home
models=$tmp/models
mkdir -p "$home" "$models" "$tmp/dram"
# One connection per file, whatever the default: the segments step restarts gswarm start with
# GSWARM_CLIENT_DOWNLOAD_CONNECTIONS=4 to compare.
write_config "$home/.gswarm.conf" --home "$home" --http "$http_port" --grpc "$grpc_port" \
  --models "$models" --dram "$tmp/dram" --dram-gb 1 --data-port "$data_port" \
  --client-extra "  download_connections: 1"

# A clean environment for gswarm: its own HOME, the fake Hub, nothing from the caller's GSWARM_* or
# HF_* settings.
gswarm_env gswarm_env "$home" -u GSWARM_CLIENT_DOWNLOAD_CONNECTIONS HF_ENDPOINT="$hub_url"
start_args=(start --bind 127.0.0.1 --port "$http_port" --grpc-port "$grpc_port"
  --data-port "$data_port" --node-id bench-node)
start_bg gswarm_pid "$tmp/gswarm.log" "${gswarm_env[@]}" "$gswarm_bin" --log-level "${GSWARM_LOG_LEVEL:-warn}" \
  "${start_args[@]}"
# The resume step (measure.py) kills that process and starts this one, the same at log level info
# (the agent's "resuming at byte N (re-read M bytes ...)" line), appending to the same log; the
# segments step stops whichever runs and starts this one with GSWARM_CLIENT_DOWNLOAD_CONNECTIONS
# added before the binary. It is measure.py's child, stopped by it; should measure.py die first,
# bench_on_exit stops it by the pid it wrote.
printf '%s\0' "${gswarm_env[@]}" "$gswarm_bin" --log-level info "${start_args[@]}" \
  >"$tmp/gswarm-restart.argv"
restart_pid_file=$tmp/gswarm-restart.pid
# shellcheck disable=SC2317  # reached through bench_cleanup
bench_on_exit() {
  local pid
  [[ -n ${restart_pid_file:-} && -s $restart_pid_file ]] || return 0
  pid=$(<"$restart_pid_file")
  # Only while that pid is still a gswarm (measure.py removes the file once it stopped it).
  [[ $(readlink -f "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$gswarm_bin")" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
wait_http "$gswarm_pid" "http://127.0.0.1:$http_port/health" 30 gswarm
# The local agent registers over the agent link shortly after the host is up.
wait_node "$gswarm_pid" 30 bench-node "gswarm's local agent" \
  "${gswarm_env[@]}" "$gswarm_bin" --host "127.0.0.1:$grpc_port"
log "gswarm ready (pid $gswarm_pid, grpc 127.0.0.1:$grpc_port)"

# --- measure --------------------------------------------------------------------------------------
measure_args=(--repos "$tmp/repos.json" --hub-url "$hub_url" --hub-pid "$hub_pid"
  --gswarm "$gswarm_bin" --grpc "127.0.0.1:$grpc_port" --gswarm-pid "$gswarm_pid"
  --model-dir "$models" --work "$tmp/work" --repeat "${REPEAT:-3}"
  --http-url "http://127.0.0.1:$http_port" --restart-argv "$tmp/gswarm-restart.argv"
  --restart-pid-file "$restart_pid_file" --gswarm-log "$tmp/gswarm.log")
bench_build_type measure_args "$gswarm_bin"
# In the background and waited for, so that a TERM or INT reaches the trap at once.
start_bg measure_pid - "${gswarm_env[@]}" timeout 900 "$python" "$root/bench/download/measure.py" \
  "${measure_args[@]}" "$@"
# Its stderr away: bash would report the resume step's kill -9 of gswarm start as "Killed" here.
rc=0
wait "$measure_pid" 2>/dev/null || rc=$?
((rc < 128)) || log "measure.py ended by signal $((rc - 128))"
exit "$rc"
