#!/usr/bin/env bash
# Installs every Debian 12 package GSwarm's build, tests and benchmarks need, and the dashboard's
# browser test's Node packages (tests/browser: playwright-core, driving Debian's chromium; no
# browser is downloaded).
# Idempotent and non-interactive: packages already present are skipped by apt, and npm ci runs
# only while tests/browser/node_modules is missing.
# Run as root (or with sudo available).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git clang-format clang
  # clang's sanitizer runtimes (ThreadSanitizer in tests/thread_safety_check.sh) are only a
  # Recommends of clang; setarch (util-linux) runs the TSan tests without address randomisation.
  libclang-rt-dev util-linux
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libyaml-cpp-dev libspdlog-dev libfmt-dev libcurl4-openssl-dev libsqlite3-dev
  libcpp-httplib-dev libssl-dev libcli11-dev nlohmann-json3-dev libboost-dev
  libgtest-dev libgmock-dev libbenchmark-dev libxxhash-dev
  python3 python3-grpcio python3-protobuf grpc-proto python3-yaml systemd
  curl procps openssl nginx-light wrk prometheus
  chromium
)
# Node for the dashboard's browser test: Debian's, unless a node is already on PATH.
if ! command -v node >/dev/null; then
  packages+=(nodejs npm)
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The browser test's packages, exactly as tests/browser/package-lock.json pins them (again when
# the lock file is newer than what npm last installed).
browser="$repo/tests/browser"
if [ ! -d "$browser/node_modules" ] ||
   [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  echo "install-deps: npm ci in tests/browser"
  (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
else
  echo "install-deps: tests/browser/node_modules already installed"
fi
