#!/usr/bin/env bash
# Files benchmark (issue 6): write 2,000 files of 4 KiB, read them all back
# concurrently, and read one 200 MB file, in luarun (luarun.fs), Node (fs.promises,
# Promise.all), Python (aiofiles and asyncio.to_thread, gathered; and plain
# sequential open()), and plain lua5.4 with sequential io.open. Times are measured
# inside each program (monotonic clocks) around the work only; the median of REPS
# runs is shown, each small-files run in a fresh directory, the runtimes taking
# turns within each repetition. The 200 MB read is also
# timed as a whole process with hyperfine against `cat file > /dev/null` (which
# copies through one hot 128 KiB buffer and keeps nothing), against `dd bs=200M`
# (one read into a fresh 200 MB buffer: the data kept, as a read_file must), and
# against bench/fs_read_floor.c (the same fresh buffer filled the way read_file does,
# by two threads, with nothing around it: the floor for a reader that keeps the data).
#
#   bench/fs.sh            LUARUN_BUILD (default build), REPS (default 5),
#                          FS_BENCH_DIR (default a new directory under /tmp),
#                          CHURN (default 0: before each repetition, create and
#                          delete that many files of 4 KiB beside the runs, which
#                          puts ext4 without a journal in its slow state, below),
#                          IDLE (default 0: seconds of pause before each whole-process
#                          200 MB read taken in turns; this VM hands idle memory back
#                          to its host, and fresh memory then costs more)
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
floor=$build/fs_read_floor
gcc -O2 -Wall -Wextra -pthread -o "$floor" "$root/bench/fs_read_floor.c"
work=${FS_BENCH_DIR:-$(mktemp -d /tmp/luarun-fs-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
big=$work/big200
head -c 200000000 /dev/urandom >"$big"
cat "$big" >/dev/null # in the page cache for everyone

median() { sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

# How long creating a file takes here now, in us (200 files, plain sequential). On
# ext4 without a journal (this machine's root), a directory whose block group saw
# many files deleted recently creates files at ~150-300 us each instead of ~10, for
# minutes, whatever the runtime: every small-files figure below then measures that.
create_probe() {
  local p=$work/probe-$1
  mkdir "$p"
  /usr/bin/python3 - "$p" <<'PY'
import os, sys, time
d = sys.argv[1]
t = time.perf_counter()
for i in range(200):
    with open(os.path.join(d, "p%d" % i), "wb") as f:
        f.write(b"x" * 4096)
print("%.0f" % ((time.perf_counter() - t) / 200 * 1e6))
PY
}

echo "luarun files benchmark: HEAD $(git rev-parse --short HEAD)," \
     "binary $luarun, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "creating a 4 KiB file in $work: $(create_probe before) us before the runs"
py() { /usr/bin/python3 "$root/bench/fs_python.py" "$2" "$3" "$1"; }
labels=(luarun node python-aiofiles python-to_thread python-sequential lua5.4-sequential)
run() { # label mode path: one run of that runtime
  case $1 in
    luarun) "$luarun" "$root/bench/fs_luarun.lua" "$2" "$3" ;;
    node) node "$root/bench/fs_node.js" "$2" "$3" ;;
    python-aiofiles) py aiofiles "$2" "$3" ;;
    python-to_thread) py to_thread "$2" "$3" ;;
    python-sequential) py seq "$2" "$3" ;;
    lua5.4-sequential) LUA_CPATH="$build/?.so;;" lua5.4 "$root/bench/fs_lua_seq.lua" "$2" "$3" ;;
  esac
}
# Side by side: every repetition runs each runtime once, in turn, so that a change
# of load on the shared machine hits them all alike. Every run writes into a
# directory of its own, and none is deleted before the end: ext4 does not reuse an
# inode freed in the last 30 s, and skipping them one by one (perf: find_get_block_
# common and recently_deleted, 70 % of the time) made creating 2,000 files right
# after deleting the previous run's take 0.3-0.45 s instead of ~0.03 s, for every
# runtime alike: the figures measured the harness's deletions, not the runtimes.
# The order turns with each repetition: a run right after file churn on the machine
# pays for it (for ~30 s, as above), and that should not always be the same
# runtime's run.
# CHURN: what a mass delete leaves behind (the test suite, a build, an earlier run).
churn() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import os, shutil, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
for k in range(0, n, 2000):  # directories of 2,000 files, as the runs write
    sub = os.path.join(d, "s%d" % k)
    os.mkdir(sub)
    for i in range(min(2000, n - k)):
        fd = os.open(os.path.join(sub, "c%d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
        os.write(fd, b"c" * 4096)
        os.close(fd)
shutil.rmtree(d)
PY
}
churn_n=${CHURN:-0}
for ((i = 0; i < reps; i++)); do
  if ((churn_n > 0)); then
    churn "$work/churn-$i" "$churn_n"
    echo "repetition $((i + 1)) after deleting $churn_n files: creating a file takes $(create_probe "churn-$i") us"
  fi
  for ((k = 0; k < ${#labels[@]}; k++)); do
    label=${labels[(i + k) % ${#labels[@]}]}
    d=$work/small-$label-$i
    mkdir "$d"
    out=$(run "$label" small "$d")
    echo "$out" | awk '{print $1}' >>"$work/$label.w"
    echo "$out" | awk '{print $2}' >>"$work/$label.r"
    echo "$out" | awk '{print $1 + $2}' >>"$work/$label.t"
    run "$label" large "$big" >>"$work/$label.l"
  done
done
echo "creating a 4 KiB file in $work: $(create_probe after) us after the runs"
echo "write_s of each repetition, in order (the state of the filesystem drifts):"
for label in "${labels[@]}"; do
  printf '  %-20s %s\n' "$label" "$(tr '\n' ' ' <"$work/$label.w")"
done
printf '%-22s %10s %10s %10s %12s\n' runtime write_s read_s total_s read200MB_s
for label in "${labels[@]}"; do
  printf '%-22s %10s %10s %10s %12s\n' "$label" "$(median <"$work/$label.w")" \
    "$(median <"$work/$label.r")" "$(median <"$work/$label.t")" "$(median <"$work/$label.l")"
done

# The 200 MB read as whole processes, taking turns (bash's $EPOCHREALTIME: no fork).
wall() { # file, command...: appends the command's wall time in ms
  local f=$1 t0
  shift
  sleep "${IDLE:-0}"
  t0=$EPOCHREALTIME
  "$@" >/dev/null
  echo "$EPOCHREALTIME $t0" | awk '{printf "%.1f\n", ($1 - $2) * 1000}' >>"$f"
}
for ((i = 0; i < reps + 2; i++)); do
  wall "$work/p.cat" cat "$big"
  wall "$work/p.dd" dd if="$big" of=/dev/null bs=200M count=1 iflag=fullblock status=none
  wall "$work/p.floor" "$floor" "$big"
  wall "$work/p.luarun" "$luarun" "$root/bench/fs_luarun.lua" large "$big"
done
echo
echo "200 MB read as a whole process, taking turns ($((reps + 2)) runs each, ${IDLE:-0} s idle before each, median ms):" \
     "cat $(median <"$work/p.cat"), dd bs=200M $(median <"$work/p.dd")," \
     "C floor $(median <"$work/p.floor"), luarun $(median <"$work/p.luarun")"

echo
echo "200 MB read as a whole process (hyperfine, $reps runs after 2 warm-ups):"
hyperfine -N -w 2 -r "$reps" --export-markdown "$work/h.md" \
  "cat $big" "dd if=$big of=/dev/null bs=200M count=1 iflag=fullblock status=none" \
  "$floor $big" "$luarun $root/bench/fs_luarun.lua large $big" \
  "node $root/bench/fs_node.js large $big" \
  "/usr/bin/python3 $root/bench/fs_python.py large $big seq" >/dev/null 2>&1
sed "s#$work/##g; s#$root/##g; s#$build/##g" "$work/h.md"
