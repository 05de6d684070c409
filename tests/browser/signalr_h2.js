#!/usr/bin/env node
// Headless Chromium runs the real @microsoft/signalr browser client (its
// dist/browser bundle from tests/signalr/node_modules) through latch over
// HTTPS, where latch speaks HTTP/2: each transport in turn (WebSockets over
// an HTTP/2 stream, ServerSentEvents, LongPolling), several connections at
// once, each echoing through the hub.
//
//   node signalr_h2.js '{"url": "https://localhost:PORT", "bundle": PATH, "clients": 6, "echoes": 5}'
//
// Prints one JSON line {protocol, transports: {NAME: {clients: [{backends,
// errors, details}], totals: {echoes, errors}}}} and exits 0, or prints the
// error and exits 1. Uses /usr/bin/chromium (or $CHROMIUM) through
// playwright-core.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;

async function main() {
  const config = JSON.parse(process.argv[2] || "{}");
  if (!config.url || !config.bundle) {
    console.error("signalr_h2.js: config.url and config.bundle are required");
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
    // Any page of latch's origin (the hub's 404 will do), so the client's
    // requests are same-origin.
    await page.goto(`${config.url}/hub/page`, { timeout: WAIT_MS });
    await page.addScriptTag({ path: config.bundle });
    const got = await page.evaluate(
      async ({ clients, echoes, waitMs }) => {
        const one = async (transport, i) => {
          const out = { backends: [], errors: 0, details: [] };
          const fail = (where, e) => {
            out.errors += 1;
            if (out.details.length < 3) out.details.push(`${where}: ${e && e.message ? e.message : e}`);
          };
          const conn = new signalR.HubConnectionBuilder()
            .withUrl("/hub", { transport: signalR.HttpTransportType[transport] })
            .configureLogging(signalR.LogLevel.None)
            .build();
          try {
            await conn.start();
          } catch (e) {
            fail("start", e);
            return out;
          }
          for (let k = 0; k < echoes; k++) {
            try {
              const r = await conn.invoke("Echo", `c${i}-m${k}`);
              if (!r || r.payload !== `c${i}-m${k}`) fail("echo", new Error(JSON.stringify(r)));
              else out.backends.push(r.backend);
            } catch (e) {
              fail(`echo ${k}`, e);
              break;
            }
          }
          try {
            await conn.stop();
          } catch (e) {
            fail("stop", e);
          }
          return out;
        };
        const transports = {};
        for (const t of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
          const deadline = new Promise((_, no) => setTimeout(() => no(new Error(`${t}: deadline`)), waitMs));
          const all = Promise.all([...Array(clients).keys()].map((i) => one(t, i)));
          const list = await Promise.race([all, deadline]);
          transports[t] = {
            clients: list,
            totals: {
              echoes: list.reduce((n, c) => n + c.backends.length, 0),
              errors: list.reduce((n, c) => n + c.errors, 0),
            },
          };
        }
        const nav = performance.getEntriesByType("navigation")[0];
        return { protocol: nav ? nav.nextHopProtocol : null, transports };
      },
      { clients: config.clients ?? 6, echoes: config.echoes ?? 5, waitMs: 20000 },
    );
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
    console.error(`signalr_h2.js: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
