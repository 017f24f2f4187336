#!/usr/bin/env bash
# Database benchmark (issue 15, item 7): luarun.db against asyncpg, psycopg 3 (async),
# node-postgres, Python's sqlite3, aiosqlite and better-sqlite3, in one run against one
# PostgreSQL 15 server that this script starts (Unix socket only, fsync off; the server
# on core 0, the clients on core 1). Each cell is one process per workload, timed by the
# process itself (connecting and building the input are outside the clock) and its peak
# RSS taken by /usr/bin/time.
#   a         20,000 point selects by primary key, 50 tasks over a pool of 10
#   b         20,000 `SELECT $1::int + 1`, 100 tasks on ONE connection (asyncpg: through
#             a lock, as it refuses overlap; psycopg: pipeline mode; node-postgres: its
#             pipeline option)
#   b_seq     the same 20,000 from one task, one after another
#   c_full    all 1,000,000 rows of a 4-column table in one result
#   c_cursor  the same through a cursor or stream (asyncpg cursor, psycopg server-side
#             cursor and pg-cursor, 1000 rows a fetch; luarun conn:rows)
#   d         100,000 inserts, the fastest way each offers (COPY)
#   e_insert  SQLite: 100,000 inserts in one transaction, one statement a call
#   e_select  SQLite: 100,000 point selects, one statement a call
#   e_tick    SQLite: 100 tasks share 100,000 point selects on one connection while a
#             10 ms timer ticks: the worst tick lateness, in ms
#
#   bench/db.sh [--quick] [--only=a,b,...] [--reps=N]
#     --quick   a tenth of every N;  --only  these workloads;  --reps  median of N runs
#
# Environment: LUARUN_BUILD (build directory, default build); SQLITE_PIN (a command
# such as "taskset -c 1" to pin the SQLite rows too, which run unpinned by default). Installs what it lacks:
# Debian packages with apt-get, the Node peers with npm into bench/db/node_modules.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
quick=0 only="" reps=1
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    --only=*) only=",${a#--only=}," ;;
    --reps=*) reps=${a#--reps=} ;;
    *) sed -n '2,/^set /p' "$0" | sed '$d'; exit 2 ;;
  esac
done
scale=$((quick ? 10 : 1))
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
py=/usr/bin/python3
pgbin=/usr/lib/postgresql/15/bin

# What each workload is, for whom, and how many.
rows="a b b_seq c_full c_cursor d e_insert e_select e_tick"
peers="luarun asyncpg psycopg node-pg sqlite3 aiosqlite better-sqlite3"
declare -A n=([a]=20000 [b]=20000 [b_seq]=20000 [c_full]=1000000 [c_cursor]=1000000
              [d]=100000 [e_insert]=100000 [e_select]=100000 [e_tick]=100000)
pg_cmd() { # the command of a PostgreSQL peer
  case "$1" in
    luarun) echo "$build/luarun bench/db/luarun_pg.lua" ;;
    asyncpg) echo "$py bench/db/py_asyncpg.py" ;;
    psycopg) echo "$py bench/db/py_psycopg.py" ;;
    node-pg) echo "node bench/db/node_pg.js" ;;
  esac
}
sqlite_cmd() { # the command of a SQLite peer (e_tick: luarun and aiosqlite only)
  case "$1" in
    luarun) echo "$build/luarun bench/db/luarun_sqlite.lua" ;;
    aiosqlite) echo "$py bench/db/py_aiosqlite.py" ;;
    sqlite3) [ "$2" != e_tick ] && echo "$py bench/db/py_sqlite3.py" ;;
    better-sqlite3) [ "$2" != e_tick ] && echo "node bench/db/node_better_sqlite3.js" ;;
  esac
}
wanted() { [ -z "$only" ] || [[ "$only" == *",$1,"* ]]; }

