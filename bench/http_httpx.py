#!/usr/bin/python3
"""httpx peer: N GETs of URL, at most LIMIT at once (AsyncClient + gather)."""
import asyncio
import sys
import time

import httpx


async def main(url, n, limit):
    sem = asyncio.Semaphore(limit)
    fails = 0
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def one():
            nonlocal fails
            async with sem:
                r = await client.get(url)
                if r.status_code != 200:
                    fails += 1
        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        print("%.3f %d" % (time.monotonic() - t0, fails))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
