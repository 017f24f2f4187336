#!/usr/bin/env bash
# What the client options of issue 16 cost a request: N (10,000) small GETs from
# nginx, 50 at once, with hyperfine, on a plain client and on clients with retry,
# cookies and delay_per_host (a 1 ns delay: every request goes through the gate).
# BASE=/path/to/an/older/luarun adds that binary's plain run, to compare.
#   bash bench/http_options.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
LUARUN=${LUARUN:-$root/build/luarun}
N=${N:-10000}
PY=/usr/bin/python3
tmp=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM

port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$port;
    location / { default_type application/json; return 200 '{"ok": true}'; }
  }
}
CONF
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" 2>"$tmp/nginx.log" &
pid=$!
for _ in $(seq 100); do
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
  sleep 0.1
done
url="http://127.0.0.1:$port/small"
peer="$root/bench/http_options_luarun.lua"
cmds=()
[ -n "${BASE:-}" ] && cmds+=(-n "base plain" "$BASE $peer $url $N 50 plain")
for mode in plain retry cookies delay; do
  cmds+=(-n "$mode" "$LUARUN $peer $url $N 50 $mode")
done
hyperfine -N --warmup 1 --runs "${RUNS:-10}" "${cmds[@]}"
