//! A client's request body. The connection's own task reads it off the
//! socket by its framing (a length, or chunked) and hands the data, slices of
//! the read buffer, through a small channel to whoever reads the body (the
//! retry loop, or a backend connection streaming it). A request without a
//! body has no channel at all.
//!
//! The client is not trusted: a malformed chunk, an oversized chunk line or
//! trailer section, or a close before the end is an error the body's reader
//! sees, never a panic.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::head::Framing;
use crate::body::BoxError;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted (it is read and dropped).
const MAX_TRAILERS: usize = 16 * 1024;
/// Bytes read from the socket at a time while a body is read.
const READ_SIZE: usize = 16 * 1024;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the end of its body")]
    Closed,
    #[error("reading the request body: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed chunked request body: {0}")]
    Chunk(&'static str),
}

/// The reading end: what the request carries as its body.
pub struct ClientBody {
    rx: mpsc::Receiver<Result<Bytes, BodyError>>,
    /// Bytes still to come, when the client declared a length.
    left: Option<u64>,
    done: bool,
}

/// The feeding end, driven by the connection task.
pub struct Pump {
    tx: Option<mpsc::Sender<Result<Bytes, BodyError>>>,
    state: State,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk with this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines (dropped) until an empty line;
    /// the bytes seen so far.
    Trailers(usize),
    Done,
}

/// A body channel for a request framed by `framing` (not `None`).
pub fn channel(framing: Framing) -> (ClientBody, Pump) {
    let (tx, rx) = mpsc::channel(2);
    let (state, left) = match framing {
        Framing::Length(n) => (State::Length(n), Some(n)),
        Framing::Chunked => (State::ChunkSize, None),
        Framing::None => (State::Done, Some(0)),
    };
    let done = state == State::Done;
    (
        ClientBody { rx, left, done },
        Pump {
            tx: (!done).then_some(tx),
            state,
        },
    )
}

/// One step of decoding.
enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    End,
}

impl Pump {
    /// The whole body was read off the connection (the next bytes on it are
    /// the next request).
    pub fn finished(&self) -> bool {
        self.state == State::Done
    }

    /// Reads the body off `io` (after what `buf` holds already) and passes
    /// it on, until it ends, fails, or its reader is gone. Cancel-safe: it
    /// takes bytes off `buf` only once the channel has room for them, so it
    /// can be dropped at any await and run again.
    pub async fn run<I: AsyncRead + Unpin>(&mut self, io: &mut I, buf: &mut BytesMut) {
        loop {
            let Some(tx) = &self.tx else { return };
            let Ok(permit) = tx.reserve().await else {
                // The reader dropped the body: nothing more is read.
                self.tx = None;
                return;
            };
            let mut permit = Some(permit);
            let mut send = |m| {
                if let Some(p) = permit.take() {
                    p.send(m);
                }
            };
            let ended = loop {
                match decode(&mut self.state, buf) {
                    Ok(Step::Data(d)) => {
                        send(Ok(d));
                        break false;
                    }
                    Ok(Step::End) => break true,
                    Ok(Step::More) => {}
                    Err(why) => {
                        send(Err(BodyError::Chunk(why)));
                        break true;
                    }
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_SIZE);
                }
                match io.read_buf(buf).await {
                    Ok(0) => {
                        send(Err(BodyError::Closed));
                        break true;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        send(Err(BodyError::Io(e)));
                        break true;
                    }
                }
            };
            drop(permit);
            if ended {
                // Dropping the sender ends the body for its reader.
                self.tx = None;
                return;
            }
        }
    }
}

fn decode(state: &mut State, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match *state {
            State::Done => return Ok(Step::End),
            State::Length(0) => {
                *state = State::Done;
                return Ok(Step::End);
            }
            State::Length(left) | State::ChunkData(left) if !buf.is_empty() => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = buf.split_to(n).freeze();
                let left = left - n as u64;
                *state = match *state {
                    State::Length(_) if left == 0 => State::Done,
                    State::Length(_) => State::Length(left),
                    _ if left == 0 => State::ChunkEnd,
                    _ => State::ChunkData(left),
                };
                return Ok(Step::Data(data));
            }
            State::ChunkSize => match line(buf, MAX_CHUNK_LINE)? {
                Some(l) => {
                    *state = match chunk_size(&l) {
                        Some(0) => State::Trailers(0),
                        Some(n) => State::ChunkData(n),
                        None => return Err("invalid chunk size"),
                    }
                }
                None => return Ok(Step::More),
            },
            State::ChunkEnd => match line(buf, 2).map_err(|_| "chunk longer than its size")? {
                Some(l) if l.is_empty() => *state = State::ChunkSize,
                Some(_) => return Err("chunk longer than its size"),
                None => return Ok(Step::More),
            },
            State::Trailers(seen) => {
                match line(buf, MAX_TRAILERS - seen).map_err(|_| "trailers too large")? {
                    Some(l) if l.is_empty() => *state = State::Done,
                    Some(l) => *state = State::Trailers(seen + l.len() + 2),
                    None => return Ok(Step::More),
                }
            }
            State::Length(_) | State::ChunkData(_) => return Ok(Step::More),
        }
    }
}

