#!/usr/bin/env bash
# Pool benchmark (issue 5): lr.run_in_pool against Python's ProcessPoolExecutor
# (through loop.run_in_executor) and Node's worker_threads, in one run:
#   (a) 8 equal CPU-bound jobs, one after another in the main thread vs pooled:
#       speedup (goal: >= 0.9 x the core count);
#   (b) 10,000 trivial calls, microseconds per call, awaited one after another and
#       all submitted at once (goal: under 10 us, ahead of both peers);
#   (c) one call with a 1 MB string argument returned as the result (1 MB each way):
#       microseconds per call, against a plain memcpy of 1 MB (bench/pool/memcpy.c)
#       (goal: within 2 x a memcpy of the data, i.e. of the 2 MB that cross).
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
gcc -O2 -o "$tmp/memcpy" bench/pool/memcpy.c

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), iterations $iter"
"$tmp/memcpy" | tee "$tmp/memcpy.txt"
"$build/luarun" bench/pool/luarun.lua "$iter" >"$tmp/luarun.txt"
/usr/bin/python3 bench/pool/python.py "$iter" >"$tmp/python.txt"
node bench/pool/node.js "$iter" >"$tmp/node.txt"

keys="a_sequential_s a_pooled_s a_speedup a_workers b_sequential_us b_concurrent_us c_1mb_roundtrip_us"
printf '\n| %-18s | %10s | %10s | %10s |\n' figure luarun python node
printf '|:%s|%s:|%s:|%s:|\n' "-------------------" "-----------" "-----------" "-----------"
for k in $keys; do
  printf '| %-18s |' "$k"
  for r in luarun python node; do
    printf ' %10s |' "$(awk -v k="$k" '$1 == k { print $2 }' "$tmp/$r.txt")"
  done
  printf '\n'
done
