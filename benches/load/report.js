// Turns the raw results file written by run.sh (one "metric<TAB>target<TAB>value" per line)
// into a markdown table with ratios. usage: node report.js RAW.tsv HEADER.md
'use strict';
const fs = require('fs');
const [raw, header] = process.argv.slice(2);
const v = {};
for (const line of fs.readFileSync(raw, 'utf8').split('\n')) {
  const [m, t, x] = line.split('\t');
  if (!m || x === undefined) continue;
  (v[m] ||= {})[t] = x === '' ? NaN : Number(x);
}
const rows = [
  ['http_rps', 'HTTP keep-alive, requests/s', true],
  ['http_p99', 'HTTP keep-alive, p99 ms', false],
  ['https_rps', 'HTTPS keep-alive, requests/s', true],
  ['https_p99', 'HTTPS keep-alive, p99 ms', false],
  ['tlsnew_rps', 'new TLS connections/s', true],
  ['tlsnew_p99', 'new TLS connections, p99 ms', false],
  ['ws_mps', 'WS echo, messages/s', true],
  ['ws_p99', 'WS echo, p99 ms', false],
  ['wss_mps', 'WSS echo, messages/s', true],
  ['wss_p99', 'WSS echo, p99 ms', false],
  ['mem_kib', 'RSS per idle WSS connection, KiB', false],
];
const T = ['direct', 'latch', 'nginx', 'haproxy'];
const fmt = (x) => (x === undefined || Number.isNaN(x) ? '—' : x >= 100 ? Math.round(x).toString() : x.toFixed(2));
const ratio = (a, b) => (a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b) || b === 0 ? '—' : (a / b).toFixed(2));
let out = fs.readFileSync(header, 'utf8');
out += '\n| metric | better | direct | latch | nginx | HAProxy | latch/direct | nginx/direct | HAProxy/direct | latch/nginx | latch/HAProxy |\n';
out += '|---|---|---|---|---|---|---|---|---|---|---|\n';
for (const [k, label, higher] of rows) {
  const r = v[k] || {};
  out += `| ${label} | ${higher ? 'higher' : 'lower'} | ${T.map((t) => fmt(r[t])).join(' | ')} | ` +
    `${ratio(r.latch, r.direct)} | ${ratio(r.nginx, r.direct)} | ${ratio(r.haproxy, r.direct)} | ` +
    `${ratio(r.latch, r.nginx)} | ${ratio(r.latch, r.haproxy)} |\n`;
}
process.stdout.write(out);
