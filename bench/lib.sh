# shellcheck shell=bash
# Shared scaffolding of the benchmark scripts (bench/*/run.sh), sourced after `set -euo pipefail`:
#   source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
#   bench_init NAME            # log prefix "NAME bench:", root, build_dir, gswarm_bin, python, trap
#   bench_build_gswarm         # cmake + ninja unless SKIP_BUILD=1 or GSWARM_BIN is set; checks it
#   bench_need_tools T...      # exits unless every tool is on PATH
#   bench_tmpdir VAR TEMPLATE  # mktemp -d, removed at exit
#   start_bg VAR LOG CMD...    # CMD in the background (LOG "-": no redirection); pid in VAR,
#                              # stopped at exit (TERM, then KILL after BENCH_STOP_TENTHS/10 s)
#   free_ports N               # N distinct free loopback ports on one line
#   wait_for PID SECS CMD...   # until CMD succeeds, while PID lives, at most SECS s
#   wait_http PID URL SECS WHAT, wait_node PID SECS NODE WHAT CLI...   # or log and exit 1
#   write_config FILE OPTIONS  # a gswarm config (see there)
#   gswarm_env VAR HOME [-u NAME]... [NAME=VALUE]...   # VAR=(env ... a clean environment)
#   bench_keep_log SRC DEST, bench_show_log FILE   # copy SRC at exit / tail FILE on failure
#   kill_groups_of REGEX       # SIGKILL the process groups of matching processes
# A script may define bench_on_exit, run at exit after its processes are stopped.

bench_lib_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_STOP_TENTHS=${BENCH_STOP_TENTHS:-100}
bench_pids=()
bench_stop_tenths=()
bench_dirs=()
bench_keep=()
bench_show=()

