#!/usr/bin/env bash
# Builds the whole tree (libraries, binaries, unit tests, benchmarks) with clang and
# -Wthread-safety as an error: every ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED in the code is
# checked at compile time, as LevelDB does. GCC, the README build, ignores those annotations.
#
# Run from the repository root: bash tests/thread_safety_check.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build-clang}"
command -v clang++ >/dev/null || { echo "thread-safety check: clang++ is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
cmake -S . -B "$build_dir" -G Ninja \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DGSWARM_BUILD_TESTS=ON -DGSWARM_BUILD_BENCH=ON \
  "-DCMAKE_CXX_FLAGS=-Wthread-safety -Werror=thread-safety" >/dev/null
cmake --build "$build_dir" -j2
echo "thread-safety check: clean (clang $(clang++ -dumpversion), -Wthread-safety -Werror=thread-safety)"
