#!/usr/bin/env bash
# shellcheck disable=SC2046,SC2206,SC2154  # word splitting of command lists is meant; $build comes from build_under_test.sh
# Serving floors (issue 14): the HTTP/1.1 libraries luarun could serve with, alone in C,
# beside luarun's http.serve and the rig's ceiling, side by side in one run.
#   floor_h1   libuv + http-parser 2.9.4 (luarun's stack), bench/serve/floors/floor_h1.c
#   floor_h2o  libh2o 2.2 on its libuv backend (libh2o.so), bench/serve/floors/floor_h2o.c
#   nginx      `return 200 "Hello, World!"`, one worker, not a daemon (GET only: the ceiling)
#   luarun     http.serve returning "Hello, World!" ($LUARUN_BIN, default build/luarun)
# GET: wrk -t1 -c64, keep-alive, "Hello, World!". POST: the same with 16 KiB bodies
# (bench/serve/post16k.lua), each server answering the body's length; nginx is left out
# (`return` discards the body unread).
# Every server runs pinned to core 0 (taskset -c 0), wrk -t1 pinned to core 1; each point
# is a fresh server, a 1 s warm-up, then DURATION s measured (--duration, 5). Rounds are
# interleaved (--rounds, 3; the servers' order rotates each round) and the medians of
# req/s and of wrk's p99 are printed, with the server's CPU time (user + system, its
# whole process tree, from /proc) during the measured seconds: as a share of one core
# (under 100: the server waited, for wrk or for a core shared with other work) and per
# request (kernel time included; this is what the CPU-bound cases compare).
# --callgrind adds instructions per request (user space, valgrind's Ir; the kernel's
# share is not counted) for floor_h1, floor_h2o and luarun: the server under
# valgrind --tool=callgrind, bench/serve/floors/reqclient.c sending --requests N (2000)
# requests one at a time on one keep-alive connection, minus a run in which the client
# connects and sends none (memcpy kept on its vector loop, see cg_tunables below).
# Repeatable on a busy machine, where req/s is not.
# The upload step (--no-upload skips it): one POST of --upload-mb MiB (256) with curl to
# floor_h1, floor_h2o and luarun (reading it with req:body_chunks()), and each server's
# peak RSS after it: whether the library holds a whole request body in memory.
# --head measures HEAD exported with git archive and built in /tmp (bench/build_under_test.sh)
# instead of build/luarun. --no-wrk skips the req/s rounds (with --callgrind: only that).
# Everything binds 127.0.0.1 on free ports, is started here, stopped by its pid and
# bounded in time (each server runs under `timeout`).
#   bash bench/serve/floors.sh [--rounds N] [--duration S] [--callgrind] [--requests N]
#                              [--head] [--no-wrk] [--no-upload] [--upload-mb N]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
floors=$root/bench/serve/floors
PY=/usr/bin/python3

rounds=3 dur=5 warm=1 callgrind=0 cg_n=2000 head=0 do_wrk=1 do_upload=1 upload_mb=256
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift ;;
    --duration) dur=$2; shift ;;
    --callgrind) callgrind=1 ;;
    --requests) cg_n=$2; shift ;;
    --head) head=1 ;;
    --no-wrk) do_wrk=0 ;;
    --no-upload) do_upload=0 ;;
    --upload-mb) upload_mb=$2; shift ;;
    -h|--help) sed -n '3,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "floors.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

want="gcc wrk libuv1-dev libhttp-parser-dev libh2o-dev libssl-dev pkg-config"
[ "$callgrind" = 1 ] && want="$want valgrind"
missing=()
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
command -v nginx >/dev/null || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  echo "floors.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

