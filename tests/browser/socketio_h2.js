#!/usr/bin/env node
// Headless Chromium runs real socket.io clients (the server's own
// /socket.io/socket.io.min.js) through latch over HTTPS, where latch speaks
// HTTP/2: every client's long polls and its WebSocket ride streams of the
// one connection (RFC 8441 for the WebSocket). The clients run at once,
// which HTTP/1.1's six connections per host would not allow.
//
//   node socketio_h2.js '{"url": "https://localhost:PORT", "clients": 8, "echoes": 6}'
//
// Prints one JSON line (what socketio_page.js's runClients gives: protocol,
// cookieEnabled, cookies, clients, totals) and exits 0, or
// prints the error and exits 1. Uses /usr/bin/chromium (or $CHROMIUM)
// through playwright-core.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");
const { runClients } = require("./socketio_page");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;

async function main() {
  const config = JSON.parse(process.argv[2] || "{}");
  if (!config.url) {
    console.error("socketio_h2.js: config.url is missing");
    return 2;
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "latch-chromium-"));
  // All cookies blocked (as in socketio_no_cookies.js): with one browser
  // cookie every connection would share one pin; with none, session_id
  // stickiness pins each connection on its own, and they spread.
  fs.mkdirSync(path.join(profile, "Default"));
  fs.writeFileSync(
    path.join(profile, "Default", "Preferences"),
    JSON.stringify({ profile: { default_content_setting_values: { cookies: 2 } } }),
  );
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      ignoreHTTPSErrors: true,
      timeout: WAIT_MS,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => console.error(`[console] ${m.text()}`));
    // socket.io serves its client script; opening it makes the page
    // same-origin with latch, so no CORS is involved.
    const script = `${config.url}/socket.io/socket.io.min.js`;
    await page.goto(script, { timeout: WAIT_MS });
    await page.addScriptTag({ url: script });
    const got = await runClients(page, {
      clients: config.clients ?? 8,
      echoes: config.echoes ?? 6,
      // All at once: one HTTP/2 connection carries them.
      together: true,
    });
    console.log(JSON.stringify(got));
    return 0;
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`socketio_h2.js: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
