#!/usr/bin/env bash
# Task cost (issue 20): N tasks that each sleep 1 s, spawned one by one and then
# waited for, in luarun and its peers, side by side in one run:
#   luarun-gather   lr.spawn in a loop, then lr.gather(tasks)       bench/timers/luarun_gather.lua
#   luarun-wait     lr.spawn in a loop, then tasks[i]:wait()        bench/tasks/luarun_wait.lua
#   luv             lua5.4 + coroutines + a uv timer each (lua-luv) bench/tasks/luv_timers.lua
#   node            async functions awaiting setTimeout promises    bench/tasks/node_tasks.js
#   node-promises   bare setTimeout promises, no function per task  bench/timers/node_sleep.js
#   python-asyncio  create_task in a loop, then asyncio.gather      bench/timers/asyncio_sleep.py
#   lua5.4-coroutines  the memory floor: N bare coroutines suspended in a yield
#                   (bench/timers/lua_coroutines.lua)
#   lua+libuv-floor the same work in C on lua5.4 and libuv alone: spawn from a Lua
#                   loop, a C sleep on one uv timer, no task objects (bench/tasks/floor.c,
#                   compiled to /tmp by this script)
#
#   bench/tasks.sh [--head] [N]          default N 100000
#
# Each repetition runs every program once, in turn (so a change of load hits them
# all); the table shows medians and, in brackets, the range over the repetitions.
# elapsed_s, cpu_s (user + system) and rss_MB come from /usr/bin/time -f '%e %U %S %M'
# (the whole process; on a shared machine cpu_s moves less with load than elapsed_s);
# spawn_s and wall_s are measured inside (wall: before the first spawn to after the
# wait returns; lua5.4-coroutines: CPU time of its loop). rss/floor divides by the
# floor's median peak RSS.
#
# --head measures the committed HEAD, exported with git archive to
# /tmp/luarun-bench-<commit> and built there; otherwise build/ (LUARUN_BUILD) is used.
# Environment:
#   REPS=7            repetitions (default 7)
#   PIN=1             run every program under `taskset -c 1` (default: not pinned)
#   ONLY="a b"        only these rows (labels as above)
#   EXTRA="label=/path/to/luarun ..."  more luarun builds to run the gather script with
#                     (before/after comparisons in the same run)
# Goal (issue 20): luarun's whole run (elapsed) <= 1.10 s at N = 100000, ahead of luv
# and node, with peak RSS within 1.05x of the floor.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
reps=${REPS:-7}
head=0
if [ "${1:-}" = --head ]; then head=1; shift; fi
n=${1:-100000}

. bench/build_under_test.sh
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
lua5.4 -e 'require "luv"' 2>/dev/null || apt-get install -y lua-luv >/dev/null
command -v node >/dev/null && [ -x /usr/bin/python3 ] || bash .ci/setup bench

dir=$root/bench/tasks
timers=$root/bench/timers  # the scripts the two benchmarks share
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pin=()
[ -n "${PIN:-}" ] && pin=(taskset -c 1)

floor_bin=/tmp/luarun-tasks-floor
if [ ! -x "$floor_bin" ] || [ "$dir/floor.c" -nt "$floor_bin" ]; then
  cc -O2 "$dir/floor.c" $(pkg-config --cflags --libs lua5.4 libuv) -o "$floor_bin"
fi

labels=(lua5.4-coroutines lua+libuv-floor luarun-gather luarun-wait luv node node-promises python-asyncio)
declare -A cmd=(
  [lua5.4-coroutines]="lua5.4 $timers/lua_coroutines.lua"
  [lua+libuv-floor]="$floor_bin"
  [luarun-gather]="$build/luarun $timers/luarun_gather.lua"
  [luarun-wait]="$build/luarun $dir/luarun_wait.lua"
  [luv]="lua5.4 $dir/luv_timers.lua"
  [node]="node $dir/node_tasks.js"
  [node-promises]="node $timers/node_sleep.js"
  [python-asyncio]="/usr/bin/python3 $timers/asyncio_sleep.py"
)
for e in ${EXTRA:-}; do
  labels+=("${e%%=*}")
  cmd[${e%%=*}]="${e#*=} $timers/luarun_gather.lua"
done
if [ -n "${ONLY:-}" ]; then labels=($ONLY); fi

echo "luarun task cost benchmark, N=$n: $built"
echo "$(uname -srm), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
  "$(lua5.4 -v 2>&1 | cut -d' ' -f1-2); $(/usr/bin/python3 --version); node $(node --version);" \
  "reps $reps${PIN:+, pinned to cpu 1}"

: >"$tmp/rows"
for ((r = 1; r <= reps; r++)); do
  for l in "${labels[@]}"; do
    # shellcheck disable=SC2086
    if ! "${pin[@]}" /usr/bin/time -f "%e %U %S %M" -o "$tmp/time" ${cmd[$l]} "$n" >"$tmp/out" 2>"$tmp/err"; then
      echo "tasks.sh: $l failed:" >&2; cat "$tmp/err" "$tmp/time" >&2; continue
    fi
    echo "$l $(grep -o 'spawn=[0-9.]* wall=[0-9.]*' "$tmp/out" | tr '=' ' ' |
      awk '{print $2, $4}') $(tail -1 "$tmp/time" | awk '{print $1, $2 + $3, $4}')" >>"$tmp/rows"
  done
done

# rows: label spawn wall elapsed cpu rss_kb
awk -v order="${labels[*]}" '
  function med(a, k,   i, j, t, m) {
    m = cnt[k]; for (i = 1; i <= m; i++) s[i] = a[k, i]
    for (i = 2; i <= m; i++) for (j = i; j > 1 && s[j - 1] > s[j]; j--) { t = s[j]; s[j] = s[j - 1]; s[j - 1] = t }
    lo = s[1]; hi = s[m]
    return (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
  }
  { k = $1; c = ++cnt[k]; sp[k, c] = $2; wa[k, c] = $3; el[k, c] = $4; cp[k, c] = $5; rs[k, c] = $6 / 1024 }
  END {
    floor = 0
    if (cnt["lua5.4-coroutines"]) floor = med(rs, "lua5.4-coroutines")
    printf "%-18s %7s %7s %17s %6s %19s %8s\n", "runtime", "spawn_s", "wall_s", "elapsed_s [range]", "cpu_s", "rss_MB [range]", "rss/floor"
    n = split(order, ks, " ")
    for (i = 1; i <= n; i++) {
      k = ks[i]; if (!cnt[k]) continue
      a = med(sp, k); b = med(wa, k)
      e = med(el, k); elo = lo; ehi = hi
      u = med(cp, k)
      m = med(rs, k); mlo = lo; mhi = hi
      printf "%-18s %7.3f %7.3f %5.2f [%4.2f-%4.2f] %6.2f %6.1f [%5.1f-%5.1f] %8s\n", k, a, b, e, elo, ehi, u, m, mlo, mhi,
        (floor > 0 && k != "lua5.4-coroutines") ? sprintf("%.3f", m / floor) : "-"
    }
  }' "$tmp/rows"
