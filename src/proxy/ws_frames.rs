//! Following WebSocket frames through a tunnel without buffering them.
//!
//! To close a WebSocket cleanly, latch must put its close frame between two
//! frames, never inside one (RFC 6455 §5.4 lets a control frame go between
//! the fragments of a message, so any frame boundary will do). [`Frames`]
//! reads the headers of the frames one direction carries, byte by byte (a
//! header may be split over reads), and skips each payload by its length, so
//! it costs a few instructions per frame and holds 16 bytes: no payload is
//! ever kept. It also notes a close frame passing, so latch neither sends a
//! second one nor waits for a reply that already came.
//!
//! [`close_frame`] builds the frame latch sends: unmasked toward the client
//! (latch is its server), masked toward the backend (latch is its client,
//! RFC 6455 §5.3).

/// Where the reader is in the stream of frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Between two frames: the next byte starts a header.
    #[default]
    Start,
    /// The second header byte (mask bit and 7-bit length).
    Len,
    /// That many bytes of extended length left.
    Ext(u8),
    /// That many bytes of masking key left.
    Mask(u8),
    /// In the payload; `left` bytes to go.
    Payload,
}

/// The frame state of one direction of a tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Frames {
    /// Payload bytes left in the current frame (or the extended length
    /// being read).
    left: u64,
    step: Step,
    /// The current header has the mask bit.
    masked: bool,
    /// The current (or last) frame is a close frame.
    close: bool,
}

impl Frames {
    /// True between two frames, where a close frame may go.
    pub fn at_boundary(&self) -> bool {
        self.step == Step::Start
    }

    /// A close frame has passed (its header at least).
    pub fn close_seen(&self) -> bool {
        self.close
    }

    /// A close frame has passed whole: the peer said goodbye.
    pub fn close_done(&self) -> bool {
        self.close && self.at_boundary()
    }

    /// Follows `data`; with `to_boundary`, stops at the first frame boundary
    /// (at once if already at one) and returns how many bytes it took, else
    /// takes all of `data`.
    pub fn advance(&mut self, data: &[u8], to_boundary: bool) -> usize {
        let mut at = 0;
        while at < data.len() {
            if to_boundary && self.at_boundary() {
                break;
            }
            match self.step {
                Step::Payload => {
                    let room = data.len() - at;
                    let n = usize::try_from(self.left).map_or(room, |l| l.min(room));
                    self.left -= n as u64;
                    at += n;
                }
                step => {
                    self.header_byte(step, data[at]);
                    at += 1;
                }
            }
            if self.step == Step::Payload && self.left == 0 {
                self.step = Step::Start;
            }
        }
        at
    }

    fn header_byte(&mut self, step: Step, b: u8) {
        match step {
            Step::Start => {
                self.close = b & 0x0f == 0x8;
                self.step = Step::Len;
            }
            Step::Len => {
                self.masked = b & 0x80 != 0;
                self.left = 0;
                match b & 0x7f {
                    126 => self.step = Step::Ext(2),
                    127 => self.step = Step::Ext(8),
                    n => {
                        self.left = u64::from(n);
                        self.after_length();
                    }
                }
            }
            Step::Ext(n) => {
                self.left = (self.left << 8) | u64::from(b);
                if n > 1 {
                    self.step = Step::Ext(n - 1);
                } else {
                    self.after_length();
                }
            }
            Step::Mask(n) => {
                self.step = if n > 1 {
                    Step::Mask(n - 1)
                } else {
                    Step::Payload
                };
            }
            Step::Payload => {}
        }
    }

    fn after_length(&mut self) {
        self.step = if self.masked {
            Step::Mask(4)
        } else {
            Step::Payload
        };
    }
}

