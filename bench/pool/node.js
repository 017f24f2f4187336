// bench/pool/node.js: worker_threads, one worker per core, messages via postMessage.
//   node bench/pool/node.js [job_iterations]
'use strict';
const { Worker, isMainThread, parentPort } = require('worker_threads');
const os = require('os');

function cpu(n) {
  let x = 0;
  for (let i = 1; i <= n; i++) x = (x + i * i) % 1000003;
  return x;
}

if (!isMainThread) {
  parentPort.on('message', ({ id, kind, arg }) => {
    parentPort.postMessage({ id, result: kind === 'cpu' ? cpu(arg) : arg });
  });
} else {
  const ITER = Number(process.argv[2] || 20000000);
  const nworkers = os.availableParallelism ? os.availableParallelism() : os.cpus().length;
  const workers = [];
  const pending = new Map();
  let nextId = 0, rr = 0;
  for (let i = 0; i < nworkers; i++) {
    const w = new Worker(__filename);
    w.on('message', ({ id, result }) => { pending.get(id)(result); pending.delete(id); });
    workers.push(w);
  }
  const call = (kind, arg) => new Promise((resolve) => {
    const id = nextId++;
    pending.set(id, resolve);
    workers[rr++ % nworkers].postMessage({ id, kind, arg });
  });
  const now = () => Number(process.hrtime.bigint()) / 1e9;
  const median = (a) => a.sort((x, y) => x - y)[(a.length - 1) >> 1];
  (async () => {
    await Promise.all(workers.map(() => call('id', 0)));
    // (a): 3 rounds of sequential then pooled; medians
    const seqs = [], pools = [], speedups = [];
    let t0;
    for (let r = 0; r < 3; r++) {
      t0 = now();
      for (let i = 0; i < 8; i++) cpu(ITER);
      seqs.push(now() - t0);
      t0 = now();
      await Promise.all(Array.from({ length: 8 }, () => call('cpu', ITER)));
      pools.push(now() - t0);
      speedups.push(seqs[r] / pools[r]);
    }
    const each = speedups.map((v) => v.toFixed(2)).join(',');
    console.log(`a_sequential_s ${median(seqs).toFixed(3)}`);
    console.log(`a_pooled_s ${median(pools).toFixed(3)}`);
    console.log(`a_speedup ${median(speedups).toFixed(2)}`);
    console.log(`a_speedups ${each}`);
    console.log(`a_workers ${nworkers}`);
    // (b)
    const n = 10000;
    let runs = [];
    for (let r = 0; r < 3; r++) {
      t0 = now();
      for (let i = 0; i < n; i++) await call('id', i);
      runs.push((now() - t0) / n * 1e6);
    }
    console.log(`b_sequential_us ${median(runs).toFixed(2)}`);
    runs = [];
    for (let r = 0; r < 3; r++) {
      t0 = now();
      await Promise.all(Array.from({ length: n }, (_, i) => call('id', i)));
      runs.push((now() - t0) / n * 1e6);
    }
    console.log(`b_concurrent_us ${median(runs).toFixed(2)}`);
    // (c)
    const big = 'x'.repeat(1024 * 1024 - 1) + 'y';
    const m = 200;
    for (let i = 0; i < 10; i++) await call('id', big);
    runs = [];
    for (let r = 0; r < 3; r++) {
      t0 = now();
      for (let i = 0; i < m; i++) {
        const s = await call('id', big);
        if (s.length !== big.length) throw new Error('bad length');
      }
      runs.push((now() - t0) / m * 1e6);
    }
    console.log(`c_1mb_roundtrip_us ${median(runs).toFixed(1)}`);
    for (const w of workers) await w.terminate();
  })();
}
