#!/usr/bin/env bash
# Pool benchmark (issue 5): lr.run_in_pool against Python's ProcessPoolExecutor
# (through loop.run_in_executor) and Node's worker_threads, in one run:
#   (a) 8 equal CPU-bound jobs, one after another in the main thread vs pooled:
#       speedup (goal: >= 0.9 x the core count), median of 3 rounds (each round
#       runs both, so a change of load hits both). luarun also prints a_cpu_used,
#       the cores its process got while pooled (CPU s / wall s), a_efficiency =
#       speedup / a_cpu_used (1.0: nothing wasted) and a_jobs_per_worker;
#   (b) 10,000 trivial calls, microseconds per call, awaited one after another and
#       all submitted at once (goal: under 10 us, ahead of both peers);
#   (c) one call with a 1 MB string argument returned as the result (1 MB each way):
#       microseconds per call, against a plain memcpy of the data measured in the
#       same run (goal: within 2 x). The baseline, c_memcpy_us from
#       bench/pool/memcpy.c: one thread memcpy's the 1 MB argument into a buffer and
#       that buffer into another (the result), three buffers allocated once. Also
#       printed: memcpy_1mb_us (one 1 MB copy between two L2-resident buffers) and
#       c_xthread_us (the same two copies split between two threads as the pool
#       must: the floor for any design that copies on both sides).
#
#   bench/pool.sh [job_iterations]      default 20000000 (about 0.15 s per job in luarun)
#
# Environment: LUARUN_BUILD (build directory, default build; built if missing).
# Each program prints "key value" lines; this script puts them in one table.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
iter=${1:-20000000}
if [ ! -x "$build/luarun" ]; then
  cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O2 -pthread -o "$tmp/memcpy" bench/pool/memcpy.c

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), iterations $iter"
"$tmp/memcpy" | tee "$tmp/memcpy.txt"
"$build/luarun" bench/pool/luarun.lua "$iter" >"$tmp/luarun.txt"
/usr/bin/python3 bench/pool/python.py "$iter" >"$tmp/python.txt"
node bench/pool/node.js "$iter" >"$tmp/node.txt"

keys="a_sequential_s a_pooled_s a_speedup a_speedups a_workers a_cpu_used a_efficiency a_jobs_per_worker b_sequential_us b_concurrent_us c_1mb_roundtrip_us"
printf '\n| %-18s | %14s | %14s | %14s |\n' figure luarun python node
printf '|:%s|%s:|%s:|%s:|\n' "-------------------" "---------------" "---------------" "---------------"
for k in $keys; do
  printf '| %-18s |' "$k"
  for r in luarun python node; do
    v=$(awk -v k="$k" '$1 == k { print $2 }' "$tmp/$r.txt")
    printf ' %14s |' "${v:--}"
  done
  printf '\n'
done

c=$(awk '$1 == "c_1mb_roundtrip_us" { print $2 }' "$tmp/luarun.txt")
awk -v c="$c" '
  { v[$1] = $2 }
  END {
    printf "\n(c) luarun %.1f us = %.2f x c_memcpy_us (%.1f, goal <= 2), ", c, c / v["c_memcpy_us"], v["c_memcpy_us"]
    printf "%.2f x 2 * memcpy_1mb_us (%.1f), ", c / (2 * v["memcpy_1mb_us"]), 2 * v["memcpy_1mb_us"]
    printf "%.2f x c_xthread_us (%.1f)\n", c / v["c_xthread_us"], v["c_xthread_us"]
  }' "$tmp/memcpy.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
