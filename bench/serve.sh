#!/usr/bin/env bash
# HTTP server benchmarks (issue 14), side by side in one run: luarun's http.serve against
# Node's http module, nginx + ngx_lua, uvicorn + Starlette, FastAPI on uvicorn,
# aiohttp.web and lua-http's server; for WebSocket echo against Python websockets and
# Node ws.
#   (a) GET / "Hello, World!", keep-alive, wrk -c64
#   (b) GET / JSON {"message":"Hello, World!"}, -c64
#   (c) the handler sleeps 10 ms, -c1000 (wrk --timeout 10s)
#   (d) the handler makes one GET through the peer's own client to an upstream nginx
#       serving a small static response (pinned to core 1, beside wrk), -c64
#   (e) POST of 16 KiB bodies, the answer their length (bench/serve/post16k.lua), -c64
#   (f) WebSocket echo, 64-byte text messages, 100 connections with one message in
#       flight each (bench/serve/wsload.c, compiled here): messages/s
#   (g) (a) again while 500 connections drip one header byte a second each
#       (bench/serve/drip.py): (a)'s rate without and with them
# Every server runs pinned to core 0 (taskset -c 0) with one worker/thread/process;
# wrk -t1, wsload, the dripper and (d)'s upstream run pinned to core 1. Each point is a
# fresh server, a 1 s warm-up (not counted), then DURATION s measured (5; --quick: 2).
# Peak RSS is the server's VmHWM from /proc/<pid>/status at the end of its point (nginx:
# its one worker). The last column is luarun's rate divided by the peer's (>1: luarun
# faster). luarun is $LUARUN_BIN (default build/luarun, built if missing) running
# bench/serve/luarun_<workload>.lua; without http.serve its rows say n/a.
# Everything binds 127.0.0.1 on free ports, is started here and stopped by its pid.
#   bash bench/serve.sh [--quick] [--reps=N] [a b c d e f g] [luarun node nginx starlette fastapi
#                        aiohttp luahttp websockets ws ceiling]
# No workload named: all; no peer named: all. --reps=N: every point N times, the peers
# taken in turn, the best rate kept (for a machine that others share). "ceiling" is
# nginx's `return 200` with no Lua, in (a) and (b): what the rig itself can measure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
serve=$root/bench/serve
PY=/usr/bin/python3

all_workloads="a b c d e f g"
http_peers="luarun node nginx starlette fastapi aiohttp luahttp"
ws_peers="luarun websockets ws"
all_peers="$http_peers websockets ws ceiling"
quick=0
reps=1
want_w=""
want_p=""
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    --reps=*) reps=${a#--reps=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    [a-g]) want_w="$want_w $a" ;;
    *)
      if [[ " $all_peers " == *" $a "* ]]; then want_p="$want_p $a"
      else echo "serve.sh: unknown workload or peer '$a' (workloads: $all_workloads; peers: $all_peers)" >&2; exit 2; fi ;;
  esac
done
want_w=${want_w:-$all_workloads}
want_p=${want_p:-$all_peers}
dur=5
[ "$quick" = 1 ] && dur=2
warm=1

bash .ci/setup bench
# Node's ws: npm into bench/serve/node_modules (ignored by git), only when missing.
# (npm is not in .ci/setup: NodeSource's nodejs carries its own and conflicts with
# Debian's npm package, which is needed only beside Debian's nodejs.)
if [[ " $want_w " == *" f "* && " $want_p " == *" ws "* && ! -d $serve/node_modules/ws ]]; then
  command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  npm install --prefix "$serve" --no-save --no-package-lock --no-audit --no-fund ws >/dev/null
fi
LUARUN_BIN=${LUARUN_BIN:-$root/build/luarun}
if [ ! -x "$LUARUN_BIN" ] && [ "$LUARUN_BIN" = "$root/build/luarun" ]; then
  { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build build -j2 >/dev/null; } || true
fi
luarun_status=ok
if [ ! -x "$LUARUN_BIN" ]; then
  luarun_status="n/a ($LUARUN_BIN not built)"
elif [ "$(timeout 10 "$LUARUN_BIN" -e 'local ok, http = pcall(require, "luarun.http"); io.write(ok and type(http.serve) or "none")' 2>/dev/null)" != function ]; then
  luarun_status="n/a (no http.serve in this build)"
