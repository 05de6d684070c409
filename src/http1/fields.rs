//! Header fields of a parsed head as an `http::HeaderMap` whose values are
//! slices of the head's frozen bytes (shared, not copied). httparse borrows
//! the read buffer; the head can be split off it only once that borrow ends,
//! so the fields' places are kept meanwhile as offsets, in a per-thread
//! scratch list (no allocation, nothing to clear per head).

use std::cell::RefCell;
use std::ops::Range;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Name and value of one field, as byte ranges of the head.
pub type Offsets = (Range<usize>, Range<usize>);

thread_local! {
    static SCRATCH: RefCell<Vec<Offsets>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's (empty) scratch list.
pub fn with_scratch<R>(f: impl FnOnce(&mut Vec<Offsets>) -> R) -> R {
    SCRATCH.with_borrow_mut(|v| {
        v.clear();
        f(v)
    })
}

/// The range `part` takes in `whole` (`part` must be a subslice of it).
pub fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

/// Records where each of `fields` lies in `buf`.
pub fn record(out: &mut Vec<Offsets>, buf: &[u8], fields: &[httparse::Header<'_>]) {
    out.extend(
        fields
            .iter()
            .map(|f| (range_in(buf, f.name.as_bytes()), range_in(buf, f.value))),
    );
}

/// Which of the fields that decide a message's framing and its connection
/// a head has, noted while its map is built, so that the absent ones (most,
/// in most messages) cost no map lookup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen(u8);

impl Seen {
    pub const CONTENT_LENGTH: Seen = Seen(1);
    pub const TRANSFER_ENCODING: Seen = Seen(2);
    pub const CONNECTION: Seen = Seen(4);
    pub const UPGRADE: Seen = Seen(8);
    pub const EXPECT: Seen = Seen(16);

    /// Whether the head has the field `field` stands for.
    pub fn has(self, field: Seen) -> bool {
        self.0 & field.0 != 0
    }

    fn note(&mut self, name: &HeaderName) {
        let field = if name == header::CONTENT_LENGTH {
            Seen::CONTENT_LENGTH
        } else if name == header::TRANSFER_ENCODING {
            Seen::TRANSFER_ENCODING
        } else if name == header::CONNECTION {
            Seen::CONNECTION
        } else if name == header::UPGRADE {
            Seen::UPGRADE
        } else if name == header::EXPECT {
            Seen::EXPECT
        } else {
            return;
        };
        self.0 |= field.0;
    }
}

/// The fields recorded in `offsets` as a map over `head` (the same bytes,
/// split off and frozen), with room for `spare` more fields, and which of
/// the [`Seen`] fields it has.
pub fn header_map(
    head: &Bytes,
    offsets: &[Offsets],
    spare: usize,
) -> Result<(HeaderMap, Seen), &'static str> {
    let mut headers = HeaderMap::with_capacity(offsets.len() + spare);
    let mut seen = Seen::default();
    for (name, value) in offsets {
        let name = head
            .get(name.clone())
            .and_then(|n| HeaderName::from_bytes(n).ok())
            .ok_or("invalid header name")?;
        seen.note(&name);
        let value = (value.end <= head.len())
            .then(|| head.slice(value.clone()))
            .and_then(|v| HeaderValue::from_maybe_shared(v).ok())
            .ok_or("invalid header value")?;
        headers.append(name, value);
    }
    Ok((headers, seen))
}
