// Turns the raw results written by run.sh (one "metric<TAB>target<TAB>value" per line) into
// the markdown report (stdout) and an SVG chart of the proxy CPU per operation.
//   usage: node report.js RAW.tsv HEADER.md NOTES.md CHART.svg
'use strict';
const fs = require('fs');
const [raw, header, notes, chart] = process.argv.slice(2);
const headerText = fs.readFileSync(header, 'utf8');

// Each metric of each target, once per round (run.sh ROUNDS): what is shown is the median.
const v = {};
for (const line of fs.readFileSync(raw, 'utf8').split('\n')) {
  const [m, t, x] = line.split('\t');
  if (!m || x === undefined || x === '' || Number.isNaN(Number(x))) continue;
  ((v[m] ||= {})[t] ||= []).push(Number(x));
}
const all = (metric, target) => ((v[metric] || {})[target] || []).slice().sort((a, b) => a - b);
const get = (metric, target) => {
  const xs = all(metric, target);
  if (!xs.length) return undefined;
  const mid = xs.length >> 1;
  return xs.length % 2 ? xs[mid] : (xs[mid - 1] + xs[mid]) / 2;
};

const PROXIES = ['latch', 'nginx', 'haproxy'];
const ALL = ['direct', ...PROXIES];
const NAME = { direct: 'direct', latch: 'latch', nginx: 'nginx', haproxy: 'HAProxy' };
const MEM_CONNS = Math.max(0, ...PROXIES.map((t) => get('mem_conns', t) || 0));
// The rows of the comparison: raw-metric prefix, label, unit of the throughput.
const ROWS = [
  ['http', 'HTTP keep-alive request', 'req/s'],
  ['https', 'HTTPS keep-alive request', 'req/s'],
  ['tlsnew', 'new TLS connection', 'conn/s'],
  ['ws', 'WS message (64-byte echo)', 'msg/s'],
  ['wss', 'WSS message (64-byte echo)', 'msg/s'],
  ['tcpbulk', 'TCP bulk transfer, per MB (both ways)', 'MB/s'],
  ['tcpnew', 'new TCP connection (1-byte echo)', 'conn/s'],
];
// What the chart and the first table show: CPU per operation, then memory per connection.
const COST = [
  ...ROWS.map(([k, label]) => ({ metric: `${k}_cpu_us`, label, unit: k === 'tcpbulk' ? 'µs CPU per MB' : 'µs CPU per operation' })),
  { metric: 'mem_kib', label: `idle WSS connection (${MEM_CONNS.toLocaleString('en-US')} open)`, unit: 'KiB RSS per connection' },
];

