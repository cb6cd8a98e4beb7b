#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer over the whole test suite, and the fuzz targets,
# in one clang build (a second build directory beside the README's GCC build and the TSan one):
#  1. Every test ctest knows (unit, integration with real gswarm processes, the Python suites)
#     runs against the instrumented binaries. Any report from any process fails the run.
#  2. Each libFuzzer target of tests/fuzz runs for GSWARM_FUZZ_SECONDS (default 20) from its seed
#     corpus (tests/fuzz/corpus/<target>), and every committed crash input
#     (tests/fuzz/regressions/<target>/*) runs once. A crash fails the run; its input is left in
#     the reports folder printed, to be committed as a regression.
# Suppressions: tests/asan.supp (with the reason for each); none are expected of our code.
#
# Run from the repository root: bash tests/sanitizer_check.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${1:-build-asan}"
fuzz_seconds="${GSWARM_FUZZ_SECONDS:-20}"
command -v clang++ >/dev/null || { echo "sanitizer check: clang++ is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$build_dir" -G Ninja \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DGSWARM_BUILD_TESTS=ON -DGSWARM_BUILD_BENCH=OFF -DGSWARM_FUZZ=ON \
  "-DCMAKE_CXX_FLAGS=$san -fsanitize=fuzzer-no-link" \
  "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined" >/dev/null
cmake --build "$build_dir" -j2

reports="$(mktemp -d /tmp/gswarm-sanitizers.XXXXXX)"
export ASAN_OPTIONS="log_path=$reports/asan detect_leaks=1 abort_on_error=0 ${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/tests/asan.supp ${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="log_path=$reports/ubsan print_stacktrace=1 halt_on_error=1 ${UBSAN_OPTIONS:-}"
# Instrumented binaries run several times slower: the few promises timed in tests (an agent back
# within 2 s of a restarted host) are scaled by this.
export GSWARM_TEST_TIME_SCALE="${GSWARM_TEST_TIME_SCALE:-3}"
status=0
ctest --test-dir "$build_dir" --output-on-failure -j2 -E '^chaos\.' || status=1

# Fuzzing: reports go to the terminal (libFuzzer's own), crash inputs to $reports.
summary=()
for fuzzer in "$build_dir"/tests/fuzz/fuzz_*; do
  [ -x "$fuzzer" ] || continue
  target="${fuzzer##*/fuzz_}"
  work="$(mktemp -d)"
  regressions=(tests/fuzz/regressions/"$target"/*)
  if [ -e "${regressions[0]}" ]; then
    ASAN_OPTIONS="detect_leaks=1" "$fuzzer" "${regressions[@]}" >"$reports/$target.regressions.log" 2>&1 \
      || { echo "fuzz $target: a committed regression input fails again" >&2; cat "$reports/$target.regressions.log" >&2; status=1; }
  fi
  if ASAN_OPTIONS="detect_leaks=1" "$fuzzer" "$work" "tests/fuzz/corpus/$target" \
       -max_total_time="$fuzz_seconds" -print_final_stats=1 -artifact_prefix="$reports/$target-" \
       >"$reports/$target.log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$reports/$target.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$reports/$target.log")
    cov=$(grep -o 'cov: [0-9]*' "$reports/$target.log" | tail -1 | cut -d' ' -f2)
    summary+=("$(printf '%-16s %10s runs %8s exec/s  cov %s' "$target" "$execs" "$rate" "$cov")")
  else
    tail -40 "$reports/$target.log" >&2
    echo "fuzz $target: CRASH (input: $(ls "$reports/$target-"* 2>/dev/null | head -1))" >&2
    status=1
  fi
  rm -rf "$work"
done
printf 'fuzz (%ss each):\n' "$fuzz_seconds"
printf '  %s\n' "${summary[@]}"

if compgen -G "$reports/asan*" >/dev/null || compgen -G "$reports/ubsan*" >/dev/null; then
  cat "$reports"/asan* "$reports"/ubsan* 2>/dev/null >&2 || true
  echo "sanitizers: reports above (ASan/UBSan, from $reports)" >&2
  status=1
fi
[ "$status" -eq 0 ] || { echo "ASan+UBSan run: FAILED (logs in $reports)" >&2; exit 1; }
rm -rf "$reports"
echo "ASan+UBSan run: clean (every unit and integration test; fuzz targets above)"
