#!/usr/bin/env node
// Headless Chromium with ALL cookies blocked runs real socket.io clients
// (the server's own /socket.io/socket.io.min.js) through latch: polling,
// then the WebSocket upgrade. With several latch instances a local TCP
// forwarder sends each connection the browser opens to a random one.
//
//   node socketio_no_cookies.js '{"urls": [...], "clients": 6, "echoes": 6}'
//
// Prints one JSON line (what socketio_page.js's runClients gives: protocol,
// cookieEnabled, cookies, clients, totals) and exits 0, or
// prints the error and exits 1. Cookies are blocked by the profile's content
// setting (what "Block all cookies" in the settings writes), so no
// Set-Cookie is stored or sent (headless Chromium still reports
// `navigator.cookieEnabled` true; the cookie-mode control shows the block).
// Uses /usr/bin/chromium (or $CHROMIUM) through playwright-core.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");
const { runClients } = require("./socketio_page");
const { startForwarder } = require("../socketio/forwarder");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;

async function main() {
  const config = JSON.parse(process.argv[2] || "{}");
  const urls = (config.urls || []).map((u) => new URL(u));
  if (urls.length === 0) {
    console.error("socketio_no_cookies.js: config.urls is empty");
    return 2;
  }
  const forwarder = await startForwarder(urls.map((u) => ({ host: u.hostname, port: Number(u.port) })));
  const base = `http://127.0.0.1:${forwarder.address().port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "latch-chromium-"));
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
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      timeout: WAIT_MS,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => console.error(`[console] ${m.text()}`));
    // socket.io serves its client script; opening it makes the page
    // same-origin with latch, so no CORS is involved.
    const script = `${base}/socket.io/socket.io.min.js`;
    await page.goto(script, { timeout: WAIT_MS });
    await page.addScriptTag({ url: script });
    const got = await runClients(page, {
      clients: config.clients ?? 6,
      echoes: config.echoes ?? 6,
      // One after the other: HTTP/1.1 allows Chromium 6 connections per host.
      together: false,
    });
    console.log(JSON.stringify(got));
    return 0;
  } finally {
    if (context) await context.close().catch(() => {});
    forwarder.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`socketio_no_cookies.js: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
