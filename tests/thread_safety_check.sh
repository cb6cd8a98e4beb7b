#!/usr/bin/env bash
# The thread-safety checks, in one clang build:
#  1. -Wthread-safety as an error: every ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED in the code
#     is checked at compile time over the whole tree (libraries, binaries, tests, benchmarks), as
#     LevelDB does. GCC, the README build, ignores those annotations.
#  2. ThreadSanitizer: the same build is instrumented (-fsanitize=thread) and runs every unit test
#     and the serving-path integration suites (router, serving, sleep, events with its host
#     restarts, front_door with its 1,000 streams: real gswarm processes). Any report fails.
#     common/mutex.h swaps Abseil's mutex for a pthread-based one in this build (GSWARM_TSAN_SYNC),
#     since Debian's Abseil is not TSan-built; tests/tsan.supp says what is suppressed and why.
#
# Run from the repository root: bash tests/thread_safety_check.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build-clang}"
command -v clang++ >/dev/null || { echo "thread-safety check: clang++ is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
tsan="-fsanitize=thread -DGSWARM_TSAN_SYNC"
cmake -S . -B "$build_dir" -G Ninja \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DGSWARM_BUILD_TESTS=ON -DGSWARM_BUILD_BENCH=ON \
  "-DCMAKE_CXX_FLAGS=-Wthread-safety -Werror=thread-safety $tsan" \
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread" >/dev/null
cmake --build "$build_dir" -j2
echo "thread-safety check: clean (clang $(clang++ -dumpversion), -Wthread-safety -Werror=thread-safety)"

# Every process a test starts (the gswarm host and agents too) writes its reports under $reports.
reports="$(mktemp -d)"
trap 'rm -rf "$reports"' EXIT
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp log_path=$reports/tsan second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
# Without address-space randomisation: clang 14's TSan runtime predates the kernels' larger mmap
# entropy and can fail to map its shadow memory otherwise.
norandom=(setarch "$(uname -m)" -R)
# Instrumented binaries run several times slower: the few promises timed in tests (an agent back
# within 2 s of a restarted host) are scaled by this.
export GSWARM_TEST_TIME_SCALE="${GSWARM_TEST_TIME_SCALE:-3}"
status=0
# Every C++ unit test (the Python suites of tests/support and tests/deploy test no C++ of ours).
"${norandom[@]}" ctest --test-dir "$build_dir" --output-on-failure -j2 \
  -E '^(integration|chaos|support|deploy)\.' || status=1
"${norandom[@]}" ctest --test-dir "$build_dir" --output-on-failure -j2 \
  -R '^integration\.(router|serving|sleep|events|front_door)$' || status=1
if compgen -G "$reports/tsan*" >/dev/null; then
  cat "$reports"/tsan* >&2
  echo "ThreadSanitizer: $(cat "$reports"/tsan* | grep -c '^WARNING: ThreadSanitizer') report(s) (above)" >&2
  status=1
fi
[ "$status" -eq 0 ] || { echo "ThreadSanitizer run: FAILED" >&2; exit 1; }
echo "ThreadSanitizer run: clean (unit tests; integration router, serving, sleep, events, front_door)"
