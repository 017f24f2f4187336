// WebSocket echo on Node's `ws` (installed by bench/serve.sh into bench/serve/node_modules):
// node ws_node.js PORT
'use strict';
const { WebSocketServer } = require('ws');
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[2]), backlog: 4096,
                                  perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
