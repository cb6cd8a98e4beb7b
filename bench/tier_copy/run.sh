#!/usr/bin/env bash
# Disk -> DRAM copy of a generated multi-file model: `cp -r`, `dd bs=32M` per file, and GSwarm's
# tier copier (tier_copy_bench, verify off and on), each warm (source in the page cache) and cold
# (caches dropped first, where the machine allows). See bench/README.md, "tier_copy".
#
#   bash bench/tier_copy/run.sh            # 2 GiB model: 8 files of 256 MiB
#   SIZE_MB=4096 FILES=16 bash bench/tier_copy/run.sh
#
# Environment: SIZE_MB (2048), FILES (8), REPEAT (warm rounds; 5), REPEAT_COLD (cold rounds; 2),
# DATA_DIR (where the model is generated, once, kept for later runs; /tmp/gswarm_tier_copy_data),
# SHM_DIR (DRAM side; /dev/shm/gswarm_tier_copy.$$, removed on exit), BUILD_DIR (build),
# SKIP_BUILD=1 (use the binary already in BUILD_DIR), PARALLEL (files at once for GSwarm; 4).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SIZE_MB=${SIZE_MB:-2048}
FILES=${FILES:-8}
REPEAT=${REPEAT:-5}
REPEAT_COLD=${REPEAT_COLD:-2}
DATA_DIR=${DATA_DIR:-/tmp/gswarm_tier_copy_data}
SHM_DIR=${SHM_DIR:-/dev/shm/gswarm_tier_copy.$$}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
PARALLEL=${PARALLEL:-4}
BENCH=$BUILD_DIR/bench/tier_copy_bench

