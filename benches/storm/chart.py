#!/usr/bin/env python3
"""Draws the reconnect-storm accept curve as an SVG (no dependencies).

Input: the CSV tests/upgrade_storm.rs writes (target/storm/accepts.csv):
`ms,restarted,other` = WebSockets accepted per 100 ms window by the restarted
backend and by the other one, from the moment of the restart.

    cargo test --test upgrade_storm
    python3 benches/storm/chart.py target/storm/accepts.csv benches/storm/accepts.svg 250
"""
import csv
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rate = int(sys.argv[3]) if len(sys.argv) > 3 else 250
    rows = [(int(r["ms"]), int(r["restarted"]), int(r["other"]))
            for r in csv.DictReader(open(src))]
    if not rows:
        sys.exit("no rows in " + src)
    cap = rate / 10  # the cap's share of one 100 ms window
    burst = rate / 10
    w, h, left, right, top, bottom = 760, 320, 56, 16, 28, 44
    xmax = rows[-1][0] + 100
    ymax = max(max(r[1] for r in rows), max(r[2] for r in rows), cap + burst) * 1.2
    def x(ms):
        return left + (w - left - right) * ms / xmax
    def y(v):
        return top + (h - top - bottom) * (1 - v / ymax)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="16">WebSockets accepted per 100 ms after a backend restart '
           f'(max_upgrades_per_sec = {rate})</text>']
    # Axes and grid.
    for i in range(6):
        v = ymax * i / 5
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.0f}</text>')
    step = 1000 if xmax <= 20000 else 5000
    for ms in range(0, xmax + 1, step):
        out.append(f'<text x="{x(ms):.1f}" y="{h - bottom + 16}" text-anchor="middle">{ms // 1000}s</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{h - bottom}" stroke="#444"/>')
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{h - bottom}" y2="{h - bottom}" stroke="#444"/>')
    # The cap: rate/10 per window once the burst is spent.
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(cap):.1f}" y2="{y(cap):.1f}" '
               f'stroke="#c00" stroke-dasharray="6,4"/>')
    out.append(f'<text x="{w - right}" y="{y(cap) - 4:.1f}" text-anchor="end" fill="#c00">'
               f'cap: {cap:.0f} per 100 ms</text>')
    # The most one window can hold: a full bucket (burst) plus the window's rate.
    out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(cap + burst):.1f}" y2="{y(cap + burst):.1f}" '
               f'stroke="#e80" stroke-dasharray="2,3"/>')
    out.append(f'<text x="{w - right}" y="{y(cap + burst) - 4:.1f}" text-anchor="end" fill="#e80">'
               f'burst {burst:.0f} + {cap:.0f}: the most in any 100 ms</text>')
    for col, colour, name in ((1, "#1f77b4", "restarted backend"), (2, "#999", "other backend")):
        pts = " ".join(f"{x(ms):.1f},{y(r[col]):.1f}" for r in rows for ms in (r[0], r[0] + 100))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    out.append(f'<text x="{left + 10}" y="{h - 8}" fill="#1f77b4">— restarted backend</text>')
    out.append(f'<text x="{left + 170}" y="{h - 8}" fill="#999">— other backend</text>')
    out.append(f'<text x="{w - right}" y="{h - 8}" text-anchor="end">time since the restart</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