tmp=$(mktemp -d /tmp/floors.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.2
  for p in "${pids[@]+"${pids[@]}"}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- builds -------------------------------------------------------------------------
gcc -O2 -Wall -o "$tmp/floor_h1" "$floors/floor_h1.c" -luv -lhttp_parser
# libh2o.so is h2o's libuv build (it links libuv.so.1); libh2o-evloop.so is its own loop
gcc -O2 -Wall -o "$tmp/floor_h2o" "$floors/floor_h2o.c" $(pkg-config --cflags --libs libh2o) -luv -lssl -lcrypto
ldd "$tmp/floor_h2o" | grep -q 'libuv\.so' || { echo "floors.sh: floor_h2o does not link libuv" >&2; exit 1; }
gcc -O2 -Wall -o "$tmp/reqclient" "$floors/reqclient.c"

if [ "$head" = 1 ]; then
  # shellcheck source=../build_under_test.sh
  . "$root/bench/build_under_test.sh"
  LUARUN_BIN=$build/luarun
else
  LUARUN_BIN=${LUARUN_BIN:-$root/build/luarun}
  if [ ! -x "$LUARUN_BIN" ] && [ "$LUARUN_BIN" = "$root/build/luarun" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null && cmake --build build -j2 >/dev/null
  fi
  built="$LUARUN_BIN at HEAD $(git rev-parse --short HEAD)"
  [ -n "$(git status --porcelain -- core bindings lua CMakeLists.txt cmake 2>/dev/null)" ] &&
    built="$built (uncommitted changes in the tree; --head avoids them)"
fi
have_luarun=1
if [ ! -x "$LUARUN_BIN" ] ||
   [ "$(timeout 10 "$LUARUN_BIN" -e 'local ok, http = pcall(require, "luarun.http"); io.write(ok and type(http.serve) or "none")' 2>/dev/null)" != function ]; then
  echo "floors.sh: $LUARUN_BIN has no http.serve: its rows are left out" >&2
  have_luarun=0
fi
cat >"$tmp/hello.lua" <<'LUA'
local http = require "luarun.http"; local s = http.serve({port = tonumber(arg[1])}, function() return "Hello, World!" end); s:wait()
LUA
cat >"$tmp/post.lua" <<'LUA'
local http = require "luarun.http"; local s = http.serve({port = tonumber(arg[1])}, function(req) return tostring(#req:body()) end); s:wait()
LUA

cat >"$tmp/upload.lua" <<'LUA'
local http = require "luarun.http"
local s = http.serve({port = tonumber(arg[1]), max_body_size = 1 << 30}, function(req)
  local n = 0
  for chunk in req:body_chunks() do n = n + #chunk end
  return tostring(n)
end)
s:wait()
LUA

free_port() { $PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

nginx_conf() { # port prefix
  cat <<CONF
worker_processes 1;
daemon off;
pid $2/nginx.pid;
error_log $2/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path $2/body;
  proxy_temp_path $2/proxy;
  fastcgi_temp_path $2/fastcgi;
  uwsgi_temp_path $2/uwsgi;
  scgi_temp_path $2/scgi;
  server {
    listen 127.0.0.1:$1 backlog=4096;
    location / { default_type text/plain; return 200 'Hello, World!'; }
  }
}
CONF
}

# the command line of SERVER for WORKLOAD (get|post) on PORT
server_cmd() { # server workload port
  case $1 in
    floor_h1) echo "$tmp/floor_h1 $3" ;;
    floor_h2o) echo "$tmp/floor_h2o $3" ;;
    luarun)
      case $2 in
        post) echo "$LUARUN_BIN $tmp/post.lua $3" ;;
        upload) echo "$LUARUN_BIN $tmp/upload.lua $3" ;;
        *) echo "$LUARUN_BIN $tmp/hello.lua $3" ;;
      esac ;;
    nginx)
      local prefix=$tmp/nginx-$3
      mkdir -p "$prefix"
      nginx_conf "$3" "$prefix" >"$prefix/nginx.conf"
      echo "nginx -c $prefix/nginx.conf -p $prefix -e $prefix/error.log" ;;
  esac
}

srv_pid=""
start_server() { # limit_s port [wrapper...] -- cmd...: runs pinned to core 0 -> $srv_pid
  local limit=$1 port=$2; shift 2
  # shellcheck disable=SC2068
  taskset -c 0 timeout -k 5 "$limit" "$@" >"$tmp/server.log" 2>&1 &
  srv_pid=$!
  pids+=("$srv_pid")
  local i
  for i in $(seq 150); do # up to 30 s (valgrind starts slowly)
    if $PY - "$port" 2>/dev/null <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
s.connect(("127.0.0.1", int(sys.argv[1])))
PY
    then return 0; fi
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "floors.sh: server on port $port did not come up:" >&2
  cat "$tmp/server.log" >&2
  return 1
}

stop_server() { # pid: TERM, then KILL after 10 s
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  local keep=() q
  for q in "${pids[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  pids=("${keep[@]+"${keep[@]}"}")
}

# wrk's latency figure -> ms
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }

