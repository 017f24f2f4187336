#!/usr/bin/env bash
# The cost of --trace and --debug when they are off (and what they cost when on):
# bench/timers/luarun_gather.lua (N tasks that each sleep 1 s, gathered) run by a
# baseline build and by this build, interleaved run by run so that load on the shared
# machine hits both alike. Prints the median spawn time, wall time and CPU time
# (user + sys) of each.
#
#   bench/observe.sh BASELINE_BUILD_DIR [N [REPS]]     default N 100000, REPS 11
#
# A baseline: git archive main | tar -x -C /tmp/base && cmake -S /tmp/base -B /tmp/base/build
# && cmake --build /tmp/base/build.   This build: build/ (LUARUN_BUILD to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/observe.sh BASELINE_BUILD_DIR [N [REPS]]}
n=${2:-100000}
reps=${3:-11}
build=${LUARUN_BUILD:-build}
[ -x "$build/luarun" ] || { cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
script=bench/timers/luarun_gather.lua

# name, command...: one run, appends "spawn wall cpu" to $tmp/<name>
one() {
  local name=$1 line
  shift
  /usr/bin/time -f "%U %S" -o "$tmp/time" "$@" "$script" "$n" >"$tmp/out" 2>"$tmp/err" ||
    { echo "observe.sh: $name failed" >&2; cat "$tmp/err" >&2; exit 1; }
  line=$(grep -o 'spawn=[0-9.]* wall=[0-9.]*' "$tmp/out" | tr '=' ' ' | awk '{print $2, $4}')
  echo "$line $(awk '{print $1 + $2}' "$tmp/time")" >>"$tmp/$name"
}

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "luarun_gather.lua N=$n, $reps interleaved runs each; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ((i = 0; i < reps; i++)); do
  one baseline "$base/luarun"
  one off "$build/luarun"
  one trace "$build/luarun" --trace "$tmp/t.json"
  one debug "$build/luarun" --debug
done
printf "%-34s %8s %8s %8s\n" "run" "spawn_s" "wall_s" "cpu_s"
for name in baseline off trace debug; do
  case $name in
    baseline) label="baseline ($base)" ;;
    off) label="this build, tracing/debug off" ;;
    trace) label="this build, --trace out.json" ;;
    debug) label="this build, --debug" ;;
  esac
  printf "%-34s %8s %8s %8s\n" "$label" "$(cut -d' ' -f1 "$tmp/$name" | median)" \
    "$(cut -d' ' -f2 "$tmp/$name" | median)" "$(cut -d' ' -f3 "$tmp/$name" | median)"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
