#!/usr/bin/env node
// Headless Chromium with ALL cookies blocked runs real socket.io clients
// (the server's own /socket.io/socket.io.min.js) through latch: polling,
// then the WebSocket upgrade. With several latch instances a local TCP
// forwarder sends each connection the browser opens to a random one.
//
//   node socketio_no_cookies.js '{"urls": [...], "clients": 6, "echoes": 6}'
//
// Prints one JSON line {cookieEnabled, clients: [{hello, backends, errors,
// upgraded, details}], totals: {echoes, errors, upgraded}} and exits 0, or
// prints the error and exits 1. Cookies are blocked by the profile's content
// setting (what "Block all cookies" in the settings writes), so no
// Set-Cookie is stored or sent (headless Chromium still reports
// `navigator.cookieEnabled` true; the cookie-mode control shows the block).
// Uses /usr/bin/chromium (or $CHROMIUM) through playwright-core.
"use strict";

const fs = require("fs");
const net = require("net");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 30000;

function startForwarder(targets) {
  return new Promise((resolve, reject) => {
    const server = net.createServer((down) => {
      const t = targets[Math.floor(Math.random() * targets.length)];
      const up = net.connect(t.port, t.host);
      down.on("error", () => up.destroy());
      up.on("error", () => down.destroy());
      down.pipe(up);
      up.pipe(down);
    });
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

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
    const got = await page.evaluate(
      async ({ clients, echoes, waitMs }) => {
        const one = (index) =>
          new Promise((resolve) => {
            const r = { hello: null, backends: [], errors: 0, upgraded: false, details: [] };
            const socket = io({ forceNew: true, reconnection: false, timeout: waitMs });
            const timer = setTimeout(() => finish("deadline"), waitMs);
            let done = false;
            function finish(err) {
              if (done) return;
              done = true;
              clearTimeout(timer);
              if (err) {
                r.errors += 1;
                r.details.push(String(err));
              }
              r.upgraded = !!(socket.io.engine && socket.io.engine.transport.name === "websocket");
              socket.disconnect();
              resolve(r);
            }
            socket.on("hello", (name) => { r.hello = name; });
            socket.on("connect_error", (e) => finish(`connect_error: ${e.message} ${e.description || ""}`));
            socket.on("disconnect", (reason) => {
              if (reason !== "io client disconnect") finish(`disconnect: ${reason}`);
            });
            socket.on("connect", async () => {
              try {
                for (let i = 0; i < echoes; i++) {
                  if (i === Math.floor(echoes / 2)) {
                    const t0 = Date.now();
                    while (socket.io.engine.transport.name !== "websocket" && Date.now() - t0 < 3000) {
                      await new Promise((ok) => setTimeout(ok, 20));
                    }
                  }
                  const a = await socket.timeout(10000).emitWithAck("echo", { client: index, i });
                  r.backends.push(a.backend);
                }
                finish(null);
              } catch (e) {
                finish(`echo: ${e}`);
              }
            });
          });
        const out = [];
        // One after the other: HTTP/1.1 allows Chromium 6 connections per host.
        for (let i = 0; i < clients; i++) out.push(await one(i));
        return { cookieEnabled: navigator.cookieEnabled, cookies: document.cookie, clients: out };
      },
      { clients: config.clients ?? 6, echoes: config.echoes ?? 6, waitMs: 20000 },
    );
    got.totals = {
      echoes: got.clients.reduce((n, c) => n + c.backends.length, 0),
      errors: got.clients.reduce((n, c) => n + c.errors, 0),
      upgraded: got.clients.filter((c) => c.upgraded).length,
    };
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
