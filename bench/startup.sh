#!/usr/bin/env bash
# Startup benchmark, with hyperfine -N, all rows in one run:
#   - `luarun -e ''` against `lua5.4 -e ''` (and python3, node for scale). Goal
#     (issue 3): luarun within 2 ms of lua5.4.
#   - a fetch script (issue 20): `require "luarun.http"` alone, and require plus one
#     plain-HTTP GET of a local server on 127.0.0.1, started here and stopped by its
#     pid: bench/http_delay/server.c (C, epoll; answers at once), or with
#     --server httpbin spec/support/httpbin.py (Python, a thread per connection: adds
#     ~0.7 ms of its own to every request). Goal: the fetch script in at most 8 ms.
#   - the floor of that fetch script: bench/startup_curl_floor.c, a C program that
#     dlopens libcurl.so.4 as luarun does (RTLD_NOW, as luarun did before issue 20,
#     and RTLD_LAZY, as it does now), calls curl_global_init and makes the same
#     request. No Lua, no loop: what the library alone costs.
# Also shows the shared libraries luarun loads at start (libcurl must not be one).
#
#   bench/startup.sh [--head] [--compare REV] [--variants] [--pin] [--runs N]
#                    [--rounds R] [--server c|httpbin] [--no-peers] [--interleaved]
#
# --head measures the committed HEAD, exported (git archive) to
# /tmp/luarun-bench-<commit> and built there; otherwise build/ (LUARUN_BUILD) is
# used, built first if missing. --compare REV adds the require and fetch rows of
# commit REV (exported and built the same way), for a before/after in one run.
# --variants adds floor rows for Debian's other libcurl flavours (libcurl-gnutls.so.4,
# libcurl-nss.so.4) where installed. --pin runs the server on CPU 0 and hyperfine
# (so every command) on CPU 1. --runs N: at least N runs a command in a round
# (default 100). --rounds R: hyperfine is run R times (default 5), the commands in a
# new random order each time, and the table gives the median of the rounds' medians
# and their range: on a shared machine a burst of load hits whichever command runs
# at that moment, and the rounds show it.
# --no-peers leaves out python3 and node (node alone takes ~12 s a round).
# --interleaved times the same commands with bench/interleave.py instead of hyperfine:
# R x N rounds, each running every command once in a random order (its own table,
# with CPU times, then the summary with one "round").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
head=0 compare="" variants=0 pin=0 runs=100 rounds=5 server=c peers=1 interleaved=0
while [ $# -gt 0 ]; do
  case "$1" in
    --head) head=1; shift ;;
    --compare) compare=$2; shift 2 ;;
    --variants) variants=1; shift ;;
    --pin) pin=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --server) server=$2; shift 2 ;;
    --no-peers) peers=0; shift ;;
    --interleaved) interleaved=1; shift ;;
    *) echo "usage: bench/startup.sh [--head] [--compare REV] [--variants] [--pin]" \
            "[--runs N] [--rounds R] [--server c|httpbin] [--no-peers] [--interleaved]" >&2
       exit 2 ;;
  esac
done

# Exports commit $1 to /tmp/luarun-bench-<short> and builds it there (once); prints
# the build directory.
build_at() {
  local short src
  short=$(git rev-parse --short "$1")
  src=/tmp/luarun-bench-$short
  if [ ! -x "$src/build/luarun" ]; then
    rm -rf "$src" && mkdir -p "$src" && git archive "$short" | tar -x -C "$src"
    cmake -S "$src" -B "$src/build" >/dev/null && cmake --build "$src/build" -j2 >/dev/null
  fi
  echo "$src/build"
}

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
built="HEAD $commit"
if [ $head = 1 ]; then
  build=$(build_at HEAD)
  built="HEAD $commit exactly (exported to $(dirname "$build"))"
elif [ ! -x "$build/luarun" ]; then
  cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
fi
command -v hyperfine >/dev/null || bash .ci/setup bench

luarun=$build/luarun
tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

gcc -O2 -Wall -Wextra -o "$tmp/floor" bench/startup_curl_floor.c -ldl

# The local server, on an ephemeral port of 127.0.0.1.
if [ "$server" = httpbin ]; then
  # It also exits by itself once this script is gone (--watch-pid).
  server_cmd=(/usr/bin/python3 spec/support/httpbin.py --port-file "$tmp/port"
              --pid-file "$tmp/pid" --watch-pid $$)
  server_name="spec/support/httpbin.py"
else
  gcc -O2 -Wall -Wextra -o "$tmp/server" bench/http_delay/server.c
  server_cmd=("$tmp/server" "$tmp/port" "$tmp/pid")
  server_name="bench/http_delay/server.c"
fi
hf=(hyperfine)
if [ $pin = 1 ]; then
  server_cmd=(taskset -c 0 "${server_cmd[@]}")
  hf=(taskset -c 1 hyperfine)
fi
"${server_cmd[@]}" >/dev/null 2>&1 &
for _ in $(seq 100); do [ -s "$tmp/port" ] && [ -s "$tmp/pid" ] && break; sleep 0.05; done
server_pid=$(cat "$tmp/pid")
url="http://127.0.0.1:$(cat "$tmp/port")/get"
fetch="assert(require \"luarun.http\".get(\"$url\"))"
"$luarun" -e "$fetch" || { echo "startup.sh: the fetch script failed against $url" >&2; exit 1; }

