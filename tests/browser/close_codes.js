#!/usr/bin/env node
// Headless Chromium opens two WebSockets through latch and reports how each
// one was closed, as the page's `close` event sees it:
//   <base>/chat  echoes once, then idles until latch's tunnel_idle: 1001
//   <base>/die   echoes once, then its backend drops the connection: 1011
//
//   node close_codes.js <ws-base-url>
//
// Prints one JSON line {"chat": {code, reason, wasClean}, "die": {...}} and
// exits 0, or prints the error and exits 1. Uses /usr/bin/chromium (or
// $CHROMIUM) through playwright-core, which never downloads a browser.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 20000;

async function main() {
  const [base] = process.argv.slice(2);
  if (!base) {
    console.error("usage: node close_codes.js <ws-base-url>");
    return 2;
  }
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "latch-chromium-"));
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        // about:blank counts as a public page, which may not reach loopback.
        "--disable-features=LocalNetworkAccessChecks"],
      timeout: WAIT_MS,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => console.error(`[console] ${m.text()}`));
    page.on("websocket", (ws) => {
      console.error(`[websocket] ${ws.url()}`);
      ws.on("framesent", (f) => console.error(`[sent] ${ws.url()} ${JSON.stringify(f.payload)}`));
      ws.on("framereceived", (f) => console.error(`[received] ${ws.url()} ${JSON.stringify(f.payload)}`));
      ws.on("socketerror", (e) => console.error(`[socketerror] ${ws.url()} ${e}`));
    });
    await page.goto("about:blank");
    const got = await page.evaluate(
      ({ base, waitMs }) => {
        const one = (url) =>
          new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            const timer = setTimeout(() => reject(new Error(`${url}: no close within ${waitMs} ms`)), waitMs);
            ws.onopen = () => ws.send("hello");
            ws.onclose = (e) => {
              clearTimeout(timer);
              resolve({ code: e.code, reason: e.reason, wasClean: e.wasClean });
            };
          });
        return Promise.all([one(`${base}/chat`), one(`${base}/die`)]).then(([chat, die]) => ({ chat, die }));
      },
      { base, waitMs: WAIT_MS },
    );
    console.log(JSON.stringify(got));
    return 0;
  } catch (e) {
    console.error(`error: ${e && e.stack ? e.stack : e}`);
    return 1;
  } finally {
    if (context) await context.close().catch(() => {});
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