/// Decodes a whole body framed by `framing` from the front of `bytes`: the
/// data, and how many bytes of `bytes` the body took. `Ok(None)`: the body
/// is not complete in `bytes`. The same decoder the connection runs, without
/// a socket (for the fuzzer and tests).
pub fn decode_whole(
    framing: Framing,
    bytes: &[u8],
) -> Result<Option<(Vec<u8>, usize)>, &'static str> {
    let mut state = match framing {
        Framing::None => return Ok(Some((Vec::new(), 0))),
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::ChunkSize,
    };
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    loop {
        match decode(&mut state, &mut buf)? {
            Step::Data(d) => out.extend_from_slice(&d),
            Step::End => return Ok(Some((out, bytes.len() - buf.len()))),
            Step::More => return Ok(None),
        }
    }
}

/// Takes one line (without its CRLF, or a bare LF) off `buf`; `None` when no
/// whole line is there yet. Longer than `max`: an error.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, &'static str> {
    match buf.iter().take(max + 2).position(|&b| b == b'\n') {
        Some(i) => {
            let mut l = buf.split_to(i + 1);
            l.truncate(i);
            if l.last() == Some(&b'\r') {
                l.truncate(i - 1);
            }
            Ok(Some(l.freeze()))
        }
        None if buf.len() > max + 1 => Err("line too long"),
        None => Ok(None),
    }
}

/// The size of a chunk from its size line (`1*HEXDIG [ chunk-ext ]`).
pub fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let (digits, rest) = line.split_at(digits_end);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let rest = rest.trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(v))
    })
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(d))) => {
                if let Some(left) = &mut this.left {
                    *left = left.saturating_sub(d.len() as u64);
                    this.done = *left == 0;
                }
                Poll::Ready(Some(Ok(Frame::data(d))))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody")
            .field("left", &self.left)
            .field("done", &self.done)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn read_all(framing: Framing, wire: &[u8]) -> (Result<Vec<u8>, String>, Vec<u8>) {
        let (mut body, mut pump) = channel(framing);
        let (mut client, mut server) = tokio::io::duplex(64);
        let wire = wire.to_vec();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in wire.chunks(7) {
                if client.write_all(piece).await.is_err() {
                    return;
                }
            }
            // Closing after the bytes: a body cut short sees the close.
        });
        let mut buf = BytesMut::new();
        let reader = async {
            let mut got = Vec::new();
            while let Some(f) = body.frame().await {
                match f {
                    Ok(f) => got.extend_from_slice(&f.into_data().unwrap()),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(got)
        };
        let (got, ()) = tokio::join!(reader, pump.run(&mut server, &mut buf));
        (got, buf.to_vec())
    }

    #[tokio::test]
    async fn a_length_body_and_what_follows_it() {
        let (got, rest) = read_all(Framing::Length(5), b"helloGET /").await;
        assert_eq!(got.unwrap(), b"hello");
        // What follows the body is the next request's, left in the buffer
        // (or still on the socket).
        assert!(b"GET /".starts_with(&rest), "{rest:?}");
    }

    #[tokio::test]
    async fn a_chunked_body_with_extensions_and_trailers() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        let (got, _) = read_all(Framing::Chunked, wire).await;
        assert_eq!(got.unwrap(), b"hello world");
    }

    #[tokio::test]
    async fn bad_bodies_are_errors() {
        for (framing, wire) in [
            (Framing::Length(10), &b"short"[..]),
            (Framing::Chunked, b"zz\r\nhello\r\n0\r\n\r\n"),
            (Framing::Chunked, b"5\r\nhello!!\r\n0\r\n\r\n"),
            (Framing::Chunked, b"5\r\nhel"),
        ] {
            let (got, _) = read_all(framing, wire).await;
            assert!(got.is_err(), "{wire:?} read as {got:?}");
        }
        let long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE + 10));
        let (got, _) = read_all(Framing::Chunked, long.as_bytes()).await;
        assert!(got.is_err());
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b"A ; name=v"), Some(10));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"-1"), None);
        assert_eq!(chunk_size(b"1 2"), None);
        assert_eq!(chunk_size(b"11111111111111111"), None);
    }
}
