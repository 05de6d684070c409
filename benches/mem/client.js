// Idle-connection driver for benches/mem/run.sh, steered line by line over stdin/stdout.
//   node client.js URL CONNS
// stdin "open"  -> open CONNS WebSockets (100 handshakes in flight at most), one echo on
//                  each, then print "opened OK FAILED FIRST_ERROR" and hold them idle;
// stdin "close" -> close them all (close handshake, terminate after 5 s) and print "closed N";
// stdin EOF     -> exit.
'use strict';
const readline = require('readline');
const WebSocket = require('ws');

const [url, connsArg] = process.argv.slice(2);
const conns = Number(connsArg);
const opts = { perMessageDeflate: false, rejectUnauthorized: false, handshakeTimeout: 30000 };
let held = [];

function open() {
  let started = 0, opened = 0, failed = 0, done = 0, firstErr = '-';
  const next = () => {
    started++;
    const ws = new WebSocket(url, opts);
    let settled = false;
    const settle = (ok, why) => {
      if (settled) return;
      settled = true;
      if (ok) opened++; else { failed++; if (firstErr === '-') firstErr = String(why).replace(/\s+/g, '_'); }
      done++;
      if (started < conns) next();
      if (done === conns) console.log(`opened ${opened} ${failed} ${firstErr}`);
    };
    ws.on('open', () => { held.push(ws); ws.send('x'.repeat(32)); });
    ws.on('message', () => settle(true));
    ws.on('error', (e) => settle(false, e.message));
    ws.on('close', () => settle(false, 'closed'));
  };
  for (let i = 0; i < Math.min(100, conns); i++) next();
}

function close() {
  const all = held;
  held = [];
  let left = all.length;
  if (left === 0) { console.log('closed 0'); return; }
  const timer = setTimeout(() => { for (const ws of all) ws.terminate(); }, 5000);
  for (const ws of all) {
    ws.removeAllListeners('close');
    ws.on('close', () => { if (--left === 0) { clearTimeout(timer); console.log(`closed ${all.length}`); } });
    ws.close();
  }
}

readline.createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'open') open();
  else if (l === 'close') close();
}).on('close', () => process.exit(0));
