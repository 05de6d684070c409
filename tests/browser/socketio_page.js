// Real socket.io clients inside a Chromium page (the page must have loaded
// the server's /socket.io/socket.io.min.js): each connects, polls, upgrades
// to a WebSocket halfway through its echoes, and reports which backend
// answered every echo. Shared by socketio_no_cookies.js and socketio_h2.js.
"use strict";

// Runs `clients` clients of `echoes` echoes each in `page`, all at once
// (`together`) or one after the other. Resolves to {protocol, cookieEnabled,
// cookies, clients: [{hello, backends, errors, upgraded, details}], totals:
// {echoes, errors, upgraded}}.
async function runClients(page, { clients, echoes, together, waitMs = 20000 }) {
  const got = await page.evaluate(
    async ({ clients, echoes, together, waitMs }) => {
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
      const indices = [...Array(clients).keys()];
      let out = [];
      if (together) {
        out = await Promise.all(indices.map(one));
      } else {
        for (const i of indices) out.push(await one(i));
      }
      const nav = performance.getEntriesByType("navigation")[0];
      return {
        protocol: nav ? nav.nextHopProtocol : null,
        cookieEnabled: navigator.cookieEnabled,
        cookies: document.cookie,
        clients: out,
      };
    },
    { clients, echoes, together, waitMs },
  );
  got.totals = {
    echoes: got.clients.reduce((n, c) => n + c.backends.length, 0),
    errors: got.clients.reduce((n, c) => n + c.errors, 0),
    upgraded: got.clients.filter((c) => c.upgraded).length,
  };
  return got;
}

module.exports = { runClients };
