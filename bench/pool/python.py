"""bench/pool/python.py: ProcessPoolExecutor through loop.run_in_executor.
   python3 bench/pool/python.py [job_iterations]"""
import asyncio
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ITER = int(sys.argv[1]) if len(sys.argv) > 1 else 20000000
ROUNDS = 3


def cpu(n):
    x = 0
    for i in range(1, n + 1):
        x = (x + i * i) % 1000003
    return x


def trivial(x):
    return x


async def main():
    loop = asyncio.get_running_loop()
    workers = os.cpu_count()
    with ProcessPoolExecutor(max_workers=workers) as ex:
        await asyncio.gather(*[loop.run_in_executor(ex, trivial, 0) for _ in range(workers * 2)])
        # (a): ROUNDS rounds of sequential then pooled; medians
        seqs, pools, speedups = [], [], []
        for _ in range(ROUNDS):
            t0 = time.monotonic()
            for _ in range(8):
                cpu(ITER)
            seqs.append(time.monotonic() - t0)
            t0 = time.monotonic()
            await asyncio.gather(*[loop.run_in_executor(ex, cpu, ITER) for _ in range(8)])
            pools.append(time.monotonic() - t0)
            speedups.append(seqs[-1] / pools[-1])
        print(f"a_sequential_s {statistics.median(seqs):.3f}")
        print(f"a_pooled_s {statistics.median(pools):.3f}")
        print(f"a_speedup {statistics.median(speedups):.2f}")
        print("a_speedups " + ",".join(f"{v:.2f}" for v in speedups))
        print(f"a_workers {workers}")
        # (b)
        n = 10000
        runs = []
        for _ in range(3):
            t0 = time.monotonic()
            for i in range(n):
                await loop.run_in_executor(ex, trivial, i)
            runs.append((time.monotonic() - t0) / n * 1e6)
        print(f"b_sequential_us {statistics.median(runs):.2f}")
        runs = []
        for _ in range(3):
            t0 = time.monotonic()
            await asyncio.gather(*[loop.run_in_executor(ex, trivial, i) for i in range(n)])
            runs.append((time.monotonic() - t0) / n * 1e6)
        print(f"b_concurrent_us {statistics.median(runs):.2f}")
        # (c)
        big = "x" * (1024 * 1024 - 1) + "y"
        m = 200
        for _ in range(10):
            await loop.run_in_executor(ex, trivial, big)
        runs = []
        for _ in range(3):
            t0 = time.monotonic()
            for _ in range(m):
                r = await loop.run_in_executor(ex, trivial, big)
                assert len(r) == len(big)
            runs.append((time.monotonic() - t0) / m * 1e6)
        print(f"c_1mb_roundtrip_us {statistics.median(runs):.1f}")


if __name__ == "__main__":
    asyncio.run(main())
