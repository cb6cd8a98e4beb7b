#!/usr/bin/env bash
# Runs bench/agents_scale against a real `gswarm host` on free loopback ports, in a throwaway HOME
# so nothing touches the user's config or caches. Arguments are passed to agents_scale, e.g.
#   bash bench/run_agents_scale.sh --counts 100,1000 --json > results.json
#
# Environment:
#   BUILD_DIR     build directory holding both binaries (default: build)
#   GSWARM_BIN    host binary to run (default: $BUILD_DIR/cli/gswarm); when set, only
#                 agents_scale is built
#   SKIP_BUILD=1  use the binaries as they are
#   AUTH_TOKEN    cluster token for the host config and the agents (default: none)
#   NINJA_JOBS    ninja -j (default: ninja's own)
#   HOST_LOG      copy the host's log (run at --log-level warn) to this file at exit
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
[[ $build_dir = /* ]] || build_dir=$root/$build_dir
gswarm_bin=${GSWARM_BIN:-$build_dir/cli/gswarm}
token=${AUTH_TOKEN:-}

log() { echo "run_agents_scale: $*" >&2; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  targets=(agents_scale)
  [[ -n ${GSWARM_BIN:-} ]] || targets+=(gswarm)
  cmake -S "$root" -B "$build_dir" -G Ninja >&2
  ninja -C "$build_dir" ${NINJA_JOBS:+-j "$NINJA_JOBS"} "${targets[@]}" >&2
fi
bench_bin=$build_dir/bench/agents_scale
for bin in "$gswarm_bin" "$bench_bin"; do
  [[ -x $bin ]] || { log "$bin not found or not executable (build it, or set BUILD_DIR)"; exit 1; }
done

# Real agents each hold their own TCP connection, a descriptor on the host: a run that maps
# agents one-to-one onto connections (--streams-per-channel 1) needs far more than the usual soft
# limit of 1024.
want_fds=65536
hard_fds=$(ulimit -Hn)
if [[ $hard_fds != unlimited && $hard_fds -lt $want_fds ]]; then
  log "hard fd limit is $hard_fds (< $want_fds); runs with one connection per agent may fail above that"
  want_fds=$hard_fds
fi
ulimit -n "$want_fds"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gswarm-agents-scale.XXXXXX")
host_pid=
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
  local rc=$?
  if [[ -n $host_pid ]] && kill -0 "$host_pid" 2>/dev/null; then
    kill -TERM "$host_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$host_pid" 2>/dev/null || true
  fi
  if [[ -n $host_pid ]]; then wait "$host_pid" 2>/dev/null || true; fi
  if [[ -n ${HOST_LOG:-} && -f $tmp/host.log ]]; then
    cp "$tmp/host.log" "$HOST_LOG" || true
  fi
  if [[ $rc -ne 0 && -s $tmp/host.log ]]; then
    log "host log (last 20 lines):"
    tail -n 20 "$tmp/host.log" >&2
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both sockets stay open until both ports are known, so the two can never coincide.
read -r http_port grpc_port < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')

export HOME=$tmp
config=$tmp/gswarm.conf
cat >"$config" <<EOF
host:
  host: 127.0.0.1
  port: $http_port
  grpc_port: $grpc_port
  auth_token: "$token"
EOF

log "starting $gswarm_bin host (http $http_port, grpc $grpc_port, HOME=$tmp)"
"$gswarm_bin" host --config "$config" --log-level warn >"$tmp/host.log" 2>&1 &
host_pid=$!

deadline=$((SECONDS + 30))
until curl -fsS --max-time 1 "http://127.0.0.1:$http_port/health" >/dev/null 2>&1; do
  if ! kill -0 "$host_pid" 2>/dev/null; then
    log "host exited before answering /health"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    log "host did not answer http://127.0.0.1:$http_port/health within 30 s"
    exit 1
  fi
  sleep 0.1
done
log "host ready (pid $host_pid)"

bench_args=(--target "127.0.0.1:$grpc_port" --host-pid "$host_pid"
  --metrics-url "http://127.0.0.1:$http_port")
[[ -z $token ]] || bench_args+=(--token "$token")
rc=0
timeout --foreground 600 "$bench_bin" "${bench_args[@]}" "$@" || rc=$?

if ! kill -0 "$host_pid" 2>/dev/null; then
  log "host exited during the benchmark"
  [[ $rc -ne 0 ]] || rc=1
fi
exit "$rc"