fi
# lua-http: Debian installs it for Lua 5.1-5.3 only and a few of its pure-Lua
# dependencies (fifo, lpeg_patterns, basexx) for 5.1/5.2 only; lua-http 0.4 itself
# supports 5.4 and cqueues, luaossl, lpeg and cjson have 5.4 builds, so it runs on
# lua5.4 with those directories on its path.
luahttp_path="/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;/usr/share/lua/5.3/?.lua;/usr/share/lua/5.3/?/init.lua;/usr/share/lua/5.2/?.lua;/usr/share/lua/5.2/?/init.lua;;"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
tmp=$(mktemp -d /tmp/luarun-serve.XXXXXX)
pids=()    # long-lived: (d)'s upstream
cur_srv="" # the server of the point being measured
cur_drip=""
stop_pid() { # pid: TERM, up to 5 s, then KILL; reaped
  local p=$1 i
  kill "$p" 2>/dev/null || return 0
  for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
cleanup() {
  for p in $cur_drip $cur_srv "${pids[@]+"${pids[@]}"}"; do stop_pid "$p"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
gcc -O2 -Wall -Wextra -o "$tmp/wsload" "$serve/wsload.c"

start_nginx() { # workload port name [upstream_port] -> sets $srv_pid
  local prefix=$tmp/nginx-$3
  rm -rf "$prefix" && mkdir -p "$prefix"
  bash "$serve/nginx_conf.sh" "$1" "$2" "$prefix" "${4:-}" >"$prefix/nginx.conf"
  taskset -c "$5" nginx -c "$prefix/nginx.conf" -p "$prefix" -e "$prefix/error.log" >"$tmp/$3.log" 2>&1 &
  srv_pid=$!
}

# The upstream of (d): plain nginx, one worker, on core 1.
upstream_port=""
if [[ " $want_w " == *" d "* ]]; then
  upstream_port=$(free_port)
  start_nginx upstream "$upstream_port" upstream "" 1
  pids+=("$srv_pid")
  for _ in $(seq 100); do port_open "$upstream_port" && break; sleep 0.1; done
fi
upstream_url="http://127.0.0.1:$upstream_port/"

start_server() { # peer workload port -> $srv_pid (the process started), $srv_rss_pid
  local peer=$1 w=$2 port=$3 log=$tmp/$1-$2.log
  case $peer in
    luarun) taskset -c 0 "$LUARUN_BIN" "$serve/luarun_$w.lua" "$port" "$upstream_url" >"$log" 2>&1 & ;;
    node) taskset -c 0 node "$serve/node.js" "$w" "$port" "$upstream_url" >"$log" 2>&1 & ;;
    nginx) start_nginx "$w" "$port" "nginx-$w" "$upstream_port" 0; log=$tmp/nginx-$w.log ;;
    ceiling) start_nginx upstream "$port" "ceiling-$w" "" 0 ;;
    starlette|fastapi|aiohttp) taskset -c 0 $PY "$serve/${peer}_app.py" "$w" "$port" "$upstream_url" >"$log" 2>&1 & ;;
    luahttp) LUA_PATH=$luahttp_path taskset -c 0 lua5.4 "$serve/luahttp.lua" "$w" "$port" "$upstream_url" >"$log" 2>&1 & ;;
    websockets) taskset -c 0 $PY "$serve/ws_websockets.py" "$port" >"$log" 2>&1 & ;;
    ws) taskset -c 0 node "$serve/ws_node.js" "$port" >"$log" 2>&1 & ;;
  esac
  [ "$peer" = nginx ] || [ "$peer" = ceiling ] || srv_pid=$!
  cur_srv=$srv_pid
  srv_rss_pid=$srv_pid
  local i
  for i in $(seq 150); do
    kill -0 "$srv_pid" 2>/dev/null || break
    port_open "$port" && break
    sleep 0.1
  done
  if ! port_open "$port"; then
    echo "serve.sh: $peer ($w) did not start listening; its log:" >&2
    tail -5 "$log" >&2 || true
    return 1
  fi
  if [ "$w" != f ]; then
    local code
    if [ "$w" = e ]; then
      code=$(head -c 16384 /dev/zero | curl -s -m 5 -o "$tmp/probe" -w '%{http_code}' --data-binary @- "http://127.0.0.1:$port/" || true)
    else
      code=$(curl -s -m 5 -o "$tmp/probe" -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    fi
    if [ "$code" != 200 ]; then
      echo "serve.sh: $peer ($w) answered $code to a probe: $(head -c 200 "$tmp/probe" 2>/dev/null)" >&2
      tail -5 "$log" >&2 || true
      return 1
    fi
  fi
  if [ "$peer" = nginx ] || [ "$peer" = ceiling ]; then
    # the one worker serves; the master only waits for it
    srv_rss_pid=$(pgrep -P "$srv_pid" | head -1)
  fi
}

