# Python asyncio: N tasks that each await asyncio.sleep(1), created one by one with
# asyncio.create_task, then gathered.
# Usage: /usr/bin/python3 asyncio_tasks.py N   Prints "spawn=<s> wall=<s>" (monotonic).
import asyncio
import sys
import time


async def work():
    await asyncio.sleep(1)


async def main(n):
    t0 = time.monotonic()
    tasks = [asyncio.create_task(work()) for _ in range(n)]
    t1 = time.monotonic()
    results = await asyncio.gather(*tasks)
    t2 = time.monotonic()
    assert len(results) == n
    print(f"spawn={t1 - t0:.3f} wall={t2 - t0:.3f}")


asyncio.run(main(int(sys.argv[1])))
