// Real socket.io v4 clients for tests/socketio.rs.
//
//   node client.js '<config json>'
//
// Config keys:
//   urls        one or more latch base URLs ("http://127.0.0.1:8080",
//               "https://127.0.0.1:8443"). With several, a local TCP
//               forwarder sends EACH connection (every polling request and
//               every WebSocket, since keep-alive is off) to a random one,
//               like DNS round robin in front of several instances.
//   clients     number of clients (default 200)
//   echoes      echoes per client (default 10)
//   transports  ["polling", "websocket"] (default: polling, then upgrade)
//               or ["polling"]
//   ca          PEM text trusted for https/wss (optional)
//   insecure    true: do not verify the certificate
//   timeoutMs   overall deadline (default 40000)
//   cookies     false: no cookie jar (native and Node.js clients keep no
//               cookies by default); default true
//
// Prints ONE JSON line on stdout:
//   { clients: [{ hello, backends, errors, sessionUnknown, upgraded,
//                 transport, details }], totals: {...} }
// `backends` holds the backend name of every echo answer, in order.
"use strict";

const http = require("http");
const https = require("https");
const { io } = require("socket.io-client");
const { startForwarder } = require("./forwarder");

const config = JSON.parse(process.argv[2] || "{}");
const urls = config.urls || [];
const nClients = config.clients ?? 200;
const nEchoes = config.echoes ?? 10;
const transports = config.transports || ["polling", "websocket"];
const timeoutMs = config.timeoutMs ?? 40000;
const cookies = config.cookies ?? true;
const wantUpgrade = transports.includes("websocket") && transports[0] === "polling";

if (urls.length === 0) {
  console.error("client.js: config.urls is empty");
  process.exit(2);
}

async function main() {
  const parsed = urls.map((u) => new URL(u));
  const secure = parsed[0].protocol === "https:";
  let base = urls[0];
  let forwarder = null;
  if (urls.length > 1) {
    forwarder = await startForwarder(
      parsed.map((u) => ({ host: u.hostname, port: Number(u.port) })),
    );
    const u = new URL(urls[0]);
    u.port = String(forwarder.address().port);
    base = u.toString().replace(/\/$/, "");
  }

  const tlsOpts = {};
  if (secure) {
    if (config.ca) tlsOpts.ca = config.ca;
    tlsOpts.rejectUnauthorized = !config.insecure;
  }
  // No keep-alive: every polling request is a new TCP connection.
  const agent = secure
    ? new https.Agent({ keepAlive: false, ...tlsOpts })
    : new http.Agent({ keepAlive: false });

  const results = [];
  const sockets = [];

  function runClient(index) {
    return new Promise((resolve) => {
      const r = {
        hello: null,
        backends: [],
        errors: 0,
        sessionUnknown: 0,
        upgraded: false,
        transport: null,
        details: [],
      };
      results[index] = r;
      let finished = false;
      const note = (what, err) => {
        r.errors += 1;
        let text = what;
        if (err) {
          const ctx = err.context;
          const status = err.description ?? (ctx && ctx.status);
          let body = "";
          try {
            body = (ctx && typeof ctx.responseText === "string" && ctx.responseText) || "";
          } catch (_) {
            body = "";
          }
          text += `: ${err.message || err}`;
          if (status !== undefined) text += ` status=${status}`;
          if (body) text += ` body=${body.slice(0, 120)}`;
          if (body.includes("Session ID unknown") || status === 400) {
            r.sessionUnknown += 1;
          }
        }
        if (r.details.length < 5) r.details.push(text);
      };

      const socket = io(base, {
        transports,
        upgrade: wantUpgrade,
        forceNew: true, // one Manager (and one engine + cookie jar) per client
        reconnection: false, // an error is final: count it, do not hide it
        withCredentials: cookies, // engine.io-client's node CookieJar (or none)
        agent,
        timeout: 20000,
        ...tlsOpts,
      });
      sockets.push(socket);

      const done = () => {
        if (finished) return;
        finished = true;
        const engine = socket.io.engine;
        r.transport = engine && engine.transport ? engine.transport.name : null;
        r.upgraded = r.transport === "websocket";
        resolve();
      };

      socket.on("hello", (name) => {
        r.hello = name;
      });
      socket.on("connect_error", (err) => {
        note("connect_error", err);
        done();
      });
      socket.on("disconnect", (reason, details) => {
        if (reason !== "io client disconnect") {
          note(`disconnect ${reason}`, details);
        }
        done();
      });
      socket.io.on("open", () => {
        const engine = socket.io.engine;
        engine.on("upgradeError", (err) => note("upgradeError", err));
      });

      const echo = async (i) => {
        const answer = await socket.timeout(10000).emitWithAck("echo", { client: index, i });
        r.backends.push(answer.backend);
      };

      socket.on("connect", async () => {
        try {
          const half = Math.floor(nEchoes / 2);
          for (let i = 0; i < half; i++) await echo(i);
          if (wantUpgrade) {
            // bounded wait for the upgrade, so the rest goes over the WebSocket
            const engine = socket.io.engine;
            const t0 = Date.now();
            while (engine.transport.name !== "websocket" && Date.now() - t0 < 3000) {
              await new Promise((ok) => setTimeout(ok, 20));
            }
          }
          for (let i = half; i < nEchoes; i++) await echo(i);
        } catch (err) {
          note("echo", err);
        }
        if (!finished) {
          const engine = socket.io.engine;
          r.transport = engine && engine.transport ? engine.transport.name : null;
          r.upgraded = r.transport === "websocket";
          finished = true;
          resolve();
        }
      });
    });
  }

  const deadline = new Promise((resolve) => setTimeout(() => resolve("deadline"), timeoutMs));
  const all = Promise.all(Array.from({ length: nClients }, (_, i) => runClient(i)));
  const outcome = await Promise.race([all.then(() => "done"), deadline]);

  for (let i = 0; i < nClients; i++) {
    if (!results[i]) results[i] = { hello: null, backends: [], errors: 1, sessionUnknown: 0, upgraded: false, transport: null, details: ["never started"] };
  }
  if (outcome === "deadline") {
    for (const r of results) {
      if (r.backends.length < nEchoes && r.errors === 0) {
        r.errors += 1;
        r.details.push("unfinished at deadline");
      }
    }
  }
  for (const s of sockets) s.disconnect();

  const totals = {
    clients: nClients,
    echoes: results.reduce((n, r) => n + r.backends.length, 0),
    errors: results.reduce((n, r) => n + r.errors, 0),
    sessionUnknown: results.reduce((n, r) => n + r.sessionUnknown, 0),
    upgraded: results.filter((r) => r.upgraded).length,
    deadline: outcome === "deadline",
  };
  process.stdout.write(JSON.stringify({ clients: results, totals }) + "\n", () => {
    if (forwarder) forwarder.close();
    process.exit(0);
  });
}

main().catch((err) => {
  console.error("client.js failed:", err);
  process.exit(1);
});
