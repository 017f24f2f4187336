#!/usr/bin/env bash
# HTTP client benchmarks, side by side in one run: luarun, Python httpx and aiohttp,
# Node's fetch and curl --parallel.
#   (a) 100 x /delay/1 all at once: wall time
#   (b) 1,000 x /delay/0.1 with 10, 50, 100 at once: wall time
#   (c) 20,000 small responses from nginx, 64 at once: requests/s and peak RSS,
#       with wrk -c64 as the ceiling, and libcurl alone (bench/http_curl_floor.c: the
#       same requests from a bare C loop on libcurl's multi socket interface, no
#       Lua) as the ceiling of any client built on this libcurl
# Delays come from bench/http_delay/server.c (one epoll loop, deadlines to the
# nanosecond on a timerfd; compiled here), or with DELAY=nginx from nginx's echo
# module (echo_sleep: timers in whole milliseconds, ~1-4 ms added to a delay), or with
# DELAY=python from bench/http_delay_server.py (asyncio, ~3-6 ms added); the run
# prints what each server adds. (c) is served by nginx whatever DELAY says. Every
# server binds 127.0.0.1 and is stopped by its pid.
# The machine is shared: (b) at 50 and 100 and (c) keep the best of REPS runs (3) of
# every client, taken in turn.
#   bash bench/http_bench.sh [a] [b] [c]      (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash .ci/setup bench
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j2 >/dev/null
LUARUN=${LUARUN:-$root/build/luarun}
PY=/usr/bin/python3
parts=${*:-a b c}

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wait_file() { for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done; return 1; }

# ---- servers ----
gcc -O2 -Wall -Wextra -o "$tmp/delay_server" bench/http_delay/server.c
gcc -O2 -Wall -Wextra -o "$tmp/curl_floor" bench/http_curl_floor.c -lcurl
"$tmp/delay_server" "$tmp/cdelay.port" "$tmp/cdelay.pid" 2>"$tmp/cdelay.log" &
wait_file "$tmp/cdelay.pid" && wait_file "$tmp/cdelay.port" || { cat "$tmp/cdelay.log"; exit 1; }
pids+=("$(cat "$tmp/cdelay.pid")")
cdelay="http://127.0.0.1:$(cat "$tmp/cdelay.port")"

$PY bench/http_delay_server.py "$tmp/delay.port" "$tmp/delay.pid" 2>"$tmp/delay.log" &
wait_file "$tmp/delay.pid" && wait_file "$tmp/delay.port" || { cat "$tmp/delay.log"; exit 1; }
pids+=("$(cat "$tmp/delay.pid")")
pydelay="http://127.0.0.1:$(cat "$tmp/delay.port")"

nginx_port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/nginx"
echo_mod=/usr/lib/nginx/modules/ngx_http_echo_module.so
{
  [ -f $echo_mod ] && echo "load_module $echo_mod;"
  cat <<CONF
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
    listen 127.0.0.1:$nginx_port;
CONF
  [ -f $echo_mod ] && cat <<'CONF'
    location ~ ^/delay/(?<secs>[0-9.]+)$ {
      default_type application/json;
      echo_sleep $secs;
      echo -n '{"delay": $secs}';
    }
CONF
  cat <<CONF
    location / { default_type application/json; return 200 '{"ok": true}'; }
  }
}
CONF
} >"$tmp/nginx/nginx.conf"
nginx -c "$tmp/nginx/nginx.conf" -p "$tmp/nginx" 2>"$tmp/nginx.log" &
pids+=("$!")
for _ in $(seq 100); do
  bash -c "exec 3<>/dev/tcp/127.0.0.1/$nginx_port" 2>/dev/null && break
  sleep 0.1
done
small="http://127.0.0.1:$nginx_port/small"
case ${DELAY:-c} in
  c)
    delay=$cdelay
    delay_name="bench/http_delay/server.c (epoll + timerfd)" ;;
  nginx)
    [ -f $echo_mod ] || { echo "DELAY=nginx needs $echo_mod (libnginx-mod-http-echo)" >&2; exit 1; }
    delay="http://127.0.0.1:$nginx_port"
    delay_name="nginx echo_sleep" ;;
  python)
    delay=$pydelay
    delay_name="bench/http_delay_server.py (asyncio)" ;;
  *) echo "DELAY=${DELAY}: c, nginx or python" >&2; exit 2 ;;
esac

# ---- clients: each prints "wall_seconds failures" ----
run_curl() { # url n limit
  local cfg=$tmp/curl.cfg i
  : >"$cfg"
  for ((i = 0; i < $2; i++)); do printf 'url = "%s"\noutput = "/dev/null"\n' "$1" >>"$cfg"; done
  local t0 t1
  t0=$(date +%s.%N)
  curl --parallel --parallel-immediate --parallel-max "$3" -s --no-progress-meter -K "$cfg" 2>/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f 0\n", b - a}'
}
client() { # name url n limit
  case $1 in
    luarun) "$LUARUN" bench/http_luarun.lua "$2" "$3" "$4" ;;
    luarun-workers) "$LUARUN" bench/http_luarun.lua "$2" "$3" "$4" workers ;;
    httpx) $PY bench/http_httpx.py "$2" "$3" "$4" ;;
    aiohttp) $PY bench/http_aiohttp.py "$2" "$3" "$4" ;;
    node) node bench/http_node.mjs "$2" "$3" "$4" ;;
    curl) run_curl "$2" "$3" "$4" ;;
    libcurl-alone) "$tmp/curl_floor" "$2" "$3" "$4" ;;
  esac
}
clients="luarun httpx aiohttp node curl"

