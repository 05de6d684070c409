// One local address for several latch instances, like DNS round robin in
// front of them: each accepted TCP connection goes to a random instance.
// Shared by client.js and ws_only.js.
"use strict";

const net = require("net");

// Resolves to the listening server; `targets` is [{ host, port }].
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

module.exports = { startForwarder };