rss_mb() { awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# wrk: -> "rate p50 p99 errors"
to_ms() { awk -v v="$1" 'BEGIN { u = v; sub(/^[0-9.]+/, "", u); n = v + 0
  printf "%.2f", (u == "s") ? n * 1000 : (u == "us") ? n / 1000 : (u == "m") ? n * 60000 : n }'; }
run_wrk() { # port connections [wrk args...]
  local port=$1 c=$2; shift 2
  local to=5s
  [ "$c" -ge 1000 ] && to=10s
  taskset -c 1 timeout -k 5 $((warm + 30)) wrk -t1 -c"$c" -d${warm}s --timeout $to "$@" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  taskset -c 1 timeout -k 5 $((dur + 30)) wrk -t1 -c"$c" -d${dur}s --timeout $to --latency "$@" "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 || true
  local rate p50 p99 errs
  rate=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$tmp/wrk.out")
  p50=$(awk '$1 == "50%" {print $2}' "$tmp/wrk.out")
  p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")
  errs=$(awk '/Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} /Non-2xx/ {n += $NF} END {print n + 0}' "$tmp/wrk.out")
  if [ -z "$rate" ]; then echo "failed - - -"; return; fi
  echo "$rate $(to_ms "$p50") $(to_ms "$p99") $errs"
}

conns_for() { case $1 in c) echo 1000 ;; f) echo 100 ;; *) echo 64 ;; esac; }
peers_for() {
  local list=$http_peers p out=""
  case $1 in f) list=$ws_peers ;; a|b) list="$http_peers ceiling" ;; esac
  for p in $list; do [[ " $want_p " == *" $p "* ]] && out="$out $p"; done
  echo "$out"
}
ratio() { # luarun_rate peer_rate
  awk -v l="$1" -v p="$2" 'BEGIN { if (l + 0 > 0 && p + 0 > 0) printf "%.2f", l / p; else print "n/a" }'
}

title() {
  case $1 in
    a) echo "(a) GET / plaintext \"Hello, World!\", keep-alive, wrk -t1 -c64 -d${dur}s" ;;
    b) echo "(b) GET / JSON {\"message\":\"Hello, World!\"}, wrk -t1 -c64 -d${dur}s" ;;
    c) echo "(c) handler sleeps 10 ms, wrk -t1 -c1000 -d${dur}s --timeout 10s (ideal 100,000 req/s)" ;;
    d) echo "(d) one upstream GET per request (nginx static on core 1), wrk -t1 -c64 -d${dur}s" ;;
    e) echo "(e) POST 16 KiB, answer its length, wrk -t1 -c64 -d${dur}s -s bench/serve/post16k.lua" ;;
    f) echo "(f) WebSocket echo, 64-byte text messages, 100 connections, one in flight each, ${dur}s (bench/serve/wsload.c)" ;;
    g) echo "(g) (a) while 500 connections drip one header byte a second (bench/serve/drip.py), wrk -t1 -c64 -d${dur}s" ;;
  esac
}

echo "machine: $(nproc) cores, $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
echo "versions: wrk $(dpkg-query -W -f='${Version}' wrk 2>/dev/null), node $(node --version)," \
  "nginx $(nginx -v 2>&1 | sed 's|.*/||') + ngx_lua $(dpkg-query -W -f='${Version}' libnginx-mod-http-lua 2>/dev/null | sed 's/^1://')," \
  "$($PY -c 'import uvicorn, starlette, fastapi, aiohttp, websockets
try:
    import uvloop, httptools; loop = "uvloop + httptools"
except ImportError:
    loop = "asyncio + h11"
print(f"uvicorn {uvicorn.__version__} ({loop}), starlette {starlette.__version__}, fastapi {fastapi.__version__}, aiohttp {aiohttp.__version__}, websockets {websockets.__version__}")'
  ), lua-http $(dpkg-query -W -f='${Version}' lua-http 2>/dev/null) on lua5.4," \
  "ws $(node -e 'console.log(require(process.argv[1] + "/node_modules/ws/package.json").version)' "$serve" 2>/dev/null || echo 'not installed')"
dirty=""
if [ -n "$(git status --porcelain -- core bindings lua CMakeLists.txt 2>/dev/null)" ]; then
  dirty=" (the tree has uncommitted runtime changes; the build may include them)"
fi
echo "luarun: $LUARUN_BIN: $luarun_status$dirty"
echo "server on core 0; wrk -t1 / wsload / dripper / (d)'s upstream on core 1; ${warm} s warm-up, ${dur} s points"

