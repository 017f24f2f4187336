# Sourced by the benchmarks (bench/timers.sh, bench/tasks.sh): sets $build (the build
# directory whose luarun is measured) and $built (how to describe it), given $root,
# $head (1: --head) and LUARUN_BUILD. With --head, HEAD is exported with git archive to
# /tmp/luarun-bench-<commit> and built there; otherwise build/ (or LUARUN_BUILD) is
# used, built first if missing, and uncommitted changes to the runtime are pointed out.
build=${LUARUN_BUILD:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$head" = 1 ]; then
  src=/tmp/luarun-bench-$commit
  build=$src/build
  if [ ! -x "$build/luarun" ]; then
    rm -rf "$src" && mkdir -p "$src" && git archive HEAD | tar -x -C "$src"
    cmake -S "$src" -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
  fi
  built="HEAD $commit exactly (exported to $src)"
else
  if [ ! -x "$build/luarun" ]; then
    cmake -S "$root" -B "$build" >/dev/null && cmake --build "$build" -j2 >/dev/null
  fi
  built="HEAD $commit, $build"
  if [ -n "$(git status --porcelain -- core bindings lua CMakeLists.txt cmake 2>/dev/null)" ]; then
    built="$built + uncommitted changes in the tree (the build may include them; --head avoids that)"
  fi
fi
