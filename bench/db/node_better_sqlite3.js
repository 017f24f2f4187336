// bench/db.sh's better-sqlite3 peer:  node node_better_sqlite3.js WORKLOAD PATH N
// e_insert: N inserts in one transaction; e_select: N point selects; a prepared
// statement run once per row.
const Database = require("better-sqlite3");
const assert = require("assert");
const [W, PATH, N] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const now = () => performance.now() / 1000;

const db = new Database(PATH);
db.pragma("journal_mode = WAL");
db.exec("CREATE TABLE kv (id INTEGER PRIMARY KEY, name TEXT, score REAL)");
const insert = db.prepare("INSERT INTO kv (id, name, score) VALUES (?, ?, ?)");
let dt;
if (W === "e_insert") {
  const t0 = now();
  db.exec("BEGIN");
  for (let i = 1; i <= N; i++) insert.run(i, "name " + i, i * 0.5);
  db.exec("COMMIT");
  dt = now() - t0;
  assert.equal(db.prepare("SELECT count(*) AS n FROM kv").get().n, N);
} else if (W === "e_select") {
  db.transaction(() => { for (let i = 1; i <= N; i++) insert.run(i, "name " + i, i * 0.5); })();
  const select = db.prepare("SELECT name, score FROM kv WHERE id = ?");
  const t0 = now();
  for (let k = 0; k < N; k++) {
    const i = k * 7919 % N + 1;
    assert.equal(select.get(i).score, i * 0.5);
  }
  dt = now() - t0;
} else {
  throw new Error("unknown workload " + W);
}
console.log("result " + dt.toFixed(4));
