#!/usr/bin/python3
"""Times short commands interleaved: round after round, every command once, in a new
random order each round. hyperfine runs one command's runs back to back, so on a
shared machine a burst of load lands on whichever command runs then; interleaved,
every command sees the same load, and differences of a few tenths of a millisecond
show. For bench/startup.sh --interleaved.

    bench/interleave.py [--export-json FILE] ROUNDS NAME COMMAND [NAME COMMAND ...]

COMMAND is split as a shell would (shlex) and started with posix_spawn, with no
shell, its output to /dev/null. The first 3 rounds are warm-up. Prints a Markdown
table: wall-clock median, 10th and 90th percentiles and minimum, and the median CPU
time (user + system, from wait4) of each command. --export-json writes the times in
hyperfine's layout ({"results": [{"command", "median", "mean", "min", "times"}]},
seconds), for bench/startup.sh's summary.
"""
import json
import os
import random
import shlex
import statistics
import sys
import time


def main(argv):
    export = None
    if argv[1] == "--export-json":
        export = argv[2]
        argv = argv[2:]
    rounds = int(argv[1])
    cmds = [(argv[i], shlex.split(argv[i + 1])) for i in range(2, len(argv), 2)]
    wall = {name: [] for name, _ in cmds}
    cpu = {name: [] for name, _ in cmds}
    devnull = os.open("/dev/null", os.O_WRONLY)
    acts = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    for r in range(rounds + 3):
        order = list(cmds)
        random.shuffle(order)
        for name, args in order:
            t = time.perf_counter()
            pid = os.posix_spawnp(args[0], args, os.environ, file_actions=acts)
            _, status, ru = os.wait4(pid, 0)
            t = time.perf_counter() - t
            if status != 0:
                sys.exit(f"interleave.py: {name} failed (wait status {status})")
            if r >= 3:
                wall[name].append(t * 1000)
                cpu[name].append((ru.ru_utime + ru.ru_stime) * 1000)
    print("| command | median ms | p10 ms | p90 ms | min ms | CPU median ms | runs |")
    print("|:---|---:|---:|---:|---:|---:|---:|")
    for name, _ in cmds:
        w = sorted(wall[name])
        q = lambda p: w[int(p * (len(w) - 1))]
        print(f"| {name} | {statistics.median(w):.2f} | {q(0.1):.2f} | {q(0.9):.2f} | "
              f"{w[0]:.2f} | {statistics.median(cpu[name]):.2f} | {len(w)} |")
    if export:
        res = [{"command": name, "median": statistics.median(wall[name]) / 1000,
                "mean": statistics.mean(wall[name]) / 1000, "min": min(wall[name]) / 1000,
                "times": [t / 1000 for t in wall[name]]} for name, _ in cmds]
        with open(export, "w") as f:
            json.dump({"results": res}, f)


if __name__ == "__main__":
    main(sys.argv)
