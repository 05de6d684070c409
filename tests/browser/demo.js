#!/usr/bin/env node
// Opens the `latch demo` page in headless Chromium and waits for its two
// checks (WebSocket echo, long-poll exchange) to pass.
//
//   node demo.js <https-url> <screenshot-path>
//
// Uses the system Chromium at /usr/bin/chromium (or $CHROMIUM) through
// playwright-core, which never downloads a browser. On success prints one JSON
// line {"backend": ..., "ws": ..., "poll": ..., "protocol": ...} and exits 0; on failure prints
// the statuses and the page's console messages and exits 1.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 20000;

async function main() {
  const [url, shot] = process.argv.slice(2);
  if (!url || !shot) {
    console.error("usage: node demo.js <https-url> <screenshot-path>");
    return 2;
  }
  if (!fs.existsSync(CHROMIUM)) {
    console.error(`no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);
    return 1;
  }

  // A fresh profile for this run; Playwright wants it as the persistent
  // context's directory rather than as a --user-data-dir argument.
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "latch-chromium-"));
  const consoleLines = [];
  let context = null;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
      ignoreHTTPSErrors: true,
      viewport: { width: 1000, height: 800 },
      timeout: WAIT_MS,
    });
    const page = context.pages()[0] || (await context.newPage());
    page.on("console", (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => consoleLines.push(`[pageerror] ${e.message}`));
    page.on("requestfailed", (r) =>
      consoleLines.push(`[requestfailed] ${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
    );

    const texts = async () => ({
      backend: (await page.textContent("#backend").catch(() => null)) ?? null,
      ws: (await page.textContent("#ws-status").catch(() => null)) ?? null,
      poll: (await page.textContent("#poll-status").catch(() => null)) ?? null,
      // The protocol the page itself came over ("h2" or "http/1.1").
      protocol:
        (await page
          .evaluate(() => performance.getEntriesByType("navigation")[0]?.nextHopProtocol)
          .catch(() => null)) ?? null,
    });

    let ok = false;
    let error = null;
    try {
      await page.goto(url, { waitUntil: "load", timeout: WAIT_MS });
      // Wait until both checks have settled: passed, or failed with "error: …".
      await page.waitForFunction(
        () => {
          const settled = (id, good) => {
            const t = document.getElementById(id)?.textContent ?? "";
            return t === good || t.startsWith("error");
          };
          return settled("ws-status", "echo ok") && settled("poll-status", "exchange ok");
        },
        null,
        { timeout: WAIT_MS, polling: 100 },
      );
      const t = await texts();
      ok = t.ws === "echo ok" && t.poll === "exchange ok";
    } catch (e) {
      error = String(e && e.message ? e.message : e);
    }

    const t = await texts();
    try {
      await page.screenshot({ path: shot, fullPage: true, timeout: WAIT_MS });
    } catch (e) {
      consoleLines.push(`[screenshot] ${e.message}`);
      ok = false;
    }
    if (ok) {
      console.log(JSON.stringify(t));
      return 0;
    }
    console.log(JSON.stringify(t));
    if (error) console.error(`error: ${error}`);
    console.error(`statuses: backend=${t.backend} ws=${t.ws} poll=${t.poll}`);
    console.error(`console messages (${consoleLines.length}):`);
    for (const l of consoleLines) console.error(`  ${l}`);
    return 1;
  } catch (e) {
    console.error(`error: ${e && e.stack ? e.stack : e}`);
    for (const l of consoleLines) console.error(`  ${l}`);
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
