#!/usr/bin/env bash
# The experiment of the README: sequential vs concurrent requests, and the scraper
# table, against a local server that luarun itself runs (examples/serve_delay.lua on
# 127.0.0.1: /delay/N answers after N seconds, as httpbin's does).
#   bash examples/demo.sh            (LUARUN_DEMO_SMALL=1 for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup build
cmake -B build >/dev/null && cmake --build build -j2 >/dev/null

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
# Port 0: the kernel picks a free one; the server prints its URL once it listens.
build/luarun examples/serve_delay.lua 0 >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q '^listening on ' "$tmp/server.log" && break; sleep 0.1; done
grep -q '^listening on ' "$tmp/server.log" || { echo "demo: the server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }
base=$(sed -n 's/^listening on //p' "$tmp/server.log")
echo "server: $base (examples/serve_delay.lua, pid $pid)"
echo
build/luarun examples/fetch_json.lua "$base"
echo
build/luarun examples/fetch_sequential_vs_gather.lua "$base"
echo
build/luarun examples/fetch_scraper.lua "$base"
