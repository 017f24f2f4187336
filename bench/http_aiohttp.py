#!/usr/bin/python3
"""aiohttp peer: N GETs of URL, at most LIMIT at once (ClientSession + gather)."""
import asyncio
import sys
import time

import aiohttp


async def main(url, n, limit):
    sem = asyncio.Semaphore(limit)
    fails = 0
    conn = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=conn) as session:
        async def one():
            nonlocal fails
            async with sem:
                async with session.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        fails += 1
        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        print("%.3f %d" % (time.monotonic() - t0, fails))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