for w in $want_w; do
  peers=$(peers_for "$w")
  [ -n "$peers" ] || continue
  echo
  title "$w"
  declare -A rate=() p50=() p99=() errs=() rss=() extra=() base=()
  for rep in $(seq "$reps"); do
  for p in $peers; do
    if [ "$p" = luarun ] && [ "$luarun_status" != ok ]; then rate[$p]="n/a"; continue; fi
    port=$(free_port)
    if ! start_server "$p" "$w" "$port"; then
      [ -n "${rate[$p]:-}" ] || rate[$p]=failed
      stop_pid "$srv_pid"
      cur_srv=""
      continue
    fi
    R=failed A=- B=- E=- X="" BASE=""
    case $w in
      f)
        read -r line < <(taskset -c 1 timeout -k 5 $((warm + dur + 30)) "$tmp/wsload" 127.0.0.1 "$port" 100 "$dur" 1 "$warm" 2>"$tmp/wsload.err" || true)
        line=${line:-}
        if [ -n "$line" ]; then
          eval "$(echo "$line" | tr ' ' '\n' | sed 's/^/ws_/')"
          R=$ws_rate E=$ws_errors
          A=$(awk -v u="$ws_p50_us" 'BEGIN {printf "%.2f", u / 1000}')
          B=$(awk -v u="$ws_p99_us" 'BEGIN {printf "%.2f", u / 1000}')
        else
          head -3 "$tmp/wsload.err" >&2
        fi ;;
      g)
        read -r BASE _ _ _ < <(run_wrk "$port" 64)
        rm -f "$tmp/drip.ready"
        taskset -c 1 timeout -k 5 $((warm + dur + 60)) $PY "$serve/drip.py" "$port" 500 $((warm + dur + 1)) "$tmp/drip.ready" >"$tmp/drip.out" 2>&1 &
        drip=$!
        cur_drip=$drip
        for _ in $(seq 300); do [ -s "$tmp/drip.ready" ] && break; kill -0 "$drip" 2>/dev/null || break; sleep 0.1; done
        sleep 1 # every connection has sent its head and a first byte
        if [ -s "$tmp/drip.ready" ]; then
          read -r R A B E < <(run_wrk "$port" 64)
        else
          R="failed (dripper could not open 500)"
        fi
        wait "$drip" 2>/dev/null || true
        cur_drip=""
        X=$(tail -1 "$tmp/drip.out") ;;
      *)
        args=()
        [ "$w" = e ] && args=(-s "$serve/post16k.lua")
        read -r R A B E < <(run_wrk "$port" "$(conns_for "$w")" "${args[@]+"${args[@]}"}") ;;
    esac
    RSS=$(rss_mb "$srv_rss_pid")
    stop_pid "$srv_pid"
    cur_srv=""
    # best of the repetitions (by rate); (g) keeps its best without and with separately
    if ! [[ ${rate[$p]:-} =~ ^[0-9]+$ ]] || { [[ $R =~ ^[0-9]+$ ]] && [ "$R" -gt "${rate[$p]}" ]; }; then
      rate[$p]=$R p50[$p]=$A p99[$p]=$B errs[$p]=$E rss[$p]=$RSS extra[$p]=$X
    fi
    if [[ $BASE =~ ^[0-9]+$ ]] && [ "$BASE" -gt "${base[$p]:-0}" ]; then base[$p]=$BASE; fi
  done
  done
  l=${rate[luarun]:-n/a}
  if [ "$w" = g ]; then
    echo "| peer | (a) req/s | req/s with 500 dripping | kept | p50 ms | p99 ms | errors | peak RSS MB | luarun ÷ peer | dripper at the end |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  else
    unit="req/s"
    [ "$w" = f ] && unit="messages/s"
    echo "| peer | $unit | p50 ms | p99 ms | errors | peak RSS MB | luarun ÷ peer |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
  fi
  for p in $peers; do
    r=${rate[$p]:-n/a}
    if [ "$w" = g ]; then
      kept=$(awk -v a="${base[$p]:-}" -v b="$r" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.0f %%", 100 * b / a; else print "-" }')
      echo "| $p | ${base[$p]:-n/a} | $r | $kept | ${p50[$p]:--} | ${p99[$p]:--} | ${errs[$p]:--} | ${rss[$p]:--} | $(ratio "$l" "$r") | ${extra[$p]:-} |"
    else
      echo "| $p | $r | ${p50[$p]:--} | ${p99[$p]:--} | ${errs[$p]:--} | ${rss[$p]:--} | $(ratio "$l" "$r") |"
    fi
  done
  unset rate p50 p99 errs rss extra base
done
echo
echo "load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