# CPU time in ns (user + system, /proc/PID/task/*/schedstat) of PID, its threads and all
# its descendants (the server under `timeout`, nginx's worker)
tree_cpu_ns() {
  local p
  for p in $(ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
      END { q[1] = root; n = 1; for (i = 1; i <= n; i++) { print q[i]; m = split(kids[q[i]], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] } }'); do
    cat /proc/"$p"/task/*/schedstat 2>/dev/null || true
  done | awk '{ t += $1 } END { printf "%.0f\n", t }'
}

run_wrk() { # port server_pid [wrk args] -> "rate p99_ms errors cpu_pct cpu_us_per_req"
  local port=$1 spid=$2; shift 2
  taskset -c 1 timeout -k 5 $((warm + 30)) wrk -t1 -c64 -d${warm}s "$@" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  local t0 t1 w0 w1
  t0=$(tree_cpu_ns "$spid"); w0=$(date +%s.%N)
  taskset -c 1 timeout -k 5 $((dur + 30)) wrk -t1 -c64 -d${dur}s --latency "$@" "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 || true
  t1=$(tree_cpu_ns "$spid"); w1=$(date +%s.%N)
  local rate p99 errs reqs
  rate=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$tmp/wrk.out")
  reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
  p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")
  errs=$(awk '/Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} /Non-2xx/ {n += $NF} END {print n + 0}' "$tmp/wrk.out")
  awk -v r="${rate:-0}" -v p="$(to_ms "${p99:-0}")" -v e="$errs" -v dt=$((t1 - t0)) -v hz=1000000000 \
      -v w0="$w0" -v w1="$w1" -v n="${reqs:-0}" \
      'BEGIN { w = w1 - w0; printf "%s %s %s %.0f %.1f\n", r, p, e, 100 * dt / hz / w, (n > 0 ? 1e6 * dt / hz / n : 0) }'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

commas() { $PY -c 'import sys; v = sys.argv[1]; print(f"{float(v):,.0f}" if v.replace(".", "").isdigit() else v)' "$1"; }

echo "# serving floors, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
echo "load before: $(uptime | sed 's/.*load average/load average/')"
echo "luarun: $built"
echo "versions: libuv $(dpkg-query -W -f='${Version}' libuv1-dev), http-parser $(dpkg-query -W -f='${Version}' libhttp-parser-dev)," \
  "libh2o $(dpkg-query -W -f='${Version}' libh2o-dev) (libh2o.so, libuv backend), nginx $(nginx -v 2>&1 | sed 's|.*/||'), wrk $(dpkg-query -W -f='${Version}' wrk)"

if [ "$do_wrk" = 1 ]; then
  get_servers="floor_h1 floor_h2o nginx"
  post_servers="floor_h1 floor_h2o"
  [ "$have_luarun" = 1 ] && get_servers="$get_servers luarun" && post_servers="$post_servers luarun"
  echo "server on core 0, wrk -t1 -c64 on core 1; ${warm} s warm-up, ${dur} s points, $rounds interleaved rounds"
  declare -A rates p99s errors cpus cpureqs
  for ((r = 1; r <= rounds; r++)); do
    for wl in get post; do
      if [ "$wl" = get ]; then list=($get_servers); args=(); else list=($post_servers); args=(-s "$root/bench/serve/post16k.lua"); fi
      n=${#list[@]}
      for ((i = 0; i < n; i++)); do
        s=${list[$(((i + r - 1) % n))]}
        port=$(free_port)
        # shellcheck disable=SC2046
        start_server $((warm + dur + 60)) "$port" $(server_cmd "$s" "$wl" "$port")
        read -r rate p99 errs cpu cpureq < <(run_wrk "$port" "$srv_pid" "${args[@]+"${args[@]}"}")
        stop_server "$srv_pid"
        rates[$wl.$s]="${rates[$wl.$s]-} $rate"
        p99s[$wl.$s]="${p99s[$wl.$s]-} $p99"
        cpus[$wl.$s]="${cpus[$wl.$s]-} $cpu"
        cpureqs[$wl.$s]="${cpureqs[$wl.$s]-} $cpureq"
        errors[$wl.$s]=$(( ${errors[$wl.$s]-0} + errs ))
        printf '  round %d %-4s %-9s %8s req/s  p99 %6s ms  server CPU %3s %%  %5s us/req  errors %s\n' \
          "$r" "$wl" "$s" "$rate" "$p99" "$cpu" "$cpureq" "$errs"
      done
    done
  done
  echo "load after: $(uptime | sed 's/.*load average/load average/')"
  for wl in get post; do
    if [ "$wl" = get ]; then
      echo; echo "GET / \"Hello, World!\", keep-alive, wrk -t1 -c64 -d${dur}s"; list=($get_servers)
    else
      echo; echo "POST 16 KiB (bench/serve/post16k.lua), answer its length, wrk -t1 -c64 -d${dur}s"; list=($post_servers)
    fi
    printf '| %-9s | %11s | %12s | %12s | %13s | %-24s | %6s |\n' server "req/s (med)" "p99 ms (med)" \
      "CPU % (med)" "CPU us/req (med)" "req/s per round" errors
    printf '|:%s|%s:|%s:|%s:|%s:|:%s|%s:|\n' ---------- ------------ ------------- ------------- ----------------- \
      ------------------------- -------
    for s in "${list[@]}"; do
      printf '| %-9s | %11s | %12s | %12s | %16s | %-24s | %6s |\n' "$s" "$(commas "$(echo "${rates[$wl.$s]}" | median)")" \
        "$(echo "${p99s[$wl.$s]}" | median)" "$(echo "${cpus[$wl.$s]}" | median)" "$(echo "${cpureqs[$wl.$s]}" | median)" \
        "$(echo "${rates[$wl.$s]}" | sed 's/^ //')" "${errors[$wl.$s]}"
    done
  done
fi

# One large upload: does the server hold the whole body? Peak RSS (VmHWM of the server
# process) after one POST of UPLOAD_MB MiB by curl, against its peak after one GET.
# luarun reads it with req:body_chunks(), floor_h1 counts it as it streams; h2o 2.2 gives
# its handler nothing before the whole body is in memory.
if [ "$do_upload" = 1 ]; then
  echo
  echo "one POST of $upload_mb MiB (curl --data-binary), server's peak RSS (VmHWM) after a GET and after the POST"
  head -c $((upload_mb << 20)) /dev/zero >"$tmp/upload.bin"
  up_servers="floor_h1 floor_h2o"
  [ "$have_luarun" = 1 ] && up_servers="$up_servers luarun"
  hwm() { # pid of `timeout` -> VmHWM in MiB of its child, the server
    local c; c=$(ps -o pid= --ppid "$1" | head -1 | tr -d ' ')
    awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$c/status"
  }
  printf '| %-9s | %14s | %15s | %-12s |\n' server "RSS after GET" "RSS after POST" answer
  printf '|:%s|%s:|%s:|:%s|\n' ---------- --------------- ---------------- -------------
  for s in $up_servers; do
    port=$(free_port)
    # shellcheck disable=SC2046
    start_server 120 "$port" $(server_cmd "$s" upload "$port")
    curl -s -o /dev/null --max-time 20 "http://127.0.0.1:$port/" || true
    before=$(hwm "$srv_pid")
    ans=$(curl -s --max-time 60 -H 'Content-Type: application/octet-stream' --data-binary @"$tmp/upload.bin" "http://127.0.0.1:$port/" || echo failed)
    after=$(hwm "$srv_pid")
    stop_server "$srv_pid"
    printf '| %-9s | %11s MB | %12s MB | %-12s |\n' "$s" "$before" "$after" "$ans"
  done
  rm -f "$tmp/upload.bin"
fi

if [ "$callgrind" = 1 ]; then
  echo
  echo "instructions per request (callgrind Ir, user space): ($cg_n requests - 0 requests) / $cg_n, one keep-alive connection"
  # valgrind counts every iteration of `rep movsb` as an instruction, and glibc's memcpy
  # uses it from 2 KiB up: a 16 KiB copy would count as ~16,400 instructions where the
  # vector loop glibc uses below that size takes ~1,000. Raising the threshold keeps
  # memcpy on the vector loop, so a copy of the body counts about what it costs.
  cg_tunables=glibc.cpu.x86_rep_movsb_threshold=1073741824
  echo "(memcpy kept off rep movsb: GLIBC_TUNABLES=$cg_tunables)"
  cg_servers="floor_h1 floor_h2o"
  [ "$have_luarun" = 1 ] && cg_servers="$cg_servers luarun"
  cg_run() { # server workload n -> Ir total
    local port; port=$(free_port)
    local body=""
    [ "$2" = post ] && body=16384
    # shellcheck disable=SC2046
    start_server 600 "$port" env GLIBC_TUNABLES="$cg_tunables" valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" $(server_cmd "$1" "$2" "$port") || return 1
    # the readiness probe above opened one connection; so does every run
    timeout 300 "$tmp/reqclient" "$port" "$3" $body || echo "floors.sh: reqclient failed against $1" >&2
    stop_server "$srv_pid"
    awk '/Collected :/ {print $NF}' "$tmp/server.log" | tail -1
  }
  printf '| %-9s | %14s | %14s |\n' server "GET instr/req" "POST 16 KiB instr/req"
  printf '|:%s|%s:|%s:|\n' ---------- --------------- ----------------------
  for s in $cg_servers; do
    row=()
    for wl in get post; do
      base=$(cg_run "$s" "$wl" 0)
      full=$(cg_run "$s" "$wl" "$cg_n")
      row+=("$(awk -v a="$full" -v b="$base" -v n="$cg_n" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.0f", (a - b) / n }')")
    done
    printf '| %-9s | %14s | %14s |\n' "$s" "$(commas "${row[0]}")" "$(commas "${row[1]}")"
  done
  echo "load after: $(uptime | sed 's/.*load average/load average/')"
fi