log() { echo "[tier_copy] $*" >&2; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

cleanup() { rm -rf "$SHM_DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "building tier_copy_bench in $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja >/dev/null
  ninja -C "$BUILD_DIR" tier_copy_bench >/dev/null
fi
[[ -x $BENCH ]] || { log "no $BENCH (build it or unset SKIP_BUILD)"; exit 1; }

# /dev/shm must hold one copy at a time, with some slack.
shm_free_mb=$(( $(df --output=avail -k /dev/shm | tail -1) / 1024 ))
if (( shm_free_mb < SIZE_MB + 256 )); then
  if (( shm_free_mb < 512 + 256 )); then
    log "skipped: /dev/shm has only ${shm_free_mb} MiB free"
    exit 0
  fi
  SIZE_MB=$(( (shm_free_mb - 256) / FILES * FILES ))
  log "/dev/shm has ${shm_free_mb} MiB free: shrinking the model to ${SIZE_MB} MiB"
fi
FILE_MB=$(( SIZE_MB / FILES ))

# The model: FILES weight shards of random bytes, a config.json and a GSwarm manifest with every
# file's sha256 (so the copier's verify mode has something to check). Generated once per shape.
MODEL=$DATA_DIR/model-${FILES}x${FILE_MB}M
if [[ ! -f $MODEL/.gswarm/manifest.json ]]; then
  log "generating $MODEL ($FILES x $FILE_MB MiB)"
  rm -rf "$MODEL"   # only this shape's (partial) model; other shapes and DATA_DIR itself stay
  mkdir -p "$MODEL/.gswarm"
  echo '{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}' >"$MODEL/config.json"
  for i in $(seq 1 "$FILES"); do
    name=$(printf 'model-%05d-of-%05d.safetensors' "$i" "$FILES")
    openssl rand -out "$MODEL/$name" $(( FILE_MB << 20 )) &
    (( i % 2 == 0 )) && wait
  done
  wait
  {
    echo '{"format": 1, "name": "bench", "source_url": "file://bench", "revision": "",'
    echo ' "commit": "", "downloaded_at": "", "files": ['
    sep=""
    (cd "$MODEL" && find . -path ./.gswarm -prune -o -type f -print | sed 's|^\./||' | sort) |
      while read -r rel; do
        sum=$(sha256sum "$MODEL/$rel" | cut -d' ' -f1)
        printf '%s  {"path": "%s", "size": %s, "sha256": "%s"}' "$sep" "$rel" \
          "$(stat -c %s "$MODEL/$rel")" "$sum"
        sep=$',\n'
      done
    echo ']}'
  } >"$MODEL/.gswarm/manifest.json.tmp"
  mv "$MODEL/.gswarm/manifest.json.tmp" "$MODEL/.gswarm/manifest.json"
fi
BYTES=$(find -L "$MODEL" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
mapfile -t REL_FILES < <(cd "$MODEL" && find . -type f | sed 's|^\./||' | sort)

mkdir -p "$SHM_DIR"
COLD=1
if ! { sync && echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
  COLD=0
  log "cold: not available (cannot write /proc/sys/vm/drop_caches)"
fi

# The copy commands; each copies $MODEL to $1, which does not exist yet.
copy_cp() { cp -r "$MODEL" "$1"; }
copy_dd() {
  local rel
  for rel in "${REL_FILES[@]}"; do
    mkdir -p "$(dirname "$1/$rel")"
    dd if="$MODEL/$rel" of="$1/$rel" bs=32M status=none
  done
}
copy_gswarm() { "$BENCH" --source "$MODEL" --target "$1" --parallel "$PARALLEL" >/dev/null; }
# Verify on, two ways. "first": the manifest as an older download wrote it (sha256 only): SHA-256
# checks the files while XXH3-128 is computed alongside and recorded in the manifest (once per
# model). Then every later copy checks the recorded XXH3-128 (the default from now on).
SHA_ONLY=$DATA_DIR/manifest-${FILES}x${FILE_MB}M.sha256-only.json
WITH_XXH3=$DATA_DIR/manifest-${FILES}x${FILE_MB}M.xxh3.json
[[ -f $SHA_ONLY ]] || cp "$MODEL/.gswarm/manifest.json" "$SHA_ONLY"
copy_gswarm_verify_first() {
  cp "$SHA_ONLY" "$MODEL/.gswarm/manifest.json"
  "$BENCH" --source "$MODEL" --target "$1" --parallel "$PARALLEL" --verify >/dev/null
  cp "$MODEL/.gswarm/manifest.json" "$WITH_XXH3"
}
copy_gswarm_verify() {
  [[ -f $WITH_XXH3 ]] || copy_gswarm_verify_first "$1.first" && rm -rf "$1.first"
  cp "$WITH_XXH3" "$MODEL/.gswarm/manifest.json"
  "$BENCH" --source "$MODEL" --target "$1" --parallel "$PARALLEL" --verify >/dev/null
}
copy_gswarm_rw() {
  "$BENCH" --source "$MODEL" --target "$1" --parallel "$PARALLEL" --method read_write >/dev/null
}
TOOLS=(cp dd gswarm gswarm_rw gswarm_verify gswarm_verify_first)
declare -A LABEL=(
  [cp]='`cp -r`'
  [dd]='`dd bs=32M` per file'
  [gswarm]='gswarm, verify off (kernel copy)'
  [gswarm_rw]='gswarm, verify off, read/write forced'
  [gswarm_verify]='gswarm, verify on (mmap, xxh3-128 checked, write)'
  [gswarm_verify_first]='gswarm, verify on, first copy (sha256 checked, xxh3-128 recorded)'
)

# Runs one copy, prints "real user sys" seconds. The target is removed afterwards.
time_one() {
  local tool=$1 cold=$2 target=$SHM_DIR/copy t
  rm -rf "$target"
  if [[ $cold == 1 ]]; then sync && echo 3 >/proc/sys/vm/drop_caches; fi
  t=$( { TIMEFORMAT='%3R %3U %3S'; time "copy_$tool" "$target" >/dev/null 2>&1; } 2>&1 )
  [[ -d $target ]] || { log "$tool: the copy failed"; exit 1; }
  local got want
  got=$(find "$target" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
  # The source's bytes now (a verified copy may have added digests to its manifest).
  want=$(find -L "$MODEL" -type f -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
  [[ $got == "$want" ]] || { log "$tool: copied $got bytes, expected $want"; exit 1; }
  rm -rf "$target"
  echo "$t"
}

# Tools take turns, round by round, so that load from elsewhere on the machine hits them alike.
declare -A RUNS
cat "$MODEL"/* "$MODEL"/.gswarm/* >/dev/null  # warm: the source in the page cache
for round in $(seq 1 "$REPEAT"); do
  for tool in "${TOOLS[@]}"; do
    RUNS[$tool,warm]+="$(time_one "$tool" 0)"$'\n'
  done
  log "warm round $round/$REPEAT done"
done
if [[ $COLD == 1 ]]; then
  for round in $(seq 1 "$REPEAT_COLD"); do
    for tool in "${TOOLS[@]}"; do
      RUNS[$tool,cold]+="$(time_one "$tool" 1)"$'\n'
    done
    log "cold round $round/$REPEAT_COLD done"
  done
fi

# "real user sys" lines -> "median_real best_real median_cpu"
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
summarize() {
  local lines
  lines=$(grep -v '^$')
  echo "$(awk '{print $1}' <<<"$lines" | median) $(awk '{print $1}' <<<"$lines" | sort -n | head -1)" \
    "$(awk '{print $2 + $3}' <<<"$lines" | median)"
}
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)),"\
  "$(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r),"\
  "load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
echo "Source filesystem: $(stat -f -c %T "$MODEL"); target: $(stat -f -c %T "$SHM_DIR") (/dev/shm)"
echo "Model: $FILES files x $FILE_MB MiB + config.json + manifest = $BYTES bytes, $MODEL -> $SHM_DIR"
echo "Warm: $REPEAT rounds. Cold: $REPEAT_COLD rounds, each run after \`sync; echo 3 > /proc/sys/vm/drop_caches\`."
echo "Tools take turns in each round; median and best of the rounds. CPU: the copying process(es)."
echo
echo "| tool | cache | median s | best s | GB/s (median) | x cp (median) | CPU s (user+sys) |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
for cache in warm cold; do
  if [[ $cache == cold && $COLD == 0 ]]; then
    echo "| (all) | cold | cold: not available | | | | |"
    continue
  fi
  read -r cp_real _ <<<"$(summarize <<<"${RUNS[cp,$cache]}")"
  for tool in "${TOOLS[@]}"; do
    read -r real best cpu <<<"$(summarize <<<"${RUNS[$tool,$cache]}")"
    awk -v l="${LABEL[$tool]}" -v c="$cache" -v r="$real" -v b="$best" -v cpu="$cpu" \
      -v n="$BYTES" -v cp="$cp_real" 'BEGIN {printf "| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n",
        l, c, r, b, n / r / 1e9, cp / r, cpu}'
  done
done
