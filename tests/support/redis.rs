//! Real Redis for TCP-mode tests: `redis-server` started on a port this test
//! picked (Redis cannot bind port 0: the port is taken from a released
//! `127.0.0.1:0` bind, and another is tried if Redis loses the race), and a
//! small RESP client that can bind its own source address (127.0.0.x), which
//! `redis-cli` cannot.
//!
//! A missing `redis-server` fails the test with the command that installs it.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use super::child::{Lines, free_port};
use super::{BoxError, TIMEOUT, within};

const INSTALL: &str = "apt-get install -y redis-server";

/// A running `redis-server`; killed when dropped.
pub struct Redis {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    pub log: Lines,
}

impl Redis {
    /// Starts one on a free port of 127.0.0.1, no persistence.
    pub async fn start() -> Redis {
        for _ in 0..5 {
            let port = free_port();
            let mut child = tokio::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args(["--loglevel", "notice"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); install it: {INSTALL}"));
            let mut log = Lines::new(child.stdout.take().expect("piped stdout"));
            let ready = log
                .wait_for("Redis ready or a bind failure", |l| {
                    l.contains("Ready to accept connections")
                        || l.contains("Could not create server TCP listening socket")
                })
                .await;
            if ready.contains("Ready") {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                return Redis { addr, child, log };
            }
            let _ = child.start_kill();
        }
        panic!("redis-server could not bind a free port in 5 tries");
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// SIGKILL, and wait until it is gone (its port refuses from then on).
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        within("redis-server to exit", self.child.wait())
            .await
            .expect("wait for redis-server");
    }
}

/// A RESP reply, as much of it as the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple or bulk string reply.
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("not a string reply: {other:?}"),
        }
    }
}

/// A Redis connection (plain TCP, or anything that reads and writes).
pub struct RespConn<S> {
    io: BufReader<S>,
}

/// Connects to `addr` from source address `from` (any of 127.0.0.0/8).
pub async fn connect_from(addr: SocketAddr, from: IpAddr) -> Result<RespConn<TcpStream>, BoxError> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr)).await??;
    Ok(RespConn::new(stream))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> RespConn<S> {
    pub fn new(io: S) -> RespConn<S> {
        RespConn {
            io: BufReader::new(io),
        }
    }

    /// Sends one command and reads its reply.
    pub async fn cmd(&mut self, args: &[&str]) -> Result<Reply, BoxError> {
        self.send(args).await?;
        self.reply().await
    }

    /// Sends one command without reading the reply.
    pub async fn send(&mut self, args: &[&str]) -> Result<(), BoxError> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        let io = self.io.get_mut();
        io.write_all(&out).await?;
        io.flush().await?;
        Ok(())
    }

    /// Reads one reply, within [`TIMEOUT`]; an error when the connection ended.
    pub async fn reply(&mut self) -> Result<Reply, BoxError> {
        match tokio::time::timeout(TIMEOUT, read_reply(&mut self.io)).await {
            Ok(r) => r,
            Err(_) => Err("no Redis reply in time".into()),
        }
    }

    /// `CONFIG GET port`: which server this connection reached.
    pub async fn server_port(&mut self) -> Result<u16, BoxError> {
        match self.cmd(&["CONFIG", "GET", "port"]).await? {
            Reply::Array(v) if v.len() == 2 => Ok(v[1].text().parse()?),
            other => Err(format!("CONFIG GET port answered {other:?}").into()),
        }
    }

    pub fn get_mut(&mut self) -> &mut S {
        self.io.get_mut()
    }

    /// Waits for the other side to close: Ok(()) on EOF (no bytes before it).
    pub async fn closed(&mut self) -> Result<(), BoxError> {
        let mut rest = Vec::new();
        match tokio::io::AsyncReadExt::read_to_end(&mut self.io, &mut rest).await {
            Ok(_) if rest.is_empty() => Ok(()),
            Ok(_) => Err(format!("bytes before the close: {rest:?}").into()),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn read_reply<R: AsyncRead + Unpin + Send>(
    r: &mut BufReader<R>,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send + '_>> {
    Box::pin(async move {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(line.len().min(1));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse()?),
            "$" => {
                let n: i64 = rest.parse()?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut buf = vec![0; n as usize + 2];
                    tokio::io::AsyncReadExt::read_exact(r, &mut buf).await?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            }
            "*" => {
                let n: i64 = rest.parse()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(read_reply(r).await?);
                }
                Reply::Array(items)
            }
            _ => return Err(format!("not RESP: {line:?}").into()),
        })
    })
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its stdout.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = within(
        "redis-cli",
        tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); install it: {INSTALL}"));
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
