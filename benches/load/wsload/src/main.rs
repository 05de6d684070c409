//! wsload: the WebSocket side of `benches/load/run.sh`.
//!
//! One binary, three modes, all on a multi-threaded tokio runtime so that the proxy
//! under test, not this tool, is the slow part:
//!
//! ```text
//! wsload echo URL CONNS SECS          ping-pong a 64-byte message on CONNS connections;
//!                                     prints JSON {msgs, msgs_per_s, p99_ms, errors, ...}
//! wsload idle URL N READYFILE         open N connections (100 handshakes in flight at most),
//!                                     write JSON {opened, failed, errors} to READYFILE,
//!                                     then hold them idle until killed
//! wsload echo-server PORT [CERT KEY] [--name NAME]
//!                                     WS (or, with CERT/KEY, WSS) echo backend on 127.0.0.1;
//!                                     with a name, it tags its 101 and its echoes with it
//!                                     (and answers plain HTTP requests with 200 in any case)
//! wsload soak URL CONNS SECS OUTDIR [HTTP_URL RATE]
//!                                     CONNS connections each sending a numbered message a
//!                                     second for SECS, reconnecting when closed, and an
//!                                     optional HTTP GET loop at RATE req/s; files in OUTDIR
//! wsload tcp-server PORT | tcp-bulk ADDR CONNS SECS | tcp-conn ADDR CONNS SECS
//!                                     plain TCP echo backend and loads (see tcp.rs)
//! ```
//!
//! URLs are `ws://` or `wss://`. A `wss://` client does not verify the certificate chain
//! (the bench uses the self-signed `certs/dev.pem`), but it still checks the handshake
//! signatures, so the TLS work done is that of a real client.
//!
//! Every loop is bounded: echo runs for SECS plus fixed grace periods, and `idle` and
//! `echo-server` exit on their own after `WSLOAD_MAX_SECS` (default 3600) if nobody
//! kills them first.

mod conn;
mod echo;
mod http;
mod idle;
mod server;
mod soak;
mod tcp;
mod tls;

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: wsload echo URL CONNS SECS | idle URL N READYFILE | \
     echo-server PORT [CERT KEY] [--name NAME] | soak URL CONNS SECS OUTDIR [HTTP_URL RATE] | \
     tcp-server PORT | tcp-bulk ADDR CONNS SECS | tcp-conn ADDR CONNS SECS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("tokio runtime: {e}")),
    };
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["echo", url, conns, secs] => match (conns.parse(), secs.parse()) {
            (Ok(conns), Ok(secs)) => {
                rt.block_on(echo::run(url, conns, Duration::from_secs_f64(secs)))
            }
            _ => Err(USAGE.to_string()),
        },
        ["idle", url, n, ready] => match n.parse() {
            Ok(n) => rt.block_on(idle::run(url, n, ready.as_ref(), max_lifetime())),
            Err(_) => Err(USAGE.to_string()),
        },
        ["echo-server", port, rest @ ..] => {
            let (rest, name) = match rest {
                [r @ .., "--name", n] => (r, Some(n.to_string())),
                r => (r, None),
            };
            match (port.parse(), rest) {
                (Ok(port), []) => rt.block_on(server::run(port, None, name, max_lifetime())),
                (Ok(port), [cert, key]) => {
                    rt.block_on(server::run(port, Some((cert, key)), name, max_lifetime()))
                }
                _ => Err(USAGE.to_string()),
            }
        }
        ["soak", url, conns, secs, out, rest @ ..] => {
            let http = match rest {
                [] => Ok(None),
                [u, rate] => rate
                    .parse::<f64>()
                    .map(|r| Some((u.to_string(), r)))
                    .map_err(drop),
                _ => Err(()),
            };
            match (conns.parse(), secs.parse(), http) {
                (Ok(conns), Ok(secs), Ok(http)) => rt.block_on(soak::run(
                    url,
                    conns,
                    Duration::from_secs_f64(secs),
                    out.as_ref(),
                    http,
                )),
                _ => Err(USAGE.to_string()),
            }
        }
        ["tcp-server", port] => match port.parse() {
            Ok(port) => rt.block_on(tcp::server(port, max_lifetime())),
            Err(_) => Err(USAGE.to_string()),
        },
        [mode @ ("tcp-bulk" | "tcp-conn"), addr, conns, secs] => {
            match (conns.parse(), secs.parse::<f64>()) {
                (Ok(conns), Ok(secs)) => {
                    let secs = Duration::from_secs_f64(secs);
                    if *mode == "tcp-bulk" {
                        rt.block_on(tcp::bulk(addr, conns, secs))
                    } else {
                        rt.block_on(tcp::conn(addr, conns, secs))
                    }
                }
                _ => Err(USAGE.to_string()),
            }
        }
        _ => Err(USAGE.to_string()),
    };
    // Do not wait for tasks still parked on sockets: the work is done.
    rt.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("wsload: {msg}");
    ExitCode::FAILURE
}

/// How long `idle` and `echo-server` live at most, so a forgotten one does not linger.
fn max_lifetime() -> Duration {
    let secs = std::env::var("WSLOAD_MAX_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3600);
    Duration::from_secs(secs)
}
