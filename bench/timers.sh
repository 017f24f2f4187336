#!/usr/bin/env bash
# Timers benchmark: N concurrent tasks that each sleep 1 s, gathered, in luarun,
# against N bare suspended coroutines in stock lua5.4 (the memory floor), Python
# asyncio and Node.js. Prints one table: spawn time and wall time (measured inside
# each program), the process's elapsed time and peak RSS (from /usr/bin/time).
#
#   bench/timers.sh [--head] [N ...]     default N: 100000 1000000
#
# --head measures the committed HEAD: it is exported (git archive) to
# /tmp/luarun-bench-<commit> and built there, so uncommitted work in the tree and
# whatever is in build/ do not leak into the figures. Without it, build/ is used
# (built first if missing). Environment: LUARUN_BUILD (build directory, default
# build; ignored with --head), REPS (runs per
# figure for N <= 100000, default 3; the median is shown; larger N run once).
# Goals (issue 3): at N = 100000 luarun finishes within 1.15 s wall and its peak RSS
# is within 15 % of the lua5.4 coroutine baseline; N = 1000000 runs without trouble.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
reps_small=${REPS:-3}
head=0
if [ "${1:-}" = --head ]; then head=1; shift; fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)

. bench/build_under_test.sh
if [ ! -x /usr/bin/time ] || ! command -v node >/dev/null || [ ! -x /usr/bin/python3 ]; then
  bash .ci/setup bench
fi

luarun=$build/luarun
dir=$root/bench/timers
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# run LABEL N CMD...: runs CMD N (REPS times for small N) and appends a row
# "label n spawn wall elapsed rss_kb" (medians) to $tmp/rows.
run() {
  local label=$1 n=$2 reps=1 i line
  shift 2
  [ "$n" -le 100000 ] && reps=$reps_small
  : >"$tmp/runs"
  for ((i = 0; i < reps; i++)); do
    if ! /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" "$n" >"$tmp/out" 2>"$tmp/err"; then
      echo "timers.sh: $label N=$n failed:" >&2
      cat "$tmp/err" "$tmp/time" >&2
      echo "$label $n FAILED FAILED FAILED 0" >>"$tmp/rows"
      return
    fi
    line=$(grep -o 'spawn=[0-9.]* wall=[0-9.]*' "$tmp/out" | tr '=' ' ')
    echo "$(echo "$line" | awk '{print $2, $4}') $(tail -1 "$tmp/time")" >>"$tmp/runs"
  done
  echo "$label $n $(cut -d' ' -f1 "$tmp/runs" | median) $(cut -d' ' -f2 "$tmp/runs" | median)" \
    "$(cut -d' ' -f3 "$tmp/runs" | median) $(cut -d' ' -f4 "$tmp/runs" | median)" >>"$tmp/rows"
  echo "  $label N=$n: $(tr '\n' ';' <"$tmp/runs")" >&2
}

echo "luarun timers benchmark: $built"
echo "binary $luarun; load average $(cut -d" " -f1-3 /proc/loadavg)"
echo "$(uname -srm), $(nproc) cores; $(lua5.4 -v 2>&1 | cut -d' ' -f1-2);" \
  "$(/usr/bin/python3 --version); node $(node --version)"
echo "runs per figure: $reps_small for N <= 100000 (median), 1 above" >&2

: >"$tmp/rows"
for n in "${sizes[@]}"; do
  run "lua5.4-coroutines" "$n" lua5.4 "$dir/lua_coroutines.lua"
  run "luarun-gather" "$n" "$luarun" "$dir/luarun_gather.lua"
  run "luarun-map" "$n" "$luarun" "$dir/luarun_map.lua"
  run "python-asyncio" "$n" /usr/bin/python3 "$dir/asyncio_sleep.py"
  run "node" "$n" node "$dir/node_sleep.js"
done

echo
awk '
  BEGIN {
    printf "%-18s %8s %8s %8s %9s %9s %10s\n", "runtime", "N", "spawn_s", "wall_s",
      "elapsed_s", "rss_MB", "rss/coro"
  }
  $1 == "lua5.4-coroutines" { base[$2] = $6 }
  {
    ratio = "-"
    if ($1 != "lua5.4-coroutines" && base[$2] > 0 && $6 > 0) ratio = sprintf("%.2f", $6 / base[$2])
    printf "%-18s %8d %8s %8s %9s %9.1f %10s\n", $1, $2, $3, $4, $5, $6 / 1024, ratio
    if ($1 == "luarun-gather" || $1 == "luarun-map") {
      if ($2 == 100000) {
        goals = goals sprintf("%s N=%d: wall %s s (goal <= 1.15: %s), rss %s x baseline (goal <= 1.15: %s)\n",
          $1, $2, $4, ($4 != "FAILED" && $4 <= 1.15) ? "met" : "MISSED",
          ratio, (ratio != "-" && ratio <= 1.15) ? "met" : "MISSED")
      } else if ($2 == 1000000) {
        goals = goals sprintf("%s N=%d: %s\n", $1, $2, $4 == "FAILED" ? "FAILED" : "ran")
      }
    }
  }
  END { printf "\nlua5.4-coroutines: spawn_s = wall_s = CPU time to create and resume N coroutines\nluarun-map: spawn_s = time until the N-th task body starts\n\n%s", goals }
' "$tmp/rows"
