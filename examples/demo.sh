#!/usr/bin/env bash
# The experiment of the README: sequential vs concurrent requests, and the scraper
# table, against a local server (spec/support/httpbin.py on 127.0.0.1).
#   bash examples/demo.sh            (LUARUN_DEMO_SMALL=1 for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup demo
cmake -B build >/dev/null && cmake --build build -j2 >/dev/null

tmp=$(mktemp -d)
pidfile=$tmp/httpbin.pid
cleanup() {
  if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
/usr/bin/python3 spec/support/httpbin.py --port-file "$tmp/port" --pid-file "$pidfile" \
  >"$tmp/server.log" 2>&1 &
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || { echo "demo: the test server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }
base="http://127.0.0.1:$(cat "$tmp/port")"
echo "server: $base (pid $(cat "$pidfile"))"
echo
build/luarun examples/fetch_json.lua "$base"
echo
build/luarun examples/fetch_sequential_vs_gather.lua "$base"
echo
build/luarun examples/fetch_scraper.lua "$base"
