# bench/db.sh's synchronous floor, Python's sqlite3:  python3 py_sqlite3.py WORKLOAD PATH N
# e_insert: N inserts in one transaction; e_select: N point selects; one statement a call.
import sqlite3, sys, time

W, PATH, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(PATH, isolation_level=None)  # BEGIN/COMMIT as written
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE kv (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
INSERT = "INSERT INTO kv (id, name, score) VALUES (?, ?, ?)"
if W == "e_insert":
    t0 = time.perf_counter()
    db.execute("BEGIN")
    for i in range(1, N + 1):
        db.execute(INSERT, (i, "name %d" % i, i * 0.5))
    db.execute("COMMIT")
    dt = time.perf_counter() - t0
    assert db.execute("SELECT count(*) FROM kv").fetchone()[0] == N
elif W == "e_select":
    db.execute("BEGIN")
    db.executemany(INSERT, ((i, "name %d" % i, i * 0.5) for i in range(1, N + 1)))
    db.execute("COMMIT")
    t0 = time.perf_counter()
    for k in range(N):
        i = k * 7919 % N + 1
        assert db.execute("SELECT name, score FROM kv WHERE id = ?", (i,)).fetchone()[1] == i * 0.5
    dt = time.perf_counter() - t0
else:
    raise SystemExit("unknown workload " + W)
print("result %.4f" % dt)
