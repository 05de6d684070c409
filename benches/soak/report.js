// Turns what benches/soak/run.sh collected into the markdown report (stdout), the
// per-second table OUT/rss.tsv and the chart OUT/chart.svg.
//   usage: node report.js OUT CLK_TCK GRACE_S HTTP_RATE
// Reads OUT/rss.raw.tsv (latch sampled once a second), OUT/events.tsv (reloads, kill,
// restart), OUT/client/{ready.json,rate.tsv,sessions.tsv,summary.json} (wsload soak),
// OUT/cpu.tsv (CPU ticks at the start, before the kill, near the end), OUT/header.md and
// OUT/notes.md.
'use strict';
const fs = require('fs');
const path = require('path');
const [out, hzArg, graceArg, rateArg] = process.argv.slice(2);
const HTTP_RATE = Number(rateArg) || 0;
const HZ = Number(hzArg) || 100;
const GRACE_MS = (Number(graceArg) || 0) * 1000;
const read = (f) => fs.readFileSync(path.join(out, f), 'utf8');
const tsv = (f) => {
  const [head, ...lines] = read(f).trim().split('\n');
  const cols = head.split('\t');
  return lines.filter((l) => l.trim()).map((l) => {
    const v = l.split('\t');
    const r = {};
    cols.forEach((c, i) => { r[c] = v[i] !== undefined && v[i] !== '' && !Number.isNaN(Number(v[i])) ? Number(v[i]) : v[i]; });
    return r;
  });
};

const ready = JSON.parse(read('client/ready.json'));
const summary = JSON.parse(read('client/summary.json'));
const T0 = ready.t0_ms;
const D = summary.secs;
const rel = (ms) => (ms - T0) / 1000;
const rss = tsv('rss.raw.tsv').filter((r) => typeof r.rss_kib === 'number');
const rate = tsv('client/rate.tsv');
const sessions = tsv('client/sessions.tsv');
const events = tsv('events.tsv').map((e) => ({ ...e, t: rel(e.epoch_ms) }));
// The client's ticker skips a second it could not write on time, so a row may cover
// more than one second: every rate is the row's counts over the time since the last row.
rate.forEach((r, i) => {
  const dt = i ? (r.epoch_ms - rate[i - 1].epoch_ms) / 1000 : 1;
  r.dt = dt > 0 ? dt : 1;
});

// ------------------------------------------------------------ per-second table
const rateAt = (t) => {
  let best;
  for (const r of rate) {
    const d = Math.abs(rel(r.epoch_ms) - t);
    if (d <= 0.6 && (!best || d < best.d)) best = { d, r };
  }
  return best && best.r;
};
const rows = rss.map((s, i) => {
  const t = rel(s.epoch_ms);
  const p = rss[i - 1];
  const cpu = p ? (100 * (s.cpu_ticks - p.cpu_ticks) / HZ) / ((s.epoch_ms - p.epoch_ms) / 1000) : undefined;
  const r = rateAt(t);
  return {
    t, rss: s.rss_kib, fds: s.fds, threads: s.threads, cpu, load1: s.load1,
    open: r ? r.open : undefined, echoed: r ? r.echoed / r.dt : undefined,
    http_ok: r ? r.http_ok / r.dt : undefined, http_failed: r ? (r.http_non2xx + r.http_err) / r.dt : undefined,
  };
});
const f1 = (x) => (x === undefined || Number.isNaN(x) ? '' : x.toFixed(1));
fs.writeFileSync(path.join(out, 'rss.tsv'),
  't_s\trss_kib\tlatch_fds\tlatch_threads\tlatch_cpu_pct\tload1\topen_conns\techoed_per_s\thttp_ok_per_s\thttp_failed_per_s\n' +
  rows.map((r) => [r.t.toFixed(1), r.rss, r.fds, r.threads, f1(r.cpu), r.load1, r.open ?? '', f1(r.echoed), f1(r.http_ok), f1(r.http_failed)].join('\t')).join('\n') + '\n');

