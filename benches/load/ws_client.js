// WebSocket load client for benches/load/run.sh.
//   node ws_client.js echo URL CONNS SECONDS   ping-pong CONNS connections for SECONDS
//       (after 1 s of warm-up); prints JSON {msgs_per_s, p99_ms, ...}
//   node ws_client.js idle URL CONNS READYFILE open CONNS connections (100 handshakes in
//       flight at most), do one echo on each, write JSON {opened, failed} to READYFILE,
//       then hold them idle until killed.
'use strict';
const fs = require('fs');
const WebSocket = require('ws');

const [mode, url, connsArg, arg4] = process.argv.slice(2);
const conns = Number(connsArg);
const opts = { perMessageDeflate: false, rejectUnauthorized: false, handshakeTimeout: 30000 };
const payload = 'x'.repeat(32);

function echo(seconds) {
  let measuring = false, count = 0, errors = 0, open = 0;
  const lat = [];
  const sockets = [];
  const start = () => {
    setTimeout(() => {
      measuring = true;
      const t0 = process.hrtime.bigint();
      setTimeout(() => {
        measuring = false;
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        lat.sort((a, b) => a - b);
        const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : NaN);
        process.stdout.write(JSON.stringify({
          msgs_per_s: count / secs, p50_ms: pct(0.5), p99_ms: pct(0.99), msgs: count, errors, conns: open,
        }) + '\n');
        for (const s of sockets) s.terminate();
        process.exit(0);
      }, seconds * 1000);
    }, 1000);
  };
  for (let i = 0; i < conns; i++) {
    const ws = new WebSocket(url, opts);
    sockets.push(ws);
    let sent = 0n;
    const send = () => { sent = process.hrtime.bigint(); ws.send(payload); };
    ws.on('open', () => { open++; send(); if (open === conns) start(); });
    ws.on('message', () => {
      if (measuring) { count++; lat.push(Number(process.hrtime.bigint() - sent) / 1e6); }
      send();
    });
    ws.on('error', (e) => { errors++; if (errors <= 3) console.error('ws error:', e.message); });
  }
  setTimeout(() => { console.error(`only ${open}/${conns} connections opened`); process.exit(1); }, 30000 + seconds * 1000 + 2000).unref();
}

function idle(readyFile) {
  let started = 0, opened = 0, failed = 0, done = 0;
  const firstErr = [];
  const keep = [];
  const finishOne = () => {
    done++;
    if (started < conns) next();
    if (done === conns) fs.writeFileSync(readyFile, JSON.stringify({ opened, failed, errors: firstErr }) + '\n');
  };
  const next = () => {
    started++;
    const ws = new WebSocket(url, opts);
    let settled = false;
    const settle = (ok, why) => {
      if (settled) return; settled = true;
      if (ok) opened++; else { failed++; if (firstErr.length < 3) firstErr.push(why); }
      finishOne();
    };
    ws.on('open', () => { keep.push(ws); ws.send(payload); });
    ws.on('message', () => settle(true));
    ws.on('error', (e) => settle(false, e.message));
    ws.on('close', () => settle(false, 'closed'));
  };
  for (let i = 0; i < Math.min(100, conns); i++) next();
}

if (mode === 'echo') echo(Number(arg4));
else if (mode === 'idle') idle(arg4);
else { console.error('mode must be echo or idle'); process.exit(2); }
