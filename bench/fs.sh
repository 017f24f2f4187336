#!/usr/bin/env bash
# Files benchmark (issue 6): write 2,000 files of 4 KiB, read them all back
# concurrently, and read one 200 MB file, in luarun (luarun.fs), Node (fs.promises,
# Promise.all), Python (aiofiles and asyncio.to_thread, gathered; and plain
# sequential open()), and plain lua5.4 with sequential io.open. Times are measured
# inside each program (monotonic clocks) around the work only; the median of REPS
# runs is shown, each small-files run in a fresh directory. The 200 MB read is also
# timed as a whole process with hyperfine against `cat file > /dev/null` (which
# copies through one hot 128 KiB buffer and keeps nothing) and against `dd bs=200M`
# (one read into a fresh 200 MB buffer: the data kept, as a read_file must).
#
#   bench/fs.sh            LUARUN_BUILD (default build), REPS (default 5),
#                          FS_BENCH_DIR (default a new directory under /tmp)
# Goals: small files (write + read) ahead of Node, Python and sequential lua5.4;
# the 200 MB read within 1.5x of cat.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
reps=${REPS:-5}
if [ ! -x "$build/luarun" ]; then
  cmake -S . -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
fi
if ! command -v node >/dev/null || ! command -v hyperfine >/dev/null ||
   ! /usr/bin/python3 -c 'import aiofiles' 2>/dev/null; then
  bash .ci/setup bench
fi
luarun=$build/luarun
work=${FS_BENCH_DIR:-$(mktemp -d /tmp/luarun-fs-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
big=$work/big200
head -c 200000000 /dev/urandom >"$big"
cat "$big" >/dev/null # in the page cache for everyone

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

echo "luarun files benchmark: HEAD $(git rev-parse --short HEAD)," \
     "binary $luarun, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %10s %10s %10s %12s\n' runtime write_s read_s total_s read200MB_s
row() { # label, command... (the command takes MODE PATH)
  local label=$1 i d out
  shift
  : >"$work/w"; : >"$work/r"; : >"$work/t"; : >"$work/l"
  for ((i = 0; i < reps; i++)); do
    d=$work/small$i
    rm -rf "$d" && mkdir "$d"
    out=$("$@" small "$d")
    echo "$out" | awk '{print $1}' >>"$work/w"
    echo "$out" | awk '{print $2}' >>"$work/r"
    echo "$out" | awk '{print $1 + $2}' >>"$work/t"
    rm -rf "$d"
    "$@" large "$big" >>"$work/l"
  done
  printf '%-22s %10s %10s %10s %12s\n' "$label" "$(median <"$work/w")" \
    "$(median <"$work/r")" "$(median <"$work/t")" "$(median <"$work/l")"
}
py() { /usr/bin/python3 "$root/bench/fs_python.py" "$2" "$3" "$1"; }
row luarun "$luarun" "$root/bench/fs_luarun.lua"
row node node "$root/bench/fs_node.js"
row python-aiofiles py aiofiles
row python-to_thread py to_thread
row python-sequential py seq
row lua5.4-sequential env LUA_CPATH="$build/?.so;;" lua5.4 "$root/bench/fs_lua_seq.lua"

echo
echo "200 MB read as a whole process (hyperfine, $reps runs after 2 warm-ups):"
hyperfine -N -w 2 -r "$reps" --export-markdown "$work/h.md" \
  "cat $big" "dd if=$big of=/dev/null bs=200M count=1 iflag=fullblock status=none" \
  "$luarun $root/bench/fs_luarun.lua large $big" \
  "node $root/bench/fs_node.js large $big" \
  "/usr/bin/python3 $root/bench/fs_python.py large $big seq" >/dev/null 2>&1
sed "s#$work/##g; s#$root/##g" "$work/h.md"