// ------------------------------------------------------------ RSS figures
const inRun = rows.filter((r) => r.t >= 0 && r.t <= D);
const mib = (kib) => (kib / 1024).toFixed(1);
const startRow = inRun[0];
const endRow = inRun[inRun.length - 1];
const maxRow = inRun.reduce((a, b) => (b.rss > a.rss ? b : a), startRow);
const minRow = inRun.reduce((a, b) => (b.rss < a.rss ? b : a), startRow);
const baseline = rows[0];
const after = rows[rows.length - 1];
// Least-squares slope of RSS over the run, in MiB per hour.
function slope(rs) {
  const n = rs.length;
  if (n < 2) return 0;
  const mx = rs.reduce((a, r) => a + r.t, 0) / n;
  const my = rs.reduce((a, r) => a + r.rss, 0) / n;
  let sxy = 0, sxx = 0;
  for (const r of rs) { sxy += (r.t - mx) * (r.rss - my); sxx += (r.t - mx) ** 2; }
  return sxx ? (sxy / sxx) * 3600 / 1024 : 0;
}
const secondHalf = inRun.filter((r) => r.t >= D / 2);
const rssAt = (t) => inRun.reduce((a, b) => (Math.abs(b.t - t) < Math.abs(a.t - t) ? b : a), inRun[0]);
const loads = inRun.map((r) => r.load1).filter((x) => typeof x === 'number');
const cpus = inRun.map((r) => r.cpu).filter((x) => x !== undefined && !Number.isNaN(x));
const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

// ------------------------------------------------------------ sessions
// A tunnel cut on purpose: its backend was killed (closed within 15 s of the kill) or
// removed by a reload (closed between the reload and 15 s after its grace ended).
const windows = [];
for (const e of events) {
  if (e.cuts === '-' || !e.cuts) continue;
  for (const b of String(e.cuts).split(',')) {
    if (e.kind === 'kill') windows.push({ backend: b, from: e.epoch_ms, to: e.epoch_ms + 15000, why: 'kill', ev: e });
    if (e.kind === 'reload') windows.push({ backend: b, from: e.epoch_ms, to: e.epoch_ms + GRACE_MS + 15000, why: 'drain', ev: e });
  }
}
const cutBy = (s) => (s.end === 'end' ? undefined : windows.find((w) => w.backend === s.backend && s.closed_ms >= w.from && s.closed_ms <= w.to));
const per = {};
const agg = (k) => (per[k] ||= { sessions: 0, initial: 0, sent: 0, echoed: 0, lostCut: 0, cut: 0, lostOther: 0, unexpected: 0, misrouted: 0, gaps: 0, dups: 0, rttMax: 0, cutKill: [], cutDrain: [], unexpectedList: [] });
const total = agg('all');
for (const s of sessions) {
  const w = cutBy(s);
  for (const a of [agg(s.backend), total]) {
    a.sessions++; a.initial += s.initial; a.sent += s.sent; a.echoed += s.echoed;
    a.misrouted += s.misrouted; a.gaps += s.gaps; a.dups += s.dups; a.rttMax = Math.max(a.rttMax, s.rtt_max_ms);
    if (w) {
      a.cut++; a.lostCut += s.lost;
      (w.why === 'kill' ? a.cutKill : a.cutDrain).push((s.closed_ms - w.ev.epoch_ms) / 1000);
    } else {
      a.lostOther += s.lost;
      if (s.end !== 'end') { a.unexpected++; a.unexpectedList.push(s); }
    }
  }
}
const backends = Object.keys(per).filter((k) => k !== 'all').sort();
const n = (x) => Number(x).toLocaleString('en-US');
const range = (xs) => (xs.length ? `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)} s` : '—');

// ------------------------------------------------------------ HTTP
const http = summary.http || { sent: 0, ok: 0, non2xx: 0, errors: 0, failures: [], by_backend: {}, statuses: {} };
const kill = events.find((e) => e.kind === 'kill');
const restart = events.find((e) => e.kind === 'restart');
const failT = (http.failures || []).map(([ms, what]) => ({ t: rel(ms), what }));
const inKill = kill ? failT.filter((f) => f.t >= kill.t && f.t <= (restart ? restart.t : kill.t + 60)).length : 0;