echo "machine: $(nproc) cores, $(uname -r); curl $(curl --version | head -1 | cut -d' ' -f2)," \
     "node $(node --version), httpx $($PY -c 'import httpx; print(httpx.__version__)')," \
     "aiohttp $($PY -c 'import aiohttp; print(aiohttp.__version__)')"

echo "load: $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
echo "delay server: $delay_name"
echo
# wrk is the client that adds least: its mean latency on /delay/0.1, less 100 ms, is
# what the server itself adds to every request at that concurrency.
wrk_ms() { # url connections -> mean latency in ms
  wrk -t1 -c"$2" -d3s "$1" | awk '$1 == "Latency" {
    v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
    printf "%.2f", (u == "s") ? v * 1000 : (u == "us") ? v / 1000 : v }'
}
echo "What a delay server adds to /delay/0.1 (wrk's mean latency less 100 ms) at 1 / 10 / 100 connections"
for srv in "C server=$cdelay" "nginx echo_sleep=http://127.0.0.1:$nginx_port" "asyncio server=$pydelay"; do
  [ -f $echo_mod ] || [[ $srv != nginx* ]] || continue
  row=$(printf "  %-18s" "${srv%%=*}:")
  for c in 1 10 100; do
    row="$row $(awk -v m="$(wrk_ms "${srv#*=}/delay/0.1" $c)" 'BEGIN {printf "%.2f ms", m - 100}')"
  done
  echo "$row"
done

if [[ $parts == *a* ]]; then
  echo
  echo "(a) 100 x /delay/1, all at once: wall time (s)"
  echo "| client | wall | failures |"
  echo "|---|---|---|"
  for c in $clients; do
    read -r wall fails < <(client "$c" "$delay/delay/1" 100 100)
    echo "| $c | $wall | $fails |"
  done
fi

if [[ $parts == *b* ]]; then
  echo
  echo "(b) 1,000 x /delay/0.1: wall time (s) at 10 / 50 / 100 at once (ideal 10.00 / 2.00 / 1.00;"
  echo "    50 and 100: best of ${REPS:-3})"
  echo "| client | 10 | 50 | 100 |"
  echo "|---|---|---|---|"
  declare -A best
  for rep in $(seq "${REPS:-3}"); do
    for c in $clients; do
      for lim in 10 50 100; do
        [ "$lim" = 10 ] && [ "$rep" -gt 1 ] && continue # 10 s a run: once
        read -r wall fails < <(client "$c" "$delay/delay/0.1" 1000 "$lim")
        [ "$fails" = 0 ] || wall="$wall ($fails failed)"
        prev=${best[$c.$lim]:-}
        if [ -z "$prev" ] || awk -v a="$wall" -v b="$prev" 'BEGIN {exit !(a + 0 < b + 0)}'; then
          best[$c.$lim]=$wall
        fi
      done
    done
  done
  for c in $clients; do
    echo "| $c | ${best[$c.10]} | ${best[$c.50]} | ${best[$c.100]} |"
  done
fi

if [[ $parts == *c* ]]; then
  echo
  echo "(c) 20,000 x small body from nginx, 64 at once: requests/s and peak RSS (best of ${REPS:-3})"
  echo "| client | wall (s) | requests/s | peak RSS (MB) |"
  echo "|---|---|---|---|"
  declare -A cw cr
  for rep in $(seq "${REPS:-3}"); do
    for c in $clients luarun-workers libcurl-alone; do
      /usr/bin/time -f %M -o "$tmp/rss" bash -c "$(declare -f client run_curl); \
        LUARUN='$LUARUN' PY='$PY' tmp='$tmp' client $c '$small' 20000 64" >"$tmp/out"
      read -r wall fails <"$tmp/out"
      [ "$fails" = 0 ] || wall="$wall ($fails failed)"
      if [ -z "${cw[$c]:-}" ] || awk -v a="$wall" -v b="${cw[$c]}" 'BEGIN {exit !(a + 0 < b + 0)}'; then
        cw[$c]=$wall
        cr[$c]=$(awk '{printf "%.1f", $1 / 1024}' "$tmp/rss")
      fi
    done
  done
  for c in $clients luarun-workers libcurl-alone; do
    rps=$(awk -v w="${cw[$c]}" 'BEGIN {printf "%.0f", 20000 / (w + 0)}')
    echo "| $c | ${cw[$c]} | $rps | ${cr[$c]} |"  # a wall of "s (N failed)" says so
  done
  for t in 1 2; do
    wrk_rps=$(wrk -t$t -c64 -d5s "$small" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    echo "| wrk -t$t -c64 -d5s (ceiling) | | $wrk_rps | |"
  done
fi
