// bench/db.sh's node-postgres peer:  node node_pg.js WORKLOAD URL N
// Prints "result SECONDS" for the timed part; throws (exit 1) when a check fails.
const { Client, Pool } = require("pg");
const Cursor = require("pg-cursor");
const { from: copyFrom } = require("pg-copy-streams");
const { pipeline } = require("stream/promises");
const { Readable } = require("stream");
const assert = require("assert");

const [W, URL, N] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const POINT = "SELECT id, name, score, created FROM items WHERE id = $1";
const now = () => performance.now() / 1000;
const range = (from, to, step) => { const r = []; for (let i = from; i < to; i += step) r.push(i); return r; };

async function main() {
  if (W === "a") { // N point selects from 50 tasks over a pool of 10
    const pool = new Pool({ connectionString: URL, max: 10 });
    await Promise.all(range(0, 10, 1).map(() => pool.query("SELECT 1"))); // open the 10
    const t0 = now();
    await Promise.all(range(0, 50, 1).map(async (w) => {
      for (const k of range(w, N, 50)) {
        const r = await pool.query({ name: "point", text: POINT, values: [k % 10000 + 1] });
        assert.equal(r.rows[0].id, k % 10000 + 1);
      }
    }));
    const dt = now() - t0;
    await pool.end();
    return dt;
  }
  // b: 100 tasks on one client, its queue pipelined (pg >= 8.16's pipeline option)
  const client = new Client({ connectionString: URL, pipeline: W === "b" });
  await client.connect();
  try {
    if (W === "b" || W === "b_seq") {
      const plus = { name: "plus", text: "SELECT $1::int + 1 AS v" };
      const t0 = now();
      await Promise.all(range(0, W === "b" ? 100 : 1, 1).map(async (w) => {
        for (const i of range(w, N, W === "b" ? 100 : 1)) {
          const r = await client.query({ ...plus, values: [i] });
          assert.equal(r.rows[0].v, i + 1);
        }
      }));
      return now() - t0;
    }
    const big = "SELECT id, name, score, created FROM big";
    if (W === "c_full") {
      const t0 = now();
      const r = await client.query(big);
      let s = 0;
      for (const row of r.rows) s += row.id;
      const dt = now() - t0;
      assert.equal(r.rows.length, N); assert.equal(s, N * (N + 1) / 2);
      return dt;
    }
    if (W === "c_cursor") { // pg-cursor, 1000 rows a read
      const t0 = now();
      const cursor = client.query(new Cursor(big));
      let n = 0, s = 0, rows;
      while ((rows = await cursor.read(1000)).length) for (const row of rows) { n++; s += row.id; }
      await cursor.close();
      const dt = now() - t0;
      assert.equal(n, N); assert.equal(s, N * (N + 1) / 2);
      return dt;
    }
    if (W === "d") { // text COPY through pg-copy-streams
      const rows = range(0, N, 1).map((i) => [i, "name " + i, i * 0.5]);
      const t0 = now();
      const stream = client.query(copyFrom("COPY ins (id, name, score) FROM STDIN"));
      await pipeline(Readable.from(function* () {
        for (let i = 0; i < rows.length; i += 1000)
          yield rows.slice(i, i + 1000).map((r) => r.join("\t") + "\n").join("");
      }()), stream);
      const dt = now() - t0;
      assert.equal(Number((await client.query("SELECT count(*) AS n FROM ins")).rows[0].n), N);
      return dt;
    }
    throw new Error("unknown workload " + W);
  } finally {
    await client.end();
  }
}

main().then((dt) => console.log("result " + dt.toFixed(4)),
            (e) => { console.error(e); process.exit(1); });
