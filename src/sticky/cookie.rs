//! Signed, stateless sticky cookies.
//!
//! Instances share nothing but the config, so the cookie itself must say which
//! backend a client belongs to, in a way every instance can check and no client
//! can forge. The value is `1.<token>.<issued>.<mac>`: `token` is a 64-bit hash
//! of the backend id (never the address: that would leak the topology),
//! `issued` the unix second it was made, and `mac` a truncated HMAC-SHA256 over
//! the cookie name, token and issue time, keyed with the shared secret. Binding
//! the name stops one upstream's cookie from being replayed in another's. All
//! fields are lower-case hex, parsed strictly: any deviation, a bad MAC or an
//! expired value makes [`CookieCodec::decode`] return `None`, never an error.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// How far in the future an issue time may be (clocks of instances differ).
const MAX_SKEW_SECS: u64 = 300;
/// Bytes of HMAC output kept in the cookie (128 bits).
const MAC_LEN: usize = 16;
/// Domain separation for the MAC; bump with the value format.
const MAC_CONTEXT: &str = "latch-v1|";
const VERSION: &str = "1";

/// A backend as a cookie names it: the first 8 bytes of SHA-256 of its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BackendToken(pub u64);

/// Issues and checks sticky cookie values for one cookie name.
#[derive(Clone)]
pub struct CookieCodec {
    /// HMAC-SHA256 already keyed with the secret; cloned for each use.
    mac: Hmac<Sha256>,
    /// Cookie name, bound into every MAC.
    name: String,
    /// Oldest cookie accepted; `None` accepts any age.
    max_age: Option<Duration>,
}

