// Node peer: N GETs of URL with fetch, at most LIMIT at once.
//   node bench/http_node.mjs URL N LIMIT   -> prints "wall_seconds failures"
const [url, n, limit] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
let next = 0, fails = 0;
async function worker() {
  while (next < n) {
    next++;
    const r = await fetch(url);
    await r.arrayBuffer();
    if (r.status !== 200) fails++;
  }
}
const t0 = performance.now();
await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
console.log(`${((performance.now() - t0) / 1000).toFixed(3)} ${fails}`);
