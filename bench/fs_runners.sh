#!/usr/bin/env bash
# File runners before and after issue 23 (read_file, write_file and fs.open moved from
# libuv's thread pool to runner threads of luarun's own): two builds run in turn, REPS
# times, each run in a fresh directory:
#   small: bench/fs_luarun.lua (2,000 files of 4 KiB written, then read, all at once)
#   seq:   bench/fs_seq_luarun.lua (one 4 KiB file read 2,000 times and written 500
#          times, one call at a time: the hand-over to a runner and back, per call)
# Prints each run and the medians.
#
#   bench/fs_runners.sh BASELINE_BUILD_DIR [REPS]      (this build: LUARUN_BUILD or build)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/fs_runners.sh BASELINE_BUILD_DIR [REPS]}
reps=${2:-9}
build=${LUARUN_BUILD:-build}
dir=${FS_BENCH_DIR:-/tmp}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for ((i = 1; i <= reps; i++)); do
  for who in base this; do
    bin=$base/luarun
    [ "$who" = this ] && bin=$build/luarun
    d=$(mktemp -d "$dir/fs_runners.XXXXXX")
    small=$("$bin" bench/fs_luarun.lua small "$d")
    seq=$("$bin" bench/fs_seq_luarun.lua "$d/seq")
    rm -rf "$d"
    echo "$who $small $seq" | tee -a "$out/all"
  done
done
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
printf '%-6s %12s %12s %12s %12s\n' build small_write small_read seq_read seq_write
for who in base this; do
  printf '%-6s' "$who"
  for col in 2 3 4 5; do
    printf ' %12s' "$(awk -v w="$who" -v c="$col" '$1 == w {print $c}' "$out/all" | median)"
  done
  echo
done
