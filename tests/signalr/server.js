// A small SignalR server for tests/signalr.rs, written for the tests in
// Node.js because ASP.NET Core is not available on these machines. It speaks
// what the real @microsoft/signalr client needs, as ASP.NET Core does:
//
//   POST <hub>/negotiate?negotiateVersion=1
//        -> {connectionId, connectionToken, negotiateVersion: 1, availableTransports}
//   WebSockets        GET <hub>?id=<token> with Upgrade: websocket
//   ServerSentEvents  GET <hub>?id=<token> with Accept: text/event-stream
//                     (data: lines; the client sends with POST <hub>?id=<token>)
//   LongPolling       GET <hub>?id=<token> (the first returns at once, later
//                     ones are held up to POLL_MS), POST to send, DELETE to end
//   the JSON hub protocol: handshake {"protocol":"json","version":1}, answer
//   {}; invocations (type 1) of `Echo` get a completion (type 3) with
//   {backend: <name>, payload}; pings (type 6) every PING_MS; close (type 7).
//
// Connection state lives in this process only: a request whose id this
// process did not hand out gets `404 No Connection with that ID`, as ASP.NET
// Core answers, and one JSON line on stdout ({"event":"unknown_id",...}) so
// the test counts them server side too.
//
//   node server.js <port> <name> [ping-ms] [poll-ms]
//
// Listens on 127.0.0.1:<port> (0 = any free port), prints `ready <port>`.
// Exits when stdin closes (the test process is gone).
"use strict";

const http = require("http");
const crypto = require("crypto");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 0);
const name = process.argv[3] || "server";
const PING_MS = Number(process.argv[4] || 5000);
const POLL_MS = Number(process.argv[5] || 5000);
const HUB = "/hub";
const RS = "\x1e"; // the record separator that ends every hub message

/** token -> connection */
const connections = new Map();

