# bench/db.sh's asyncpg peer:  python3 py_asyncpg.py WORKLOAD URL N
# Prints "result SECONDS" for the timed part; raises (exit 1) when a check fails.
import asyncio, sys, time
import asyncpg

W, URL, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
POINT = "SELECT id, name, score, created FROM items WHERE id = $1"


async def main():
    if W == "a":  # N point selects from 50 tasks over a pool of 10
        pool = await asyncpg.create_pool(URL, min_size=10, max_size=10)

        async def worker(w):
            for k in range(w, N, 50):
                r = await pool.fetchrow(POINT, k % 10000 + 1)
                assert r["id"] == k % 10000 + 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(50)))
        return time.perf_counter() - t0
    conn = await asyncpg.connect(URL)
    if W in ("b", "b_seq"):  # one connection; asyncpg refuses overlapping queries,
        lock = asyncio.Lock()  # so 100 tasks go one at a time through a lock

        async def worker(w):
            for i in range(w, N, 100):
                async with lock:
                    assert await conn.fetchval("SELECT $1::int + 1", i) == i + 1
        t0 = time.perf_counter()
        if W == "b":
            await asyncio.gather(*(worker(w) for w in range(100)))
        else:
            for i in range(N):
                assert await conn.fetchval("SELECT $1::int + 1", i) == i + 1
        return time.perf_counter() - t0
    if W == "c_full":
        t0 = time.perf_counter()
        rows = await conn.fetch("SELECT id, name, score, created FROM big")
        s = sum(r["id"] for r in rows)
        dt = time.perf_counter() - t0
        assert len(rows) == N and s == N * (N + 1) // 2
        return dt
    if W == "c_cursor":
        t0 = time.perf_counter()
        n = s = 0
        async with conn.transaction():
            async for r in conn.cursor("SELECT id, name, score, created FROM big", prefetch=1000):
                n += 1
                s += r["id"]
        dt = time.perf_counter() - t0
        assert n == N and s == N * (N + 1) // 2
        return dt
    if W == "d":  # binary COPY
        rows = [(i, "name %d" % i, i * 0.5) for i in range(N)]
        t0 = time.perf_counter()
        await conn.copy_records_to_table("ins", records=rows, columns=["id", "name", "score"])
        dt = time.perf_counter() - t0
        assert await conn.fetchval("SELECT count(*) FROM ins") == N
        return dt
    raise SystemExit("unknown workload " + W)

print("result %.4f" % asyncio.run(main()))
