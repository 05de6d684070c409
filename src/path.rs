//! Request paths in normal form, the form routes match and backends receive
//! (issue 10, bug 8). Without it `/x/../admin` and `/%61dmin` miss a
//! `path_prefix = "/admin"` route, and a backend that normalises for itself
//! then serves `/admin` through another route. Normal form is what nginx
//! matches locations against:
//!
//! - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986
//!   §2.3) are decoded; other escapes stay, with upper-case hex digits
//!   (§6.2.2.1), so `%2F` is still not a `/`;
//! - repeated slashes are merged (nginx `merge_slashes on`);
//! - `.` and `..` segments are removed (§5.2.4), after decoding, so `%2e%2e`
//!   is `..` too.
//!
//! A path that climbs above `/` (`/../x`) or has a malformed escape (`%zz`)
//! is refused, as nginx answers 400 to both. Only paths starting with `/`
//! are touched (`*` stays `*`).
//!
//! A leaf module, pure, used by config validation (route prefixes must be
//! in normal form) and per request, with [`origin_form`], the target a
//! backend receives. Most paths are normal already: those are
//! recognised in one pass over the bytes and returned borrowed, with no
//! allocation.

use std::borrow::Cow;

use http::Uri;
use http::uri::PathAndQuery;

/// `path` in normal form; borrowed when it already was. `Err` says why the
/// request is a 400.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, &'static str> {
    if !path.starts_with('/') || is_normal(path)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)?))
}

/// Whether `path` (starting with `/`) is in normal form; `Err` for a
/// malformed escape. Must agree exactly with the slow path (a unit test
/// checks every short path over the bytes that matter).
fn is_normal(path: &str) -> Result<bool, &'static str> {
    let b = path.as_bytes();
    let mut normal = true;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (hi, lo) = match (b.get(i + 1), b.get(i + 2)) {
                    (Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                        (hi, lo)
                    }
                    _ => return Err("malformed percent-encoding in the path"),
                };
                if hi.is_ascii_lowercase() || lo.is_ascii_lowercase() || unreserved(hex(hi, lo)) {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'/' => {
                let rest = &b[i + 1..];
                let dots = rest.iter().take_while(|&&c| c == b'.').count();
                let ends = |n: usize| rest.get(n).is_none_or(|&c| c == b'/');
                if rest.first() == Some(&b'/') || ((dots == 1 || dots == 2) && ends(dots)) {
                    normal = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(normal)
}

/// Decodes `%XX` of unreserved characters; upper-cases the hex of others.
fn decode_unreserved(path: &str) -> Result<String, &'static str> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (hi, lo) = match (b.get(i + 1), b.get(i + 2)) {
            (Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => (hi, lo),
            _ => return Err("malformed percent-encoding in the path"),
        };
        let c = hex(hi, lo);
        if unreserved(c) {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]);
        }
        i += 3;
    }
    // Only ASCII was replaced by ASCII, so what was UTF-8 still is.
    String::from_utf8(out).map_err(|_| "the path is not UTF-8")
}

/// Merges repeated slashes and removes `.` and `..` segments of `path`
/// (starting with `/`). A trailing slash, or a trailing dot segment, leaves
/// a trailing slash, as in RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(path.len());
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => match out.rfind('/') {
                Some(i) => out.truncate(i),
                None => return Err("the path climbs above /"),
            },
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The target backends get: origin-form (RFC 9112 §3.2.1) whatever the
/// client sent, with the path in normal form (`normal`, when [`normalise`]
/// had to change it) and the query as sent. A target that needs no change
/// shares the request's bytes instead of copying them.
pub fn origin_form(uri: &Uri, normal: Option<&str>) -> Result<Uri, &'static str> {
    let pq = uri
        .path_and_query()
        .filter(|pq| pq.as_str().starts_with('/'));
    match (normal, uri.scheme(), pq) {
        (None, None, _) => Ok(uri.clone()),
        (None, Some(_), Some(pq)) => Ok(Uri::from(pq.clone())),
        _ => {
            let path = normal.unwrap_or(uri.path());
            let text = match uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            PathAndQuery::try_from(text)
                .map(Uri::from)
                .map_err(|_| "invalid request target")
        }
    }
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(hi: u8, lo: u8) -> u8 {
    let v = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    };
    v(hi) << 4 | v(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, &'static str> {
        normalise(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/admin",
            "/admin/",
            "/a/b.c/..d/.e/f..",
            "/socket.io/?EIO=4",
            "/a%2Fb",
            "/caf%C3%A9",
            "/%20",
            "*",
            "",
        ] {
            assert!(
                matches!(normalise(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p:?} was rewritten: {:?}",
                normalise(p)
            );
        }
    }

    #[test]
    fn dot_segments_slashes_and_escapes() {
        let cases = [
            ("/x/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%41%5a%7E%2D%2e%5F", "/AZ~-._"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/./admin/./x", "/admin/x"),
            ("/a/b/../../c", "/c"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/", "/a/"),
            ("/a//", "/a/"),
            ("//", "/"),
            ("/.", "/"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/%2e./b", "/b"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2F..", "/a%2F.."),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a/..//b", "/b"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn climbing_above_the_root_and_bad_escapes_are_refused() {
        for p in [
            "/..",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e/a",
            "/.%2E",
        ] {
            assert_eq!(norm(p), Err("the path climbs above /"), "{p}");
        }
        for p in ["/%", "/%4", "/%zz", "/a%g1", "/%%41"] {
            assert_eq!(
                norm(p),
                Err("malformed percent-encoding in the path"),
                "{p}"
            );
        }
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for p in ["/x/../admin", "/%61//b/./c/..", "/a%2f%2e%2E/"] {
            let once = norm(p).unwrap();
            assert!(
                matches!(normalise(&once), Ok(Cow::Borrowed(_))),
                "{p} -> {once}"
            );
        }
    }

    #[test]
    fn backends_get_origin_form_with_the_normal_path() {
        let form = |target: &str, normal: Option<&str>| {
            let uri: Uri = target.parse().unwrap();
            origin_form(&uri, normal).unwrap().to_string()
        };
        assert_eq!(form("/a?b=/../c", None), "/a?b=/../c");
        assert_eq!(form("/x/../a?b", Some("/a")), "/a?b");
        assert_eq!(form("http://h.test/a?q", None), "/a?q");
        assert_eq!(form("http://h.test", None), "/");
        assert_eq!(form("http://h.test/%61", Some("/a")), "/a");
        assert_eq!(form("*", None), "*");
    }

    /// The fast check and the rewrite agree on every path of up to five
    /// bytes after the leading `/`, over the bytes that matter.
    #[test]
    fn fast_check_agrees_with_the_rewrite() {
        const ALPHABET: &[u8] = b"/.%2eE4fa";
        let mut path = Vec::with_capacity(6);
        for len in 0..=5u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                path.clear();
                path.push(b'/');
                for _ in 0..len {
                    path.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                let p = std::str::from_utf8(&path).unwrap();
                let slow = decode_unreserved(p).and_then(|d| remove_dot_segments(&d));
                match (is_normal(p), slow) {
                    (Ok(fast), Ok(rewritten)) => {
                        assert_eq!(fast, rewritten == p, "{p:?} -> {rewritten:?}")
                    }
                    (Err(a), Err(b)) => assert_eq!(a, b, "{p:?}"),
                    // A climb is found only by the rewrite; the fast check
                    // must then have said "not normal".
                    (Ok(fast), Err(_)) => assert!(!fast, "{p:?}"),
                    (Err(e), Ok(r)) => panic!("{p:?}: fast {e}, slow {r:?}"),
                }
            }
        }
    }
}