echo "bench/db.sh $*"
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# Install what is missing.
missing=()
for p in time postgresql-15 python3-asyncpg python3-psycopg python3-psycopg-pool python3-aiosqlite; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v npm >/dev/null || { echo "installing npm"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
if ! (cd bench/db && node -e 'require("pg"); require("pg-cursor"); require("pg-copy-streams");
                              new (require("better-sqlite3"))(":memory:")' 2>/dev/null); then
  echo "installing the Node peers (npm; better-sqlite3 builds from source, about a minute)"
  (cd bench/db && npm install --no-audit --no-fund --loglevel=error >/dev/null)
fi
[ -x "$build/luarun" ] || { cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null; }

# Cores: the server on 0, the clients on 1 (no pinning on one core).
if [ "$(nproc)" -ge 2 ]; then srv_pin="taskset -c 0"; cli_pin="taskset -c 1"; else srv_pin=""; cli_pin=""; fi

# The server: as pgserver.lua starts it (spec/support), as postgres when we are root.
tmp=$(mktemp -d /tmp/luarun-dbbench.XXXXXX)
chmod 755 "$tmp"
pgdir=$tmp/pg
mkdir -p "$pgdir" "$tmp/sqlite"
as_pg=""
if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir"; as_pg="runuser -u postgres --"; fi
pgpid=""
cleanup() {
  if [ -n "$pgpid" ]; then
    kill -INT "$pgpid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pgpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pgpid" 2>/dev/null
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
(cd "$pgdir" && $as_pg $pgbin/initdb -D "$pgdir/data" -A trust -U luarun --no-sync -E UTF8 --locale=C \
  >"$tmp/initdb.log" 2>&1) || { cat "$tmp/initdb.log"; exit 1; }
(cd "$pgdir" && $srv_pin $as_pg $pgbin/postgres -D "$pgdir/data" -k "$pgdir" -c listen_addresses= \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
  >"$tmp/postgres.log" 2>&1 </dev/null &)
for _ in $(seq 200); do
  [ -z "$pgpid" ] && pgpid=$(head -1 "$pgdir/data/postmaster.pid" 2>/dev/null)
  [ -n "$pgpid" ] && $pgbin/pg_isready -q -h "$pgdir" -U luarun -d postgres && break
  sleep 0.1
done
$pgbin/createdb -h "$pgdir" -U luarun -O luarun luarun || { cat "$tmp/postgres.log"; exit 1; }
url="postgresql://luarun@/luarun?host=$pgdir"
psql() { $pgbin/psql -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -U luarun -d luarun "$@"; }
echo "PostgreSQL $(psql -At -c 'show server_version'), pid $pgpid; $url"

# The tables: items (a), big (c), ins (d, emptied before each run).
nc=$((n[c_full] / scale))
psql <<SQL || exit 1
CREATE TABLE items (id int PRIMARY KEY, name text, score float8, created timestamptz);
INSERT INTO items SELECT i, 'name ' || i, i * 0.5, now() - i * interval '1 minute'
  FROM generate_series(1, 10000) i;
CREATE TABLE big (id int, name text, score float8, created timestamptz);
INSERT INTO big SELECT i, 'name ' || i, i * 0.5, now() - i * interval '1 second'
  FROM generate_series(1, $(wanted c_full || wanted c_cursor && echo "$nc" || echo 0)) i;
CREATE TABLE ins (id int, name text, score float8);
VACUUM ANALYZE;
SQL

# One cell: the median result of $reps runs and the largest peak RSS, or "failed".
declare -A cell
failures=""
run_cell() { # row peer
  local row=$1 peer=$2 cmd target vals="" rss=0 r v m pin=$cli_pin
  if [[ $row == e_* ]]; then cmd=$(sqlite_cmd "$peer" "$row"); else cmd=$(pg_cmd "$peer"); fi
  # SQLite has no server to keep apart: its rows run on both cores (SQLITE_PIN= to pin
  # them as well). luarun gives each connection a thread, as issue 15 asks, so that
  # the loop never waits on the disk; on one core each hand-over to it costs a
  # context switch both ways (bench/RESULTS.md, issue 15: 2.8x Python's inserts).
  [[ $row == e_* ]] && pin=${SQLITE_PIN-}
  [ -n "$cmd" ] || return
  for r in $(seq "$reps"); do
    if [[ $row == e_* ]]; then target=$tmp/sqlite/e.db; rm -f "$target"*; else target=$url; fi
    [ "$row" = d ] && psql -c "TRUNCATE ins"
    $pin /usr/bin/time -f %M -o "$tmp/rss" timeout 600 $cmd "$row" "$target" $((n[$row] / scale)) \
      >"$tmp/out" 2>"$tmp/err" </dev/null
    v=$(awk '$1 == "result" { print $2 }' "$tmp/out")
    if [ -z "$v" ]; then
      cell[$row,$peer]=failed
      grep -v '^Command exited' "$tmp/err" | grep . | cut -c1-200 >"$tmp/msg"
      m=$(head -1 "$tmp/msg")
      [ "$(tail -1 "$tmp/msg")" != "$m" ] && m+=" ... $(tail -1 "$tmp/msg")"
      failures+="$row $peer: $m"$'\n'
      echo "  $row $peer: failed" >&2
      return
    fi
    vals+="$v"$'\n'
    m=$(tail -1 "$tmp/rss"); [ "${m:-0}" -gt "$rss" ] && rss=$m
  done
  v=$(printf '%s' "$vals" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  if [ "$row" = e_tick ]; then v=$(printf '%.1f ms' "$v"); else v=$(printf '%.3f s' "$v"); fi
  cell[$row,$peer]="$v, $((rss / 1024)) MB"
  echo "  $row $peer: ${cell[$row,$peer]}" >&2
}

for row in $rows; do
  wanted "$row" || continue
  for peer in $peers; do run_cell "$row" "$peer"; done
done

echo
echo "bench/db.sh $* ($(nproc) cores; server on core 0, clients on core 1; time, peak RSS)"
echo
printf '| workload |'; for p in $peers; do printf ' %s |' "$p"; done; echo
printf '|---|'; for p in $peers; do printf -- '---:|'; done; echo
for row in $rows; do
  wanted "$row" || continue
  printf '| %s (%d) |' "$row" $((n[$row] / scale))
  for p in $peers; do printf ' %s |' "${cell[$row,$p]:-}"; done; echo
done
[ -n "$failures" ] && printf '\nfailed:\n%s' "$failures"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
