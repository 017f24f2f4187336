// Node's http module, one process: node node.js WORKLOAD PORT [UPSTREAM_URL]
// Workloads: a plaintext, b json, c 10 ms sleep, d one upstream GET, e POST body length,
// g = a (run while slowloris connections drip).
'use strict';
const http = require('http');
const [workload, port, upstream] = process.argv.slice(2);
const HELLO = 'Hello, World!';
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function send(res, type, body) {
  res.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const handlers = {
  a: (req, res) => send(res, 'text/plain', HELLO),
  b: (req, res) => send(res, 'application/json', JSON.stringify({ message: HELLO })),
  c: (req, res) => setTimeout(() => send(res, 'text/plain', HELLO), 10),
  d: (req, res) => {
    http.get(upstream, { agent }, (up) => {
      const chunks = [];
      up.on('data', (c) => chunks.push(c));
      up.on('end', () => send(res, 'text/plain', Buffer.concat(chunks).toString()));
    }).on('error', (e) => { res.writeHead(502); res.end(String(e)); });
  },
  e: (req, res) => {
    let n = 0;
    req.on('data', (c) => { n += c.length; });
    req.on('end', () => send(res, 'text/plain', String(n)));
  },
};
handlers.g = handlers.a;
const handler = handlers[workload];
if (!handler) { console.error(`node.js: no workload ${workload}`); process.exit(2); }
const server = http.createServer(handler);
server.keepAliveTimeout = 60000;
server.listen({ host: '127.0.0.1', port: Number(port), backlog: 4096 });