// ------------------------------------------------------------ CPU
// Shares of one core during the run (start -> end snapshot). ws1's first process is
// counted up to the kill, its second one from its start.
let cpuUse;
try {
  const snaps = tsv('cpu.tsv');
  const a = snaps.find((r) => r.label === 'start');
  const z = snaps.find((r) => r.label === 'end');
  const k = snaps.find((r) => String(r.label).startsWith('kill'));
  if (a && z) {
    const secs = (z.epoch_ms - a.epoch_ms) / 1000;
    const pct = (ticks) => (100 * ticks) / HZ / secs;
    const be = ['ws1', 'ws2', 'ws3'].reduce((sum, b) => sum + (k && b === 'ws1' ? (k[b] - a[b]) + z[b] : z[b] - a[b]), 0);
    const busy = pct(z.machine_busy - a.machine_busy);
    const cores = ((z.machine_total - a.machine_total) / HZ) / secs;
    cpuUse = { latch: pct(z.latch - a.latch), client: pct(z.client - a.client), backends: pct(be), machine: busy, cores };
  }
} catch (_) { /* no cpu.tsv */ }

// ------------------------------------------------------------ report
const ok = (cond) => (cond ? 'yes' : '**no**');
let md = '# latch soak benchmark\n\n' + read('header.md') + '\n![latch RSS and message rate over the soak, with reloads and the backend kill](chart.svg)\n\n';
md += '## Results\n\n| what | result | expected |\n|---|---|---|\n';
md += `| latch RSS, all ${n(ready.opened)} connections open (t = 0) | ${mib(startRow.rss)} MiB | |\n`;
md += `| latch RSS at the end (t = ${endRow.t.toFixed(0)} s) | ${mib(endRow.rss)} MiB (${endRow.rss >= startRow.rss ? '+' : ''}${(100 * (endRow.rss - startRow.rss) / startRow.rss).toFixed(1)}%) | flat |\n`;
md += `| latch RSS max / min during the run | ${mib(maxRow.rss)} MiB at ${maxRow.t.toFixed(0)} s / ${mib(minRow.rss)} MiB at ${minRow.t.toFixed(0)} s | |\n`;
md += `| latch RSS trend (least squares), whole run / second half | ${slope(inRun).toFixed(1)} / ${slope(secondHalf).toFixed(1)} MiB per hour | about 0 |\n`;
const lastCut = Math.max(0, ...events.filter((e) => e.cuts && e.cuts !== '-').map((e) => e.t + (e.kind === 'reload' ? GRACE_MS / 1000 : 0)));
const quiet = inRun.filter((r) => r.t >= lastCut + 30);
if (quiet.length > 60) {
  md += `| latch RSS trend from ${(lastCut + 30).toFixed(0)} s (30 s after the last tunnels were cut) to the end | ${slope(quiet).toFixed(1)} MiB per hour (${mib(quiet[0].rss)} → ${mib(quiet[quiet.length - 1].rss)} MiB) | about 0 |\n`;
}
md += `| WS messages sent / echoed | ${n(total.sent)} / ${n(total.echoed)} | |\n`;
md += `| messages lost on tunnels whose backend stayed | **${n(total.lostOther)}** | 0 |\n`;
md += `| tunnels closed unexpectedly (not by the kill or a drain) | **${n(total.unexpected)}** | 0 |\n`;
md += `| echoes from the wrong backend or slot, out of order, duplicated | ${n(total.misrouted)}, ${n(total.gaps)}, ${n(total.dups)} | 0 |\n`;
md += `| tunnels cut on purpose (kill, drain) and the messages in flight on them | ${n(total.cut)} tunnels, ${n(total.lostCut)} messages | those in flight at the cut |\n`;
md += `| HTTP requests sent / failed (non-2xx, transport errors) | ${n(http.sent)} / **${n(http.non2xx + http.errors)}** (${n(http.non2xx)}, ${n(http.errors)})${http.stale_retried ? `; ${n(http.stale_retried)} sent again after a stale keep-alive connection` : ''} | 0 failed |\n`;
md += `| HTTP requests failed while ws1 was dead (${kill ? kill.t.toFixed(0) : '?'}–${restart ? restart.t.toFixed(0) : '?'} s) | **${n(inKill)}** | 0 |\n`;
md += `| WS messages a second, achieved / offered (${n(ready.opened)} connections × 1/s) | ${n(Math.round(total.sent / D))} / ${n(ready.opened)} | |\n`;
md += `| HTTP requests a second, achieved / offered | ${(http.sent / D).toFixed(1)} / ${HTTP_RATE} | |\n`;
if (cpuUse) {
  md += `| CPU during the run, % of one core: latch / client (wsload soak) / 3 backends / whole machine (${cpuUse.cores.toFixed(1)} cores) | ${cpuUse.latch.toFixed(0)}% / ${cpuUse.client.toFixed(0)}% / ${cpuUse.backends.toFixed(0)}% / ${cpuUse.machine.toFixed(0)}% | |\n`;
} else {
  md += `| latch CPU, mean during the run | ${mean(cpus).toFixed(0)}% of one core | |\n`;
}
md += `| load average (1 min) during the run, min / mean / max | ${Math.min(...loads).toFixed(2)} / ${mean(loads).toFixed(2)} / ${Math.max(...loads).toFixed(2)} | |\n`;
md += `\nRSS with no connection (before the ramp): ${mib(baseline.rss)} MiB; ${after.t.toFixed(0)} s in, after every connection closed: ${mib(after.rss)} MiB. ` +
  `Opening the ${n(ready.opened)} connections took ${(-rows[0].t).toFixed(0)} s from latch's start (${ready.failed} failed).\n`;

