# bench/db.sh's aiosqlite peer:  python3 py_aiosqlite.py WORKLOAD PATH N
# e_insert / e_select as py_sqlite3.py, awaiting each statement; e_tick: 100 tasks
# run N point selects while a 10 ms ticker runs: prints the worst tick lateness in ms.
import asyncio, sys, time
import aiosqlite

W, PATH, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
INSERT = "INSERT INTO kv (id, name, score) VALUES (?, ?, ?)"
SELECT = "SELECT name, score FROM kv WHERE id = ?"


async def main():
    async with aiosqlite.connect(PATH, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
        if W == "e_insert":
            t0 = time.perf_counter()
            await db.execute("BEGIN")
            for i in range(1, N + 1):
                await db.execute(INSERT, (i, "name %d" % i, i * 0.5))
            await db.execute("COMMIT")
            dt = time.perf_counter() - t0
            assert (await db.execute_fetchall("SELECT count(*) FROM kv"))[0][0] == N
            return dt
        await db.execute("BEGIN")
        await db.executemany(INSERT, ((i, "name %d" % i, i * 0.5) for i in range(1, N + 1)))
        await db.execute("COMMIT")

        async def selects(w, step):
            for k in range(w, N, step):
                i = k * 7919 % N + 1
                assert (await db.execute_fetchall(SELECT, (i,)))[0][1] == i * 0.5
        if W == "e_select":
            t0 = time.perf_counter()
            await selects(0, 1)
            return time.perf_counter() - t0
        if W == "e_tick":
            worst, done = 0.0, False

            async def ticker():
                nonlocal worst
                due = time.perf_counter()
                while not done:
                    due += 0.01
                    await asyncio.sleep(max(0, due - time.perf_counter()))
                    worst = max(worst, time.perf_counter() - due)
            t = asyncio.create_task(ticker())
            await asyncio.gather(*(selects(w, 100) for w in range(100)))
            done = True
            await t
            return worst * 1000
        raise SystemExit("unknown workload " + W)

print("result %.4f" % asyncio.run(main()))