bench_init() {
  bench_name=$1
  root=$bench_lib_root
  build_dir=${BUILD_DIR:-$root/build}
  [[ $build_dir = /* ]] || build_dir=$root/$build_dir
  gswarm_bin=${GSWARM_BIN:-$build_dir/cli/gswarm}
  python=/usr/bin/python3
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

log() { echo "$bench_name bench: $*" >&2; }

bench_build_gswarm() {
  if [[ ${SKIP_BUILD:-0} != 1 && -z ${GSWARM_BIN:-} ]]; then
    cmake -S "$root" -B "$build_dir" -G Ninja >&2
    ninja -C "$build_dir" ${NINJA_JOBS:+-j "$NINJA_JOBS"} gswarm >&2
  fi
  [[ -x $gswarm_bin ]] || { log "$gswarm_bin not found or not executable (build it, or set BUILD_DIR)"; exit 1; }
}

bench_need_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
  done
}

bench_tmpdir() {
  local dir
  dir=$(mktemp -d "$2")
  bench_dirs+=("$dir")
  printf -v "$1" %s "$dir"
}

bench_keep_log() { [[ -z $2 ]] || bench_keep+=("$1" "$2"); }
bench_show_log() { bench_show+=("$1"); }

start_bg() {
  local var=$1 out=$2
  shift 2
  if [[ $out = - ]]; then
    "$@" &
  else
    "$@" >"$out" 2>&1 &
  fi
  bench_pids+=("$!")
  bench_stop_tenths+=("$BENCH_STOP_TENTHS")
  printf -v "$var" %s "$!"
}

# Stops one process we started: TERM, up to $2 tenths of a second, then KILL; always reaped.
stop_proc() {
  local pid=$1 tenths=${2:-100}
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # reached through the EXIT trap
bench_cleanup() {
  local rc=$? i f
  trap - EXIT INT TERM
  for ((i = ${#bench_pids[@]} - 1; i >= 0; i--)); do
    stop_proc "${bench_pids[i]}" "${bench_stop_tenths[i]}"
  done
  if declare -F bench_on_exit >/dev/null; then bench_on_exit || true; fi
  for ((i = 0; i < ${#bench_keep[@]}; i += 2)); do
    [[ ! -f ${bench_keep[i]} ]] || cp "${bench_keep[i]}" "${bench_keep[i + 1]}" || true
  done
  if [[ $rc -ne 0 ]]; then
    for f in "${bench_show[@]}"; do
      if [[ -s $f ]]; then
        log "$(basename "$f") (last 20 lines):"
        tail -n 20 "$f" >&2
      fi
    done
  fi
  [[ ${#bench_dirs[@]} -eq 0 ]] || rm -rf "${bench_dirs[@]}"
  exit "$rc"
}

# SIGKILLs the process group of every process whose command line matches the regex $1.
kill_groups_of() {
  local pid pgid
  for pid in $(pgrep -f "$1" || true); do
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ') || continue
    if [[ -n $pgid && $pgid != 0 ]]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
  done
}

# The sockets stay open until all ports are known, so no two can coincide.
free_ports() {
  "$python" -c '
import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))' "$1"
}

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

# wait_http PID URL SECS WHAT: until URL answers 2xx, or logs and exits.
wait_http() {
  wait_for "$1" "$3" curl -fsS --max-time 1 "$2" ||
    { log "$4 did not answer $2 within $3 s"; exit 1; }
}

# wait_node PID SECS NODE WHAT CLI...: until `CLI --json nodes` lists NODE, or logs and exits.
wait_node() {
  local pid=$1 secs=$2 node=$3 what=$4
  shift 4
  wait_for "$pid" "$secs" bash -c "$(printf '%q ' "$@") --json nodes | grep -q $(printf '%q' "$node")" ||
    { log "$what did not come online within $secs s"; exit 1; }
}

# gswarm_env VAR HOME [-u NAME]... [NAME=VALUE]...: VAR=(env ...) running a command in HOME with
# nothing from the caller's GSWARM_* or HF_* settings.
gswarm_env() {
  local -n env_out=$1
  local home=$2 unset=() set=()
  shift 2
  while (($#)); do
    if [[ $1 = -u ]]; then unset+=(-u "$2"); shift 2; else set+=("$1"); shift; fi
  done
  # shellcheck disable=SC2034  # a nameref: the caller's array
  env_out=(env -u GSWARM_CONFIG -u GSWARM_HOST -u GSWARM_TOKEN -u GSWARM_LOG_LEVEL
    -u HF_TOKEN -u HF_ENDPOINT -u HF_HUB_OFFLINE -u HF_HUB_CACHE -u HUGGING_FACE_HUB_TOKEN
    "${unset[@]}" HOME="$home" HF_HOME="$home/.cache/huggingface" "${set[@]}")
}

# write_config FILE --http P --grpc P --models DIR --dram DIR --dram-gb N --data-port P
#   [--home DIR (writes the host: section)] [--cleanup] [--node-id ID] [--client-extra TEXT]
write_config() {
  local file=$1 http='' grpc='' models='' dram='' gb='' data='' home='' cleanup='' node='' extra=''
  shift
  while (($#)); do
    case $1 in
      --http) http=$2 ;;
      --grpc) grpc=$2 ;;
      --models) models=$2 ;;
      --dram) dram=$2 ;;
      --dram-gb) gb=$2 ;;
      --data-port) data=$2 ;;
      --home) home=$2 ;;
      --node-id) node=$2 ;;
      --client-extra) extra=$2 ;;
      --cleanup) cleanup=1; shift; continue ;;
      *) log "write_config: unknown option $1"; exit 1 ;;
    esac
    shift 2
  done
  {
    if [[ -n $home ]]; then
      printf '%s\n' "host:" "  host: 127.0.0.1" "  port: $http" "  grpc_port: $grpc" \
        "  model_cache_dir: $models" "  huggingface_cache_dir: $home/.cache/huggingface" \
        "  auto_discover_models: false"
      [[ -z $cleanup ]] || echo "  cleanup_on_shutdown: true"
      printf '%s\n' "  storage_devices:" "    disk: {enabled: true, path: $models}" \
        "    dram: {enabled: true, path: $dram, max_size_gb: $gb}"
    fi
    printf '%s\n' "client:" "  host_url: http://127.0.0.1:$http" "  host_grpc: 127.0.0.1:$grpc"
    [[ -z $node ]] || echo "  node_id: $node"
    printf '%s\n' "  model_cache_dir: $models" "  dram_cache_dir: $dram" "  dram_cache_size: $gb" \
      "  data_port: $data"
    [[ -z $extra ]] || printf '%s\n' "$extra"
  } >"$file"
}

# bench_build_type VAR BINARY: appends --build-type (CMAKE_BUILD_TYPE of BINARY's build) to array
# VAR when BINARY lies in a CMake build tree.
bench_build_type() {
  local -n args_out=$1
  local cache
  cache=$(dirname "$(dirname "$2")")/CMakeCache.txt
  if [[ -f $cache ]]; then
    args_out+=(--build-type "$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$cache")")
  fi
}
