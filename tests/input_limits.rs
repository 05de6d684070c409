//! Limits on what a client may send (issue 10, bug 5): `max_header_size` is
//! exact however the head arrives.

mod support;

use support::*;

// === max_header_size (bug 5) ===

/// A `GET /name` head of exactly `len` bytes, counting the request line, the
/// headers and the blank line that ends them.
fn head_of(len: usize) -> Vec<u8> {
    let start = "GET /name HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nx-pad: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    format!("{start}{}{end}", "p".repeat(pad)).into_bytes()
}

fn status_of(raw: &[u8]) -> u16 {
    parse_response(raw).status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_size_is_exact_in_one_write_and_in_small_writes() {
    let app = spawn_backend("app").await;
    let toml = format!(
        "[server]\nmax_header_size = \"64k\"\n\n{}",
        simple_config(&[app.addr], "")
    );
    let lb = spawn_lb(&toml).await;
    let max = 64 * 1024;
    // (head length, write size, status expected)
    let cases = [
        (max, usize::MAX, 200),
        (max + 1, usize::MAX, 431),
        (max, 4096, 200),
        (max + 1, 4096, 431),
        (max, 1000, 200),
        (max + 1, 1000, 431),
        // The numbers: 114,677 bytes in one write was accepted.
        (114_677, usize::MAX, 431),
        (66_000, 4096, 431),
    ];
    for (len, piece, want) in cases {
        let head = head_of(len);
        assert_eq!(head.len(), len);
        let raw = raw_in_pieces(lb.addr(), &head, piece).await;
        let piece = if piece == usize::MAX {
            "one write".to_string()
        } else {
            format!("{piece}-byte writes")
        };
        assert_eq!(status_of(&raw), want, "{len}-byte head in {piece}");
    }
}
