#!/usr/bin/env bash
# Startup benchmark: `luarun -e ''` against `lua5.4 -e ''` (and python3, node for
# scale), with hyperfine. Goal (issue 3): luarun within 2 ms of lua5.4. Also shows
# the shared libraries luarun loads at start (libcurl must not be one of them).
#
#   bench/startup.sh [--head]
#
# --head measures the committed HEAD, exported (git archive) to
# /tmp/luarun-bench-<commit> and built there; otherwise build/ (LUARUN_BUILD) is
# used, built first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
built="HEAD $commit"
if [ "${1:-}" = --head ]; then
  src=/tmp/luarun-bench-$commit
  build=$src/build
  if [ ! -x "$build/luarun" ]; then
    rm -rf "$src" && mkdir -p "$src" && git archive HEAD | tar -x -C "$src"
    cmake -S "$src" -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
  fi
  built="HEAD $commit exactly (exported to $src)"
elif [ ! -x "$build/luarun" ]; then
  cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
fi
command -v hyperfine >/dev/null || bash .ci/setup bench

luarun=$build/luarun
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "luarun startup benchmark: $built"
echo "binary $luarun; load average $(cut -d" " -f1-3 /proc/loadavg)"
hyperfine -N --warmup 20 --export-json "$tmp/h.json" --export-markdown "$tmp/h.md" \
  -n luarun "$luarun -e ''" \
  -n lua5.4 "lua5.4 -e ''" \
  -n python3 "/usr/bin/python3 -c ''" \
  -n node "node -e ''" >&2
echo
cat "$tmp/h.md"
echo
/usr/bin/python3 - "$tmp/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
for name, x in r.items():
    print(f"{name:8} mean {x['mean'] * 1000:7.2f} ms  median {x['median'] * 1000:7.2f} ms  "
          f"sd {x['stddev'] * 1000:5.2f} ms  ({len(x['times'])} runs)")
d = (r["luarun"]["mean"] - r["lua5.4"]["mean"]) * 1000
print(f"luarun - lua5.4 = {d:+.2f} ms (goal <= 2 ms: {'met' if d <= 2 else 'MISSED'})")
PY
echo
echo "ldd $luarun | wc -l: $(ldd "$luarun" | wc -l)"
ldd "$luarun" | awk '{print "  " $1}'
if ldd "$luarun" | grep -q libcurl; then echo "libcurl: LINKED"; else echo "libcurl: not linked"; fi
