// Node.js: N async functions that each await a setTimeout(1000) promise, started one
// by one, then awaited with Promise.all.
// Usage: node node_tasks.js N      Prints "spawn=<s> wall=<s>" (performance.now()).
'use strict';
const { setTimeout: sleep } = require('node:timers/promises');
const { performance } = require('node:perf_hooks');

async function work() { await sleep(1000); }

async function main(n) {
  const t0 = performance.now();
  const tasks = new Array(n);
  for (let i = 0; i < n; i++) tasks[i] = work();
  const t1 = performance.now();
  const results = await Promise.all(tasks);
  const t2 = performance.now();
  if (results.length !== n) throw new Error('wrong count');
  console.log(`spawn=${((t1 - t0) / 1000).toFixed(3)} wall=${((t2 - t0) / 1000).toFixed(3)}`);
}

main(Number(process.argv[2]));