/// A close frame with `code` and `reason` (at most 123 bytes are used);
/// masked with `mask` when it goes to the backend.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let len = payload.len() as u8; // at most 125
    let mut frame = vec![0x88];
    match mask {
        None => frame.push(len),
        Some(m) => {
            frame.push(0x80 | len);
            frame.extend_from_slice(&m);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
    }
    frame.extend_from_slice(&payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, len: usize, mask: bool) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        let m = if mask { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len <= 0xffff {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(7u8, len));
        f
    }

    #[test]
    fn follows_frames_of_every_length_form_split_anywhere() {
        let frames = [
            frame(1, 0, false),
            frame(2, 5, true),
            frame(1, 125, false),
            frame(2, 126, true),
            frame(2, 70_000, false),
            frame(9, 3, true),
        ];
        let stream: Vec<u8> = frames.concat();
        let mut ends = Vec::new();
        let mut at = 0;
        for f in &frames {
            at += f.len();
            ends.push(at);
        }
        for chunk in [1, 2, 3, 7, 1000, stream.len()] {
            let mut fr = Frames::default();
            let mut seen = Vec::new();
            let mut pos = 0;
            for piece in stream.chunks(chunk) {
                let mut off = 0;
                while off < piece.len() {
                    let n = fr.advance(&piece[off..], true);
                    if n == 0 {
                        // At a boundary: step over one byte to go on.
                        fr.advance(&piece[off..off + 1], false);
                        off += 1;
                        pos += 1;
                        continue;
                    }
                    off += n;
                    pos += n;
                    if fr.at_boundary() {
                        seen.push(pos);
                    }
                }
            }
            assert_eq!(seen, ends, "chunk {chunk}");
            assert!(fr.at_boundary() && !fr.close_seen());
        }
    }

    #[test]
    fn notes_a_close_frame() {
        let mut fr = Frames::default();
        let close = close_frame(1000, "bye", Some([9, 8, 7, 6]));
        fr.advance(&close[..3], false);
        assert!(fr.close_seen() && !fr.close_done());
        fr.advance(&close[3..], false);
        assert!(fr.close_done());
    }

    #[test]
    fn close_frame_layout() {
        assert_eq!(close_frame(1001, "", None), [0x88, 2, 0x03, 0xe9]);
        let masked = close_frame(1012, "ab", Some([1, 2, 3, 4]));
        assert_eq!(masked[..6], [0x88, 0x84, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = masked[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, [0x03, 0xf4, b'a', b'b']);
        let long = "x".repeat(300);
        assert_eq!(close_frame(1000, &long, None).len(), 2 + 125);
    }

    #[test]
    fn random_frames_fed_byte_by_byte_and_to_each_boundary() {
        // xorshift64: deterministic frames of every length form and opcode.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..200 {
            let len = match next() % 10 {
                0 => 126 + (next() % 1000) as usize,
                1 => 65_536 + (next() % 3) as usize,
                _ => (next() % 126) as usize,
            };
            let opcode = [0, 1, 2, 8, 9, 10][(next() % 6) as usize];
            stream.extend(frame(opcode, len, next() % 2 == 0));
            ends.push(stream.len());
        }
        // Byte by byte: a boundary exactly at each frame's end.
        let mut fr = Frames::default();
        let mut seen = Vec::new();
        for (i, b) in stream.iter().enumerate() {
            fr.advance(std::slice::from_ref(b), false);
            if fr.at_boundary() {
                seen.push(i + 1);
            }
        }
        assert_eq!(seen, ends);
        // From anywhere inside a frame (a frame has 2 bytes at least),
        // `to_boundary` stops exactly at its end.
        let mut fr = Frames::default();
        let mut at = 0;
        for &end in &ends {
            let mid = at + 1 + (next() as usize % (end - at - 1));
            fr.advance(&stream[at..mid], false);
            let n = fr.advance(&stream[mid..], true);
            assert_eq!(mid + n, end);
            assert!(fr.at_boundary());
            assert_eq!(fr.advance(&stream[end..], true), 0);
            at = end;
        }
    }
}