impl fmt::Debug for CookieCodec {
    // Hand-written so the key can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieCodec")
            .field("name", &self.name)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

impl CookieCodec {
    /// `secret` must be at least 16 bytes; `name` must be a valid cookie name.
    pub fn new(secret: &[u8], name: &str, max_age: Option<Duration>) -> Result<Self, String> {
        if secret.len() < 16 {
            return Err(format!(
                "sticky cookie secret is {} bytes; at least 16 are required",
                secret.len()
            ));
        }
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!(
                "invalid cookie name {name:?}: use letters, digits and !#$%&'*+-.^_`|~"
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
        Ok(CookieCodec {
            mac,
            name: name.to_string(),
            max_age,
        })
    }

    /// The cookie name this codec signs for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token a backend id maps to; the proxy compares decoded tokens with this.
    pub fn token(backend_id: &str) -> BackendToken {
        let digest = Sha256::digest(backend_id.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        BackendToken(u64::from_be_bytes(first))
    }

    /// Value for backend `backend_id`, issued at `now` (unix seconds).
    pub fn encode(&self, backend_id: &str, now: u64) -> String {
        let token = format!("{:016x}", Self::token(backend_id).0);
        let issued = format!("{now:x}");
        let tag = self.keyed(&token, &issued).finalize().into_bytes();
        let mac = hex(&tag[..MAC_LEN]);
        format!("{VERSION}.{token}.{issued}.{mac}")
    }

    /// The backend token `value` names, if it is authentic and fresh enough.
    pub fn decode(&self, value: &str, now: u64) -> Option<BackendToken> {
        let mut fields = value.split('.');
        let (version, token, issued, mac) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if fields.next().is_some() || version != VERSION {
            return None;
        }
        let token_num = parse_hex_u64(token, 16, 16)?;
        let issued_num = parse_hex_u64(issued, 1, 16)?;
        // Canonical form only: "0" or no leading zero, so each time has one spelling.
        if issued.len() > 1 && issued.starts_with('0') {
            return None;
        }
        let mut tag = [0u8; MAC_LEN];
        if mac.len() != 2 * MAC_LEN {
            return None;
        }
        for (byte, pair) in tag.iter_mut().zip(mac.as_bytes().chunks_exact(2)) {
            *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
        }
        self.keyed(token, issued).verify_truncated_left(&tag).ok()?;
        // Timestamps matter only when an age limit is set; without one a
        // sender's wrong clock must not lock its clients out elsewhere.
        if let Some(max_age) = self.max_age {
            if issued_num > now.saturating_add(MAX_SKEW_SECS) {
                return None;
            }
            if now.saturating_sub(issued_num) > max_age.as_secs() {
                return None;
            }
        }
        Some(BackendToken(token_num))
    }

    fn keyed(&self, token: &str, issued: &str) -> Hmac<Sha256> {
        let mut m = self.mac.clone();
        for part in [MAC_CONTEXT, &self.name, "|", token, "|", issued] {
            m.update(part.as_bytes());
        }
        m
    }
}

/// RFC 7230 `tchar`, what a cookie name may contain.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex digit only: `A`–`F` are a different (forged) value.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_hex_u64(s: &str, min: usize, max: usize) -> Option<u64> {
    if s.len() < min || s.len() > max {
        return None;
    }
    s.bytes()
        .try_fold(0u64, |acc, c| Some((acc << 4) | u64::from(hex_digit(c)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn codec(max_age: Option<u64>) -> CookieCodec {
        CookieCodec::new(
            b"0123456789abcdef",
            "LATCH",
            max_age.map(Duration::from_secs),
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let c = codec(None);
        let v = c.encode("127.0.0.1:9001", NOW);
        assert!(!v.contains("127.0.0.1"));
        assert_eq!(
            c.decode(&v, NOW),
            Some(CookieCodec::token("127.0.0.1:9001"))
        );
        let v = c.encode("b", 0);
        assert_eq!(c.decode(&v, NOW), Some(CookieCodec::token("b")));
    }

    #[test]
    fn token_and_value_are_pinned() {
        // Instances of different releases must agree, or clients get re-homed.
        // Golden values from an independent HMAC-SHA256 (Python's hmac module).
        let t = CookieCodec::token("127.0.0.1:9001");
        assert_eq!(t, BackendToken(0x7987_905d_ee74_cdeb));
        let v = "1.7987905dee74cdeb.6553f100.ccfb8efd74ecea34462afc8761f22e15";
        assert_eq!(codec(None).encode("127.0.0.1:9001", NOW), v);
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let c = codec(None);
        let v = c.encode("127.0.0.1:9001", NOW);
        let mut tried = 0;
        for i in 0..v.len() {
            for bit in 0..8 {
                let mut b = v.clone().into_bytes();
                b[i] ^= 1 << bit;
                if let Ok(s) = String::from_utf8(b) {
                    assert_eq!(c.decode(&s, NOW), None, "flip {i}.{bit}: {s}");
                    tried += 1;
                }
            }
        }
        assert!(tried >= v.len() * 7);
    }

    #[test]
    fn other_secret_or_name_rejects() {
        let v = codec(None).encode("a", NOW);
        let other = CookieCodec::new(b"0123456789abcdeF", "LATCH", None).unwrap();
        assert_eq!(other.decode(&v, NOW), None);
        let other = CookieCodec::new(b"0123456789abcdef", "LATCH2", None).unwrap();
        assert_eq!(other.decode(&v, NOW), None);
        assert!(
            CookieCodec::new(b"short", "LATCH", None)
                .unwrap_err()
                .contains("16")
        );
        assert!(CookieCodec::new(b"0123456789abcdef", "a b", None).is_err());
        assert!(CookieCodec::new(b"0123456789abcdef", "", None).is_err());
    }

    #[test]
    fn age_and_skew() {
        let c = codec(Some(3600));
        let v = c.encode("a", NOW);
        assert!(c.decode(&v, NOW + 3600).is_some());
        assert_eq!(c.decode(&v, NOW + 3601), None);
        assert!(c.decode(&v, NOW - MAX_SKEW_SECS).is_some());
        assert_eq!(c.decode(&v, NOW - MAX_SKEW_SECS - 1), None);
        // Without an age limit the issue time is not checked.
        assert!(codec(None).decode(&v, 0).is_some());
        assert!(c.decode(&c.encode("a", u64::MAX), u64::MAX).is_some());
    }

    #[test]
    fn garbage_is_ignored() {
        let c = codec(Some(60));
        let v = c.encode("a", NOW);
        let long = "a.".repeat(50_000);
        for g in [
            "",
            ".",
            "....",
            "1...",
            "1.x.y.z",
            "é.ü.ß.€",
            "\u{0}",
            &long,
        ] {
            assert_eq!(c.decode(g, NOW), None, "{g:.40}");
        }
        let (up, sp) = (v.to_uppercase(), format!(" {v}"));
        for g in [format!("{v}."), format!("{v}.00"), sp, up] {
            assert_eq!(c.decode(&g, NOW), None, "{g}");
        }
        // A leading zero is rejected even when the MAC covers it.
        let (tok, issued) = (&v[2..18], format!("0{NOW:x}"));
        let tag = c.keyed(tok, &issued).finalize().into_bytes();
        let forged = format!("1.{tok}.{issued}.{}", hex(&tag[..MAC_LEN]));
        assert_eq!(c.decode(&forged, NOW), None);
        let canonical = format!("1.{tok}.{}.{}", &issued[1..], &v[28..]);
        assert_eq!(c.decode(&canonical, NOW), Some(CookieCodec::token("a")));
    }
}