md += '\n### RSS from each event to the next\n\n| from | to | RSS at the start | RSS at the end | change |\n|---|---|---|---|---|\n';
{
  const marks = [{ t: 0, label: 'all connections open' }, ...events.map((e) => ({ t: e.t, label: `${e.label} (${e.t.toFixed(0)} s)` })), { t: endRow.t, label: 'end' }];
  for (let i = 0; i + 1 < marks.length; i++) {
    const a = rssAt(Math.max(0, marks[i].t - 1)), b = rssAt(marks[i + 1].t - 1);
    md += `| ${marks[i].label} | ${marks[i + 1].label === 'end' ? `end (${endRow.t.toFixed(0)} s)` : marks[i + 1].label} | ${mib(a.rss)} MiB | ${mib(b.rss)} MiB | ${b.rss >= a.rss ? '+' : ''}${((b.rss - a.rss) / 1024).toFixed(1)} MiB |\n`;
  }
}

md += '\n## Per backend\n\n';
md += 'A tunnel is *cut on purpose* when its backend was killed (closed within 15 s of the kill) or removed from `ws_pool` by a reload (closed between the reload and 15 s after `grace` ended). Every other tunnel\'s backend stayed: its loss must be zero. *lost* is messages sent minus echoes received when the tunnel closed (after up to 5 s of waiting at the end).\n\n';
md += '| backend | tunnels (first / reconnected) | sent | echoed | lost, backend stayed | tunnels cut: by kill / by drain | lost on cut tunnels | cut, seconds after the event | unexpected closes |\n|---|---|---|---|---|---|---|---|---|\n';
for (const b of backends) {
  const a = per[b];
  md += `| ${b} | ${n(a.sessions)} (${n(a.initial)} / ${n(a.sessions - a.initial)}) | ${n(a.sent)} | ${n(a.echoed)} | ${n(a.lostOther)} | ${n(a.cutKill.length)} / ${n(a.cutDrain.length)} | ${n(a.lostCut)} | ${[a.cutKill.length ? `kill ${range(a.cutKill)}` : '', a.cutDrain.length ? `drain ${range(a.cutDrain)}` : ''].filter(Boolean).join('; ') || '—'} | ${n(a.unexpected)} |\n`;
}
md += `| **all** | ${n(total.sessions)} (${n(total.initial)} / ${n(total.sessions - total.initial)}) | ${n(total.sent)} | ${n(total.echoed)} | **${n(total.lostOther)}** | ${n(total.cutKill.length)} / ${n(total.cutDrain.length)} | ${n(total.lostCut)} | | **${n(total.unexpected)}** |\n`;
md += `\nLargest echo delay: ${total.rttMax.toFixed(0)} ms. Reconnection attempts that failed: ${n(summary.connect_failures - (ready.failed || 0))}.\n`;
if (total.unexpected) {
  const reasons = {};
  for (const s of total.unexpectedList) reasons[`${s.backend}: ${s.end}`] = (reasons[`${s.backend}: ${s.end}`] || 0) + 1;
  const ts = total.unexpectedList.map((s) => rel(s.closed_ms));
  md += `\nUnexpected closes (${n(total.unexpected)}, between ${Math.min(...ts).toFixed(1)} and ${Math.max(...ts).toFixed(1)} s): ` +
    Object.entries(reasons).sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${v}× ${k}`).join('; ') + '.\n';
}

md += '\n## HTTP loop\n\n';
md += `${n(http.sent)} GETs through latch's TLS listener to \`http_pool\` (retry on \`error\` and \`timeout\`): ` +
  `statuses ${Object.entries(http.statuses || {}).map(([k, v]) => `${k}: ${n(v)}`).join(', ') || 'none'}; ` +
  `answered by ${Object.entries(http.by_backend || {}).map(([k, v]) => `${k}: ${n(v)}`).join(', ') || 'nobody'}; ` +
  `transport errors: ${n(http.errors)}.\n`;
if (http.stale_retried) {
  md += `\n${n(http.stale_retried)} request(s) found their kept-alive connection already closed by latch, with no byte of an answer, and were sent again once on a new connection, as HTTP clients do (not counted as failures). latch closes a client connection that stays idle for \`header_timeout\` (30 s): the client's pool keeps a few spare connections that sit idle that long. The error seen: ${(http.stale_errors || []).join('; ')}.\n`;
}
if (failT.length) {
  md += `\nFailures (t in s): ${failT.slice(0, 20).map((f) => `${f.t.toFixed(1)} ${f.what}`).join('; ')}${failT.length > 20 ? `; … ${failT.length - 20} more` : ''}.\n`;
}

md += '\n## Events\n\n| t (s) | event | what changed | load average |\n|---|---|---|---|\n';
for (const e of events) md += `| ${e.t.toFixed(1)} | ${e.label} | ${e.detail} | ${e.load1} |\n`;

const notes = read('notes.md').trim();
if (notes) md += '\n## Notes\n\n' + notes + '\n';
process.stdout.write(md);

// ------------------------------------------------------------ chart
const W = 960, H = 580, L = 70, R = 70, top1 = 66, h1 = 190, top2 = 316, h2 = 190;
const xs = rows.map((r) => r.t);
const x0 = Math.min(...xs, 0), x1 = Math.max(...xs, D);
const X = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
// A step of 1, 2 or 5 × 10^k that cuts 0..m into at most `parts` pieces.
const niceStep = (m, parts) => {
  const p = 10 ** Math.floor(Math.log10((m || 1) / parts));
  return [1, 2, 5, 10].map((k) => k * p).find((st) => Math.ceil((m || 1) / st) <= parts);
};
const niceMax = (m) => { const st = niceStep(m, 6); return Math.ceil((m || 1) / st) * st; };
const rssMax = niceMax(Math.max(...rows.map((r) => r.rss)) / 1024 * 1.1);
// Echoes a second as a centred 5-second mean: on a busy machine a stalled second is
// followed by a burst, and the raw line (in rss.tsv) is mostly that noise.
const rateRows = rate.map((r, i) => {
  const w = rate.slice(Math.max(0, i - 2), i + 3);
  const echoed = w.reduce((a, x) => a + x.echoed, 0) / w.reduce((a, x) => a + x.dt, 0);
  return { t: rel(r.epoch_ms), echoed, open: r.open };
});
const rateMax = niceMax(Math.max(...rateRows.map((r) => Math.max(r.echoed, r.open)), 1) * 1.1);
const Y1 = (v) => top1 + h1 - (v / rssMax) * h1;
const Y2 = (v) => top2 + h2 - (v / rateMax) * h2;
const line = (pts, color, width = 1.5, dash = '') =>
  `<polyline fill="none" stroke="${color}" stroke-width="${width}"${dash ? ` stroke-dasharray="${dash}"` : ''} points="${pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`;
let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">\n`;
svg += `<rect width="${W}" height="${H}" fill="white"/>\n`;
svg += `<text x="${L}" y="20" font-size="15" font-weight="bold">latch soak: ${n(ready.opened)} WSS connections for ${D} s, 5 reloads, one backend killed</text>\n`;
// ramp shading
svg += `<rect x="${X(x0)}" y="${top1}" width="${X(0) - X(x0)}" height="${top2 + h2 - top1}" fill="#f2f2f2"/>\n`;
if (X(0) - X(x0) > 40) svg += `<text x="${(X(x0) + X(0)) / 2}" y="${top1 + 14}" text-anchor="middle" fill="#888">ramp</text>\n`;
for (const [top, h, max, Y, label] of [[top1, h1, rssMax, Y1, 'latch RSS, MiB'], [top2, h2, rateMax, Y2, 'per second']]) {
  svg += `<rect x="${L}" y="${top}" width="${W - L - R}" height="${h}" fill="none" stroke="#999"/>\n`;
  const st = niceStep(max, 6);
  for (let v = 0; v <= max + 1e-9; v += st) {
    const y = Y(v);
    svg += `<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}" stroke="#e4e4e4"/>` +
      `<text x="${L - 6}" y="${y + 4}" text-anchor="end">${v >= 1000 ? n(v) : +v.toFixed(1)}</text>\n`;
  }
  svg += `<text transform="translate(18 ${top + h / 2}) rotate(-90)" text-anchor="middle">${esc(label)}</text>\n`;
}
const step = niceStep(x1 - x0, 12);
for (let t = Math.ceil(x0 / step) * step; t <= x1; t += step) {
  svg += `<line x1="${X(t)}" x2="${X(t)}" y1="${top2 + h2}" y2="${top2 + h2 + 4}" stroke="#999"/><text x="${X(t)}" y="${top2 + h2 + 17}" text-anchor="middle">${t}</text>\n`;
}
svg += `<text x="${(L + W - R) / 2}" y="${top2 + h2 + 34}" text-anchor="middle">seconds after all connections were open</text>\n`;
// events
for (const e of events) {
  const color = e.kind === 'reload' ? '#7a5cc4' : e.kind === 'kill' ? '#d62728' : '#2ca02c';
  const label = e.kind === 'reload' ? e.label : e.label.replace(/^(kill|restart) /, '') + (e.kind === 'kill' ? ' killed' : ' back');
  svg += `<line x1="${X(e.t)}" x2="${X(e.t)}" y1="${e.kind === 'reload' ? top1 - 4 : top1 - 20}" y2="${top2 + h2}" stroke="${color}" stroke-dasharray="4 3"/>` +
    `<text x="${X(e.t)}" y="${e.kind === 'reload' ? top1 - 8 : top1 - 24}" text-anchor="middle" fill="${color}">${esc(label)}</text>\n`;
}
// Where a reload's drain ended: the removed server's tunnels are closed after `grace`.
for (const e of events.filter((e) => e.kind === 'reload' && e.cuts && e.cuts !== '-')) {
  const t = e.t + GRACE_MS / 1000;
  svg += `<line x1="${X(t)}" x2="${X(t)}" y1="${top1 - 20}" y2="${top2 + h2}" stroke="#e377c2" stroke-dasharray="2 3"/>` +
    `<text x="${X(t) + 3}" y="${top1 - 24}" fill="#e377c2">${esc(e.cuts)} cut (grace)</text>\n`;
}
svg += line(rows.map((r) => [X(r.t), Y1(r.rss / 1024)]), '#1f77b4', 2) + '\n';
svg += line(rateRows.map((r) => [X(r.t), Y2(r.open)]), '#999', 1.5, '5 3') + '\n';
svg += line(rateRows.map((r) => [X(r.t), Y2(r.echoed)]), '#2ca02c', 1.2) + '\n';
for (const f of failT) svg += `<line x1="${X(f.t)}" x2="${X(f.t)}" y1="${top2 + h2 - 12}" y2="${top2 + h2}" stroke="#d62728" stroke-width="2"/>\n`;
for (const s of total.unexpectedList.slice(0, 500)) svg += `<circle cx="${X(rel(s.closed_ms))}" cy="${top2 + 6}" r="2.5" fill="#ff7f0e"/>\n`;
// legend
const lg0 = [['#1f77b4', 'latch RSS (top)', ''], ['#2ca02c', 'echoes received / s (5 s mean)', ''], ['#999', 'open connections', '5 3'],
  ['#d62728', `HTTP failures (${n(failT.length)})`, ''], ['#ff7f0e', `unexpected tunnel closes (${n(total.unexpected)})`, '']];
const lg = lg0;
let lx = L;
lg.forEach(([c, t, d]) => {
  const x = lx, y = H - 14;
  lx += 40 + t.length * 6.3;
  svg += `<line x1="${x}" x2="${x + 22}" y1="${y - 4}" y2="${y - 4}" stroke="${c}" stroke-width="2"${d ? ` stroke-dasharray="${d}"` : ''}/><text x="${x + 27}" y="${y}">${esc(t)}</text>\n`;
});
svg += '</svg>\n';
fs.writeFileSync(path.join(out, 'chart.svg'), svg);
