// Node side of bench/fs.sh: fs.promises, everything in flight at once (Promise.all).
//   node fs_node.js small DIR | large FILE
const fsp = require('fs').promises;
const [mode, path] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e9;
(async () => {
  if (mode === 'small') {
    const data = 'x'.repeat(4096);
    const names = Array.from({ length: 2000 }, (_, i) => `${path}/f${i + 1}`);
    const t0 = now();
    await Promise.all(names.map((p) => fsp.writeFile(p, data)));
    const t1 = now();
    const got = await Promise.all(names.map((p) => fsp.readFile(p, 'latin1')));
    const t2 = now();
    for (const s of got) if (s !== data) throw new Error('bad data');
    console.log(`${(t1 - t0).toFixed(4)} ${(t2 - t1).toFixed(4)}`);
  } else {
    const t0 = now();
    const b = await fsp.readFile(path);
    const t1 = now();
    if (b.length === 0) throw new Error('empty');
    console.log(`${(t1 - t0).toFixed(4)}`);
  }
})();
