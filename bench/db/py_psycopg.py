# bench/db.sh's psycopg 3 (async) peer:  python3 py_psycopg.py WORKLOAD URL N
# Prints "result SECONDS" for the timed part; raises (exit 1) when a check fails.
import asyncio, sys, time
import psycopg
from psycopg_pool import AsyncConnectionPool

W, URL, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
POINT = "SELECT id, name, score, created FROM items WHERE id = %s"


async def main():
    if W == "a":  # N point selects from 50 tasks over a pool of 10
        pool = AsyncConnectionPool(URL, min_size=10, max_size=10)
        await pool.wait()

        async def worker(w):
            for k in range(w, N, 50):
                async with pool.connection() as conn:
                    cur = await conn.execute(POINT, (k % 10000 + 1,))
                    assert (await cur.fetchone())[0] == k % 10000 + 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(50)))
        dt = time.perf_counter() - t0
        await pool.close()
        return dt
    conn = await psycopg.AsyncConnection.connect(URL, autocommit=True)
    if W == "b":  # 100 tasks on one connection in pipeline mode

        async def worker(w):
            for i in range(w, N, 100):
                cur = await conn.execute("SELECT %s::int + 1", (i,))
                assert (await cur.fetchone())[0] == i + 1
        t0 = time.perf_counter()
        async with conn.pipeline():
            await asyncio.gather(*(worker(w) for w in range(100)))
        return time.perf_counter() - t0
    if W == "b_seq":
        t0 = time.perf_counter()
        for i in range(N):
            cur = await conn.execute("SELECT %s::int + 1", (i,))
            assert (await cur.fetchone())[0] == i + 1
        return time.perf_counter() - t0
    if W == "c_full":
        t0 = time.perf_counter()
        cur = await conn.execute("SELECT id, name, score, created FROM big")
        rows = await cur.fetchall()
        s = sum(r[0] for r in rows)
        dt = time.perf_counter() - t0
        assert len(rows) == N and s == N * (N + 1) // 2
        return dt
    if W == "c_cursor":  # a server-side cursor, 1000 rows a fetch
        t0 = time.perf_counter()
        n = s = 0
        async with conn.transaction():
            async with conn.cursor(name="big_cur") as cur:
                cur.itersize = 1000
                await cur.execute("SELECT id, name, score, created FROM big")
                async for r in cur:
                    n += 1
                    s += r[0]
        dt = time.perf_counter() - t0
        assert n == N and s == N * (N + 1) // 2
        return dt
    if W == "d":  # COPY, a row at a time into psycopg's buffer
        rows = [(i, "name %d" % i, i * 0.5) for i in range(N)]
        t0 = time.perf_counter()
        async with conn.cursor() as cur:
            async with cur.copy("COPY ins (id, name, score) FROM STDIN") as copy:
                for r in rows:
                    await copy.write_row(r)
        dt = time.perf_counter() - t0
        cur = await conn.execute("SELECT count(*) FROM ins")
        assert (await cur.fetchone())[0] == N
        return dt
    raise SystemExit("unknown workload " + W)

print("result %.4f" % asyncio.run(main()))