function log(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function newConnection() {
  const c = {
    id: crypto.randomBytes(16).toString("base64url"),
    token: crypto.randomBytes(16).toString("base64url"),
    transport: null,
    handshaken: false,
    outbox: [],
    poll: null, // a held long-poll response
    sse: null, // the event-stream response
    ws: null,
    pinger: null,
    closed: false,
  };
  connections.set(c.token, c);
  return c;
}

function closeConnection(c) {
  if (c.closed) return;
  c.closed = true;
  // Known a while longer, so the client's trailing DELETE or POST after a
  // close message is answered as ASP.NET Core does, not with 404.
  setTimeout(() => connections.delete(c.token), 10000).unref();
  clearInterval(c.pinger);
  if (c.poll) {
    const res = c.poll;
    c.poll = null;
    res.writeHead(204).end();
  }
  if (c.sse) c.sse.end();
  if (c.ws) c.ws.close(1000);
}

/** Sends one hub message (a JSON object) the way the connection's transport does. */
function send(c, msg) {
  if (c.closed) return;
  const text = (typeof msg === "string" ? msg : JSON.stringify(msg)) + RS;
  if (c.transport === "WebSockets" && c.ws) {
    c.ws.send(text);
  } else if (c.transport === "ServerSentEvents" && c.sse) {
    // One event per message; every line of it a `data:` line.
    c.sse.write(text.split("\n").map((l) => `data: ${l}\r\n`).join("") + "\r\n");
  } else {
    c.outbox.push(text);
    flushPoll(c);
  }
}

function flushPoll(c) {
  if (c.poll && c.outbox.length > 0) {
    const res = c.poll;
    c.poll = null;
    const body = c.outbox.join("");
    c.outbox = [];
    res.writeHead(200, { "Content-Type": "application/octet-stream" }).end(body);
  }
}

/** Handles text the client sent (one or more records). */
function receive(c, text) {
  for (const rec of text.split(RS)) {
    if (rec.length === 0) continue;
    let msg;
    try {
      msg = JSON.parse(rec);
    } catch (e) {
      log({ event: "bad_message", message: String(e) });
      closeConnection(c);
      return;
    }
    if (!c.handshaken) {
      c.handshaken = true;
      if (msg.protocol !== "json") {
        send(c, { error: `protocol ${msg.protocol} is not supported` });
        closeConnection(c);
        return;
      }
      send(c, {});
      c.pinger = setInterval(() => send(c, { type: 6 }), PING_MS);
      continue;
    }
    switch (msg.type) {
      case 1: // invocation
        if (msg.target === "Echo") {
          const result = { backend: name, payload: msg.arguments && msg.arguments[0] };
          if (msg.invocationId !== undefined) {
            send(c, { type: 3, invocationId: msg.invocationId, result });
          }
        } else if (msg.invocationId !== undefined) {
          send(c, { type: 3, invocationId: msg.invocationId, error: `Unknown hub method '${msg.target}'` });
        }
        break;
      case 6: // ping
        break;
      case 7: // close
        closeConnection(c);
        break;
      default:
        log({ event: "unexpected_message", type: msg.type });
    }
  }
}

function unknownId(res, method, id) {
  log({ event: "unknown_id", method, id });
  res.writeHead(404, { "Content-Type": "text/plain" }).end("No Connection with that ID");
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (d) => chunks.push(d));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === `${HUB}/negotiate` && req.method === "POST") {
    await readBody(req);
    const c = newConnection();
    const body = {
      connectionId: c.id,
      connectionToken: c.token,
      negotiateVersion: 1,
      availableTransports: [
        { transport: "WebSockets", transferFormats: ["Text", "Binary"] },
        { transport: "ServerSentEvents", transferFormats: ["Text"] },
        { transport: "LongPolling", transferFormats: ["Text", "Binary"] },
      ],
    };
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(body));
    return;
  }
  if (url.pathname === "/health") {
    res.writeHead(200).end("ok");
    return;
  }
  if (url.pathname !== HUB) {
    res.writeHead(404).end("not found");
    return;
  }
  const id = url.searchParams.get("id");
  const c = id && connections.get(id);
  if (!c) {
    await readBody(req).catch(() => {});
    unknownId(res, req.method, id);
    return;
  }
  if (c.closed) {
    await readBody(req).catch(() => {});
    res.writeHead(req.method === "DELETE" ? 202 : req.method === "GET" ? 204 : 200).end();
    return;
  }
  if (req.method === "GET" && (req.headers.accept || "").includes("text/event-stream")) {
    c.transport = "ServerSentEvents";
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    res.flushHeaders();
    c.sse = res;
    req.on("close", () => closeConnection(c));
    for (const m of c.outbox.splice(0)) send(c, m.slice(0, -1));
  } else if (req.method === "GET") {
    if (c.transport === null) {
      // The first poll finishes the connection's start at once.
      c.transport = "LongPolling";
      res.writeHead(200).end();
      return;
    }
    if (c.poll) c.poll.writeHead(200).end(); // a newer poll replaces it
    c.poll = res;
    const timer = setTimeout(() => {
      if (c.poll === res) {
        c.poll = null;
        res.writeHead(200).end();
      }
    }, POLL_MS);
    res.on("close", () => clearTimeout(timer));
    flushPoll(c);
  } else if (req.method === "POST") {
    const text = await readBody(req);
    res.writeHead(200).end();
    receive(c, text);
  } else if (req.method === "DELETE") {
    res.writeHead(202).end();
    closeConnection(c);
  } else {
    res.writeHead(405).end();
  }
});

const wss = new WebSocketServer({ noServer: true });
server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://x");
  const id = url.searchParams.get("id");
  const c = url.pathname === HUB && id && connections.get(id);
  if (!c) {
    log({ event: "unknown_id", method: "WS", id });
    socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 26\r\nConnection: close\r\n\r\nNo Connection with that ID");
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    c.transport = "WebSockets";
    c.ws = ws;
    ws.on("message", (data) => receive(c, data.toString("utf8")));
    ws.on("close", () => closeConnection(c));
    ws.on("error", () => closeConnection(c));
  });
});

server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});

process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
