// socket.io-client with `transports: ["websocket"]` (no polling first, no
// cookie jar), for tests/session_id.rs: the Engine.IO session opens on the
// WebSocket, and its open packet (the server's first frame) names the sid.
//
//   node ws_only.js '<config json>'
//
// Config keys:
//   urls        latch base URLs; with several, every TCP connection goes to
//               a random one (forwarder.js), like DNS round robin
//   clients     number of clients (default 100)
//   sequential  true: one client after the other (default: all at once)
//   timeoutMs   overall deadline (default 40000)
//
// Each client connects, reads its sid (`socket.io.engine.id`, as the client
// got it in the open packet), echoes once over the WebSocket, and then sends
// one Engine.IO polling request with that sid through the forwarder, as a
// client resuming its session by polling would:
//   GET /socket.io/?EIO=4&transport=polling&sid=SID
// The server that holds the session answers `400 {"code":3,"message":"Bad
// request"}` (the session is on the WebSocket transport: a transport
// mismatch); any other server answers `400 {"code":1,"message":"Session ID
// unknown"}`. So code 3 proves the request reached the session's server.
//
// Prints ONE JSON line: { clients: [{ hello, echo, sid, follow: { status,
// code, body }, errors, details }], totals: { clients, errors, known,
// sessionUnknown, deadline } }.
"use strict";

const http = require("http");
const { io } = require("socket.io-client");
const { startForwarder } = require("./forwarder");

const config = JSON.parse(process.argv[2] || "{}");
const urls = config.urls || [];
const nClients = config.clients ?? 100;
const sequential = config.sequential ?? false;
const timeoutMs = config.timeoutMs ?? 40000;

if (urls.length === 0) {
  console.error("ws_only.js: config.urls is empty");
  process.exit(2);
}

// No keep-alive: the polling request is a new TCP connection.
const agent = new http.Agent({ keepAlive: false });

function get(url) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, timeout: 10000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error("follow-up request timed out")));
    req.on("error", reject);
  });
}

function runClient(base, index) {
  return new Promise((resolve) => {
    const r = { hello: null, echo: null, sid: null, follow: null, errors: 0, details: [] };
    const fail = (what, err) => {
      r.errors += 1;
      if (r.details.length < 3) r.details.push(`${what}: ${err && err.message ? err.message : err}`);
    };
    const socket = io(base, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      withCredentials: false, // no cookie jar
      timeout: 20000,
    });
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      socket.disconnect();
      resolve(r);
    };
    socket.on("hello", (name) => {
      r.hello = name;
    });
    socket.on("connect_error", (err) => {
      fail("connect_error", err);
      finish();
    });
    socket.on("disconnect", (reason) => {
      if (!finished && reason !== "io client disconnect") fail(`disconnect ${reason}`);
      finish();
    });
    socket.on("connect", async () => {
      r.sid = socket.io.engine.id;
      try {
        const answer = await socket.timeout(10000).emitWithAck("echo", { client: index });
        r.echo = answer.backend;
        const url = `${base}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(r.sid)}`;
        const res = await get(url);
        let code = null;
        try {
          code = JSON.parse(res.body).code ?? null;
        } catch (_) {
          code = null;
        }
        r.follow = { status: res.status, code, body: res.body.slice(0, 120) };
      } catch (err) {
        fail("after connect", err);
      }
      finish();
    });
  });
}

async function main() {
  let base = urls[0];
  let forwarder = null;
  if (urls.length > 1) {
    const targets = urls.map((u) => new URL(u)).map((u) => ({ host: u.hostname, port: Number(u.port) }));
    forwarder = await startForwarder(targets);
    const u = new URL(urls[0]);
    u.port = String(forwarder.address().port);
    base = u.toString().replace(/\/$/, "");
  }
  const results = [];
  const run = sequential
    ? (async () => {
        for (let i = 0; i < nClients; i++) results[i] = await runClient(base, i);
      })()
    : Promise.all(Array.from({ length: nClients }, (_, i) => runClient(base, i).then((r) => (results[i] = r))));
  const deadline = new Promise((resolve) => setTimeout(() => resolve("deadline"), timeoutMs));
  const outcome = await Promise.race([run.then(() => "done"), deadline]);
  for (let i = 0; i < nClients; i++) {
    if (!results[i]) results[i] = { hello: null, echo: null, sid: null, follow: null, errors: 1, details: ["unfinished"] };
  }
  const totals = {
    clients: nClients,
    errors: results.reduce((n, r) => n + r.errors, 0),
    known: results.filter((r) => r.follow && r.follow.code === 3).length,
    sessionUnknown: results.filter((r) => r.follow && r.follow.code === 1).length,
    deadline: outcome === "deadline",
  };
  process.stdout.write(JSON.stringify({ clients: results, totals }) + "\n", () => {
    if (forwarder) forwarder.close();
    process.exit(0);
  });
}

main().catch((err) => {
  console.error("ws_only.js failed:", err);
  process.exit(1);
});
