// Node.js: N setTimeout(1000) promises (node:timers/promises) created one by one, then
// awaited with Promise.all: no async function per task (the form issue 20 measured).
// Usage: node node_promises.js N   Prints "spawn=<s> wall=<s>" (performance.now()).
'use strict';
const { setTimeout: sleep } = require('node:timers/promises');
const { performance } = require('node:perf_hooks');

async function main(n) {
  const t0 = performance.now();
  const promises = new Array(n);
  for (let i = 0; i < n; i++) promises[i] = sleep(1000);
  const t1 = performance.now();
  const results = await Promise.all(promises);
  const t2 = performance.now();
  if (results.length !== n) throw new Error('wrong count');
  console.log(`spawn=${((t1 - t0) / 1000).toFixed(3)} wall=${((t2 - t0) / 1000).toFixed(3)}`);
}

main(Number(process.argv[2]));