const fmt = (x) => (x === undefined ? '—' : x >= 100 ? Math.round(x).toString() : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const div = (a, b) => (a === undefined || b === undefined || b === 0 ? undefined : a / b);
const ratioText = (r) => (r === undefined ? '—' : r.toFixed(2));
/** latch divided by the lower of nginx and HAProxy (whichever were measured). */
function vsBest(metric) {
  const peers = ['nginx', 'haproxy'].map((t) => [t, get(metric, t)]).filter(([, x]) => x !== undefined);
  if (!peers.length) return { ratio: undefined, best: undefined };
  const [best, x] = peers.reduce((a, b) => (b[1] < a[1] ? b : a));
  return { ratio: div(get(metric, 'latch'), x), best };
}

/** latch ÷ the better peer within each round (whose figures were taken seconds apart), sorted. */
function roundRatios(metric) {
  const byTarget = v[metric] || {};
  return (byTarget.latch || [])
    .map((x, i) => {
      const peers = ['nginx', 'haproxy'].map((t) => (byTarget[t] || [])[i]).filter((y) => y !== undefined);
      return peers.length ? div(x, Math.min(...peers)) : undefined;
    })
    .filter((r) => r !== undefined)
    .sort((a, b) => a - b);
}

let out = headerText;
out += '\n![proxy CPU per operation: latch, nginx, HAProxy](chart.svg)\n';

out += '\n## Proxy CPU time per operation (lower is better)\n\n';
const ROUNDS = Math.max(1, ...Object.values(v).flatMap((byTarget) => Object.values(byTarget).map((xs) => xs.length)));
if (ROUNDS > 1) {
  out += `Each figure is the median of the ${ROUNDS} rounds (the range in brackets); ` +
    'the ratio is of the medians, followed by the range of the ratios within each round ' +
    '(a round measures an operation on every target in turn, seconds apart).\n\n';
}
// The median, and the range over the rounds when there were several.
const withRange = (metric, t) => {
  const xs = all(metric, t);
  return xs.length > 1 ? `${fmt(get(metric, t))} (${fmt(xs[0])}–${fmt(xs[xs.length - 1])})` : fmt(get(metric, t));
};
out += '| operation | unit | latch | nginx | HAProxy | latch ÷ better of nginx/HAProxy |\n|---|---|---|---|---|---|\n';
for (const { metric, label, unit } of COST) {
  const { ratio, best } = vsBest(metric);
  const rr = roundRatios(metric);
  const rounds = rr.length > 1 ? `; rounds ${ratioText(rr[0])}–${ratioText(rr[rr.length - 1])}` : '';
  out += `| ${label} | ${unit} | ${PROXIES.map((t) => withRange(metric, t)).join(' | ')} | ` +
    `${ratioText(ratio)}${best ? ` (vs ${NAME[best]}${rounds})` : ''} |\n`;
}

out += '\n## Throughput and latency\n\n';
out += '| operation | ' + ALL.map((t) => NAME[t]).join(' | ') + ' | ' +
  PROXIES.map((t) => `${NAME[t]} ÷ direct`).join(' | ') + ' |\n';
out += '|---|' + ALL.map(() => '---|').join('') + PROXIES.map(() => '---|').join('') + '\n';
for (const [k, label, unit] of ROWS) {
  const rate = `${k}_rate`;
  out += `| ${label}, ${unit} | ${ALL.map((t) => fmt(get(rate, t))).join(' | ')} | ` +
    `${PROXIES.map((t) => ratioText(div(get(rate, t), get(rate, 'direct')))).join(' | ')} |\n`;
  out += `| ${label}, p99 ms | ${ALL.map((t) => fmt(get(`${k}_p99`, t))).join(' | ')} | ${PROXIES.map(() => '').join(' | ')} |\n`;
}

out += '\n## CPU use during each measurement (% of one core)\n\n';
out += 'The client is wrk (2 threads) or wsload (one thread per core), so it can use up to ' +
  '200% on 2 cores. A client far below that was not the limit; proxy + client + backends ' +
  'near 100% × cores means the machine was.\n\n';
out += '| operation | ' + ALL.map((t) => `client (${NAME[t]})`).join(' | ') + ' | ' +
  PROXIES.map((t) => `proxy (${NAME[t]})`).join(' | ') + ' |\n';
out += '|---|' + ALL.map(() => '---|').join('') + PROXIES.map(() => '---|').join('') + '\n';
const pct = (x) => (x === undefined ? '—' : `${Math.round(x)}%`);
for (const [k, label] of ROWS) {
  out += `| ${label} | ${ALL.map((t) => pct(get(`${k}_client_cpu_pct`, t))).join(' | ')} | ` +
    `${PROXIES.map((t) => pct(get(`${k}_proxy_cpu_pct`, t))).join(' | ')} |\n`;
}

const noteText = fs.existsSync(notes) ? fs.readFileSync(notes, 'utf8').trim() : '';
if (noteText) out += `\nNotes:\n${noteText}\n`;
process.stdout.write(out);
fs.writeFileSync(chart, svg());

// One panel per operation, each with its own scale: a new TLS connection costs two orders
// of magnitude more than a keep-alive request, so a shared axis would hide the rest.
function svg() {
  const COLOR = { latch: '#2f6fb0', nginx: '#3f9b59', haproxy: '#e08a1e' };
  const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const W = 960, COLS = 3, PW = 300, PH = 230, GAP = 15, TOP = 70;
  const rows = Math.ceil(COST.length / COLS);
  const H = TOP + rows * (PH + GAP) + 24;
  const date = (headerText.match(/^- date: (.*)$/m) || [])[1] || '';
  const cores = (headerText.match(/^- machine: (\d+) CPUs/m) || [])[1] || '?';
  const s = [];
  s.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`);
  s.push(`<rect width="${W}" height="${H}" fill="#fff"/>`);
  s.push(`<text x="${W / 2}" y="26" font-size="18" text-anchor="middle" font-weight="bold">Proxy cost per operation (lower is better)</text>`);
  PROXIES.forEach((t, i) => {
    const x = W / 2 - 150 + i * 110;
    s.push(`<rect x="${x}" y="40" width="14" height="14" fill="${COLOR[t]}"/>`);
    s.push(`<text x="${x + 20}" y="52" font-size="13">${NAME[t]}</text>`);
  });
  COST.forEach(({ metric, label, unit }, i) => {
    const px = GAP + (i % COLS) * (PW + GAP), py = TOP + Math.floor(i / COLS) * (PH + GAP);
    s.push(`<g transform="translate(${px},${py})">`);
    s.push(`<rect width="${PW}" height="${PH}" fill="#f7f7f7" stroke="#ddd"/>`);
    s.push(`<text x="${PW / 2}" y="20" font-size="13" text-anchor="middle" font-weight="bold">${esc(label)}</text>`);
    const { ratio } = vsBest(metric);
    s.push(`<text x="${PW / 2}" y="38" font-size="12" text-anchor="middle" fill="#444">${esc(unit)}; latch ÷ best peer: ${ratioText(ratio)}</text>`);
    const vals = PROXIES.map((t) => get(metric, t));
    const max = Math.max(...vals.filter((x) => x !== undefined), 0) || 1;
    const base = PH - 28, room = base - 70, bw = 60, step = 85, x0 = (PW - (2 * step + bw)) / 2;
    s.push(`<line x1="20" y1="${base}" x2="${PW - 20}" y2="${base}" stroke="#999"/>`);
    PROXIES.forEach((t, j) => {
      const x = x0 + j * step, val = vals[j];
      if (val === undefined) {
        s.push(`<text x="${x + bw / 2}" y="${base - 6}" font-size="12" text-anchor="middle" fill="#888">n/a</text>`);
      } else {
        const h = Math.max(1, (val / max) * room);
        s.push(`<rect x="${x}" y="${(base - h).toFixed(1)}" width="${bw}" height="${h.toFixed(1)}" fill="${COLOR[t]}"/>`);
        s.push(`<text x="${x + bw / 2}" y="${(base - h - 5).toFixed(1)}" font-size="12" text-anchor="middle">${fmt(val)}</text>`);
      }
      s.push(`<text x="${x + bw / 2}" y="${base + 17}" font-size="12" text-anchor="middle">${NAME[t]}</text>`);
    });
    s.push('</g>');
  });
  s.push(`<text x="${W / 2}" y="${H - 12}" font-size="11" text-anchor="middle" fill="#666">` +
    `${esc(date)}; one shared ${esc(cores)}-core machine running proxy, backends and load generator; ` +
    'utime+stime of the proxy process(es) ÷ operations</text>');
  s.push('</svg>');
  return s.join('\n') + '\n';
}
