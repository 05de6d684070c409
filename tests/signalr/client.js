// Real @microsoft/signalr clients for tests/signalr.rs.
//
//   node client.js '<config json>'
//
// Config keys:
//   url        latch's base URL ("http://127.0.0.1:8080"); the hub is <url>/hub
//   transport  "LongPolling", "ServerSentEvents" or "WebSockets": the only
//              transport the client may use (HttpTransportType)
//   clients    number of clients (default 30), run at once
//   sequential true: one client after the other instead (each one's
//              requests then follow each other in latch's round robin)
//   echoes     echoes per client (default 10), one after the other
//   pauseMs    wait this long before the last echo (default 0), to keep a
//              connection quiet across timeouts
//   timeoutMs  overall deadline (default 40000)
//   cookies    false: the client keeps no cookies (like native SignalR
//              clients and devices); default true
//
// In Node.js the client keeps cookies itself: its fetch is wrapped by
// fetch-cookie over a tough-cookie jar, and it passes the jar's cookies to
// the WebSocket and EventSource it opens. So latch's sticky cookie set on the
// negotiate response comes back on every later request of that connection.
//
// Prints ONE JSON line: { clients: [{ backends, errors, notFound, details }],
// totals: { echoes, errors, notFound } }. `backends` holds the backend name
// of every echo answer, in order.
"use strict";

const signalR = require("@microsoft/signalr");

const config = JSON.parse(process.argv[2] || "{}");
const nClients = config.clients ?? 30;
const nEchoes = config.echoes ?? 10;
const pauseMs = config.pauseMs ?? 0;
const timeoutMs = config.timeoutMs ?? 40000;
const cookies = config.cookies ?? true;
const sequential = config.sequential ?? false;
const transport = signalR.HttpTransportType[config.transport];
if (!config.url || transport === undefined) {
  console.error(`client.js: need url and transport (LongPolling, ServerSentEvents, WebSockets): ${process.argv[2]}`);
  process.exit(2);
}

function is404(e) {
  // Over WebSockets the client only says what a 404 to the upgrade means.
  const text = String(e && e.message);
  return (e && e.statusCode === 404) || /404|No Connection with that ID|connection ID is not present/.test(text);
}

// The default HTTP client with its cookie jar taken out: plain fetch, and no
// cookies handed to the WebSocket or EventSource. The jar is a private field
// of FetchHttpClient (@microsoft/signalr 8); the cookie-mode control in
// tests/signalr.rs fails if a cookie still got through.
function noCookieClient() {
  const client = new signalR.DefaultHttpClient(signalR.NullLogger.instance);
  const inner = client._httpClient;
  if (!inner || !("_jar" in inner) || typeof fetch !== "function") {
    throw new Error("cannot disable the SignalR client's cookie jar (client internals changed)");
  }
  inner._jar = undefined;
  inner._fetchType = fetch.bind(globalThis);
  return client;
}

async function runClient(i) {
  const out = { backends: [], errors: 0, notFound: 0, details: [] };
  const fail = (where, e) => {
    out.errors += 1;
    if (is404(e)) out.notFound += 1;
    if (out.details.length < 3) out.details.push(`${where}: ${e && e.message ? e.message : e}`);
  };
  const options = { transport };
  if (!cookies) options.httpClient = noCookieClient();
  const conn = new signalR.HubConnectionBuilder()
    .withUrl(`${config.url}/hub`, options)
    .configureLogging(signalR.LogLevel.None)
    .build();
  let closedWith = null;
  conn.onclose((e) => {
    closedWith = e || null;
  });
  try {
    await conn.start();
  } catch (e) {
    fail("start", e);
    return out;
  }
  for (let k = 0; k < nEchoes; k++) {
    if (k === nEchoes - 1 && pauseMs > 0) {
      await new Promise((r) => setTimeout(r, pauseMs));
    }
    try {
      const r = await conn.invoke("Echo", `c${i}-m${k}`);
      if (!r || r.payload !== `c${i}-m${k}`) {
        fail("echo", new Error(`wrong answer ${JSON.stringify(r)}`));
      } else {
        out.backends.push(r.backend);
      }
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
  if (closedWith) fail("closed", closedWith);
  return out;
}

async function main() {
  const deadline = new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`not done within ${timeoutMs} ms`)), timeoutMs),
  );
  const run = sequential
    ? (async () => {
        const out = [];
        for (let i = 0; i < nClients; i++) out.push(await runClient(i));
        return out;
      })()
    : Promise.all(Array.from({ length: nClients }, (_, i) => runClient(i)));
  const clients = await Promise.race([run, deadline]);
  const totals = { echoes: 0, errors: 0, notFound: 0 };
  for (const c of clients) {
    totals.echoes += c.backends.length;
    totals.errors += c.errors;
    totals.notFound += c.notFound;
  }
  console.log(JSON.stringify({ clients, totals }));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`client.js: ${e && e.stack ? e.stack : e}`);
    process.exit(1);
  },
);
