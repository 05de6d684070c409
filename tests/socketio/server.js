// A real socket.io v4 server for tests/socketio.rs.
//
//   node server.js <port> <name> [deflate]
//
// Listens on 127.0.0.1:<port> (0 = any free port) and prints `ready <port>`
// once listening. On `connection` it emits `hello` with its name; on `echo`
// it answers `{ backend: name, payload }` through the ack (or an `echo` event
// when no ack was asked for). Every engine.io connection error (e.g. HTTP 400
// `Session ID unknown`) is printed as one JSON line, so the test can count
// them server side too. Exits when stdin closes (the test process is gone).
// With `deflate`, WebSockets offer permessage-deflate (ws compresses
// messages of 1024 bytes and more, its default threshold) and each new
// connection prints `{"event":"ws","extensions":...}` with what its
// WebSocket negotiated.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 0);
const name = process.argv[3] || "server";
const deflate = process.argv[4] === "deflate";

const httpServer = http.createServer();
const io = new Server(httpServer, {
  // no CORS needed: the clients are node processes
  pingInterval: 10000,
  pingTimeout: 20000,
  perMessageDeflate: deflate ? { threshold: 1024 } : false,
});

io.on("connection", (socket) => {
  const ws = socket.conn.transport.socket;
  if (deflate && socket.conn.transport.name === "websocket" && ws) {
    process.stdout.write(JSON.stringify({ event: "ws", extensions: ws.extensions }) + "\n");
  }
  socket.emit("hello", name);
  socket.on("echo", (payload, ack) => {
    const answer = { backend: name, payload };
    if (typeof ack === "function") {
      ack(answer);
    } else {
      socket.emit("echo", answer);
    }
  });
});

io.engine.on("connection_error", (err) => {
  process.stdout.write(
    JSON.stringify({
      event: "connection_error",
      code: err.code,
      message: err.message,
    }) + "\n",
  );
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`ready ${httpServer.address().port}\n`);
});

// The test keeps our stdin open; when it goes away, so do we.
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
