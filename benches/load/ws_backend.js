// WebSocket echo backend for benches/load/run.sh.
// usage: node ws_backend.js PORT [CERT KEY]   (with CERT/KEY it serves WSS)
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const [port, cert, key] = process.argv.slice(2);
const handler = (req, res) => { res.writeHead(200, { 'content-type': 'text/plain' }); res.end('ok'); };
const server = cert
  ? https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, handler)
  : http.createServer(handler);
const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
server.listen({ host: '127.0.0.1', port: Number(port), backlog: 4096 });