rows=(-n lua5.4 "lua5.4 -e ''" -n luarun "$luarun -e ''")
if [ $peers = 1 ]; then rows+=(-n python3 "/usr/bin/python3 -c ''" -n node "node -e ''"); fi
rows+=(
  -n luarun-require "$luarun -e 'require \"luarun.http\"'"
  -n luarun-fetch "$luarun -e '$fetch'"
  -n floor-now "$tmp/floor $url now"
  -n floor-lazy "$tmp/floor $url lazy"
)
if [ -n "$compare" ]; then
  other=$(build_at "$compare")
  rev=$(git rev-parse --short "$compare")
  built="$built; compared with $rev (exported to $(dirname "$other"))"
  rows+=(-n "luarun-require@$rev" "$other/luarun -e 'require \"luarun.http\"'"
         -n "luarun-fetch@$rev" "$other/luarun -e '$fetch'")
fi
if [ $variants = 1 ]; then
  for lib in libcurl-gnutls.so.4 libcurl-nss.so.4; do
    if "$tmp/floor" "$url" lazy "$lib" 2>/dev/null; then
      rows+=(-n "floor-lazy-${lib%%.so*}" "$tmp/floor $url lazy $lib")
    else
      echo "($lib not installed: no row)"
    fi
  done
fi

echo "luarun startup benchmark: $built"
echo "binary $luarun; server $server_name at $url (pid $server_pid); pinned: $([ $pin = 1 ] && echo "server CPU 0, hyperfine CPU 1" || echo no)"
echo "libcurl $(dpkg-query -W -f='${Version}' libcurl4 2>/dev/null || echo '?')"
if [ $interleaved = 1 ]; then
  echo "$((rounds * runs)) interleaved rounds of bench/interleave.py"
  echo "load average $(cut -d" " -f1-3 /proc/loadavg)"
  names_cmds=()
  for k in $(seq 0 3 $((${#rows[@]} - 1))); do names_cmds+=("${rows[@]:k+1:2}"); done
  "${hf[@]:0:${#hf[@]}-1}" /usr/bin/python3 bench/interleave.py --export-json "$tmp/h1.json" \
    $((rounds * runs)) "${names_cmds[@]}"
  rounds=0
fi
# hyperfine runs its commands one after another, so each round takes them in another
# (random) order: a burst of load then lands on different commands in each round.
[ "$rounds" = 0 ] || echo "$rounds rounds of hyperfine"
for i in $(seq "$rounds"); do
  echo "round $i: load average $(cut -d" " -f1-3 /proc/loadavg)"
  shuffled=()
  for k in $(seq 0 3 $((${#rows[@]} - 1)) | shuf); do
    shuffled+=("${rows[@]:k:3}")
  done
  "${hf[@]}" -N --warmup 20 --min-runs "$runs" --export-json "$tmp/h$i.json" \
    "${shuffled[@]}" >"$tmp/h$i.log" 2>&1 || { cat "$tmp/h$i.log" >&2; exit 1; }
done
echo "load average after $(cut -d" " -f1-3 /proc/loadavg)"
echo
/usr/bin/python3 - "$tmp"/h*.json <<'PY'
import json, statistics, sys
rounds = [{x["command"]: x for x in json.load(open(f))["results"]} for f in sys.argv[1:]]
order = [x["command"] for x in json.load(open(sys.argv[1]))["results"]]
ms = lambda xs: [x * 1000 for x in xs]
ROWS = ["lua5.4", "luarun", "python3", "node", "luarun-require", "luarun-fetch",
        "floor-now", "floor-lazy"]
print("| command | median ms | range of round medians | mean ms | min ms | runs |")
print("|:---|---:|---:|---:|---:|---:|")
meds = {}
for name in sorted(order, key=lambda n: ROWS.index(n) if n in ROWS else len(ROWS)):
    rm = ms([r[name]["median"] for r in rounds])
    meds[name] = statistics.median(rm)
    times = ms([t for r in rounds for t in r[name]["times"]])
    print(f"| {name} | {meds[name]:.2f} | {min(rm):.2f}-{max(rm):.2f} | "
          f"{statistics.mean(times):.2f} | {min(times):.2f} | {len(times)} |")
print()
med = lambda n: meds[n]
d = med("luarun") - med("lua5.4")
print(f"luarun - lua5.4 = {d:+.2f} ms (medians; goal <= 2 ms: {'met' if d <= 2 else 'MISSED'})")
f = med("luarun-fetch")
print(f"luarun-fetch median {f:.2f} ms (goal <= 8 ms: {'met' if f <= 8 else 'MISSED'}); "
      f"over floor-lazy {f - med('floor-lazy'):+.2f} ms, over floor-now {f - med('floor-now'):+.2f} ms")
print(f"require alone {med('luarun-require') - med('luarun'):+.2f} ms over luarun -e ''; "
      f"the request {f - med('luarun-require'):+.2f} ms over require alone")
PY
echo
echo "ldd $luarun | wc -l: $(ldd "$luarun" | wc -l)"
ldd "$luarun" | awk '{print "  " $1}'
if ldd "$luarun" | grep -q libcurl; then echo "libcurl: LINKED"; else echo "libcurl: not linked"; fi
echo "libraries mapped after require \"luarun.http\": $("$luarun" -e '
  require "luarun.http"
  local n = {}
  for l in io.lines("/proc/self/maps") do
    local p = l:match("(/%S+%.so[%.%d]*)$")
    if p then n[p] = true end
  end
  local c = 0
  for _ in pairs(n) do c = c + 1 end
  print(c)')"
