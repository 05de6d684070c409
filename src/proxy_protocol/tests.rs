use super::*;

fn addrs(src: &str, dst: &str) -> Addrs {
    Addrs {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    }
}

/// Feeds `bytes` as a socket reader would: asks for what `parse` needs,
/// never more, and gets what has arrived.
fn read_as_a_socket_would(bytes: &[u8]) -> Result<(Header, usize), Error> {
    let mut have = 0;
    loop {
        match parse(&bytes[..have])? {
            Parsed::Done(h, len) => {
                assert_eq!(len, have, "a complete header is the whole buffer");
                return Ok((h, len));
            }
            Parsed::Need(n) => {
                assert!(n > 0);
                if have == bytes.len() {
                    // The reader would wait for bytes that never come.
                    return Err(Error::Malformed("truncated (test)"));
                }
                // A read returns what has arrived, up to what was asked.
                have = (have + n).min(bytes.len());
            }
        }
    }
}

#[test]
fn v1_tcp4_tcp6_and_unknown() {
    let line = b"PROXY TCP4 192.168.1.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
    let (h, len) = read_as_a_socket_would(line).unwrap();
    assert_eq!(h, Header::Proxy(addrs("192.168.1.7:56324", "10.0.0.1:443")));
    assert_eq!(&line[len..], b"GET / HTTP/1.1\r\n");

    let line = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
    let (h, _) = read_as_a_socket_would(line).unwrap();
    assert_eq!(h, Header::Proxy(addrs("[2001:db8::1]:1", "[::1]:65535")));

    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f 0 0\r\n",
    ] {
        assert_eq!(read_as_a_socket_would(unknown).unwrap().0, Header::Local);
    }
}

#[test]
fn v1_refusals() {
    let malformed: &[&[u8]] = &[
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UNKNOWN\x01\r\n",
        b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
    ];
    for m in malformed {
        let got = read_as_a_socket_would(m);
        assert!(
            matches!(got, Err(Error::Malformed(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(m)
        );
    }
    for missing in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\x16\x03\x01\x02\x00"] {
        assert_eq!(read_as_a_socket_would(missing), Err(Error::Missing));
    }
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(MAX_V1, b'x');
    long.extend_from_slice(b"\r\n");
    assert_eq!(read_as_a_socket_would(&long), Err(Error::Oversized));
    // 107 bytes with CRLF is still fine.
    let mut max = b"PROXY UNKNOWN ".to_vec();
    max.resize(MAX_V1 - 2, b'x');
    max.extend_from_slice(b"\r\n");
    assert_eq!(read_as_a_socket_would(&max), Ok((Header::Local, MAX_V1)));
}

#[test]
fn a_wrong_byte_is_refused_before_the_line_ends() {
    // A client that is not a balancer is refused on its first bytes, not
    // after a timeout.
    assert_eq!(parse(b"GET /"), Err(Error::Missing));
    assert!(matches!(
        parse(b"PROXY TCP4 1.2.3.4 x"),
        Err(Error::Malformed(_))
    ));
    assert!(matches!(parse(b"PROXY HTTP"), Err(Error::Malformed(_))));
    assert!(matches!(
        parse(b"\r\n\r\n\0\r\nQUIT\n\x11"),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn v2_inet_inet6_local_and_tlvs() {
    let a = addrs("203.0.113.9:40000", "127.0.0.1:8443");
    let mut h = encode(Version::V2, Some(a));
    // A TLV (type 0x04 NOOP, 3 bytes) in the header's length: skipped.
    h[15] += 6;
    h.extend_from_slice(&[0x04, 0, 3, 1, 2, 3]);
    let total = h.len();
    h.extend_from_slice(b"\x16\x03\x01");
    let (got, len) = read_as_a_socket_would(&h[..total]).unwrap();
    assert_eq!((got, len), (Header::Proxy(a), total));
    assert_eq!(parse(&h).unwrap(), Parsed::Done(Header::Proxy(a), total));

    let a6 = addrs("[2001:db8::5]:1234", "[::1]:80");
    let h = encode(Version::V2, Some(a6));
    assert_eq!(h.len(), 16 + 36);
    assert_eq!(read_as_a_socket_would(&h).unwrap().0, Header::Proxy(a6));

    let local = encode(Version::V2, None);
    assert_eq!(read_as_a_socket_would(&local).unwrap(), (Header::Local, 16));
    // UNSPEC with PROXY: no client named.
    let mut unspec = V2_SIG.to_vec();
    unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
    assert_eq!(read_as_a_socket_would(&unspec).unwrap().0, Header::Local);
}

#[test]
fn v2_refusals() {
    let good = encode(Version::V2, Some(addrs("1.2.3.4:1", "5.6.7.8:2")));
    let with = |i: usize, b: u8| {
        let mut h = good.clone();
        h[i] = b;
        h
    };
    for (what, h) in [
        ("version 1", with(12, 0x11)),
        ("command 2", with(12, 0x22)),
        ("dgram", with(13, 0x12)),
        ("family 5", with(13, 0x51)),
        ("inet, short", with(15, 11)),
        ("bad signature", with(6, b'x')),
    ] {
        let got = read_as_a_socket_would(&h);
        assert!(matches!(got, Err(Error::Malformed(_))), "{what}: {got:?}");
    }
    let mut big = good.clone();
    let len = (MAX_V2 - 16 + 1) as u16;
    big[14..16].copy_from_slice(&len.to_be_bytes());
    assert_eq!(parse(&big[..16]), Err(Error::Oversized));
    let len = (MAX_V2 - 16) as u16;
    big[14..16].copy_from_slice(&len.to_be_bytes());
    big.resize(MAX_V2, 0);
    assert!(matches!(parse(&big), Ok(Parsed::Done(_, MAX_V2))));
}

#[test]
fn encodings_round_trip_and_match_the_spec() {
    let a = addrs("192.168.0.1:56324", "192.168.0.11:443");
    assert_eq!(
        encode(Version::V1, Some(a)),
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    );
    assert_eq!(encode(Version::V1, None), b"PROXY UNKNOWN\r\n");
    let v2 = encode(Version::V2, Some(a));
    assert_eq!(&v2[12..16], &[0x21, 0x11, 0, 12]);
    assert_eq!(&v2[16..20], &[192, 168, 0, 1]);
    assert_eq!(&v2[24..26], &56324u16.to_be_bytes());
    assert_eq!(encode(Version::V2, None)[12..], [0x20, 0, 0, 0]);
    // Mixed families go as IPv6; an IPv4-mapped client goes as IPv4.
    let mixed = addrs("10.0.0.1:5", "[2001:db8::1]:443");
    let want = addrs("[::ffff:10.0.0.1]:5", "[2001:db8::1]:443");
    for v in [Version::V1, Version::V2] {
        let (h, _) = read_as_a_socket_would(&encode(v, Some(mixed))).unwrap();
        assert_eq!(h, Header::Proxy(want));
        let mapped = addrs("[::ffff:10.0.0.1]:5", "[::ffff:10.0.0.2]:6");
        let (h, _) = read_as_a_socket_would(&encode(v, Some(mapped))).unwrap();
        assert_eq!(h, Header::Proxy(addrs("10.0.0.1:5", "10.0.0.2:6")));
    }
}

#[test]
fn every_prefix_asks_for_no_more_than_the_header() {
    let headers = [
        encode(Version::V1, Some(addrs("1.2.3.4:1", "5.6.7.8:2"))),
        encode(Version::V1, Some(addrs("[::1]:1", "[::2]:2"))),
        encode(Version::V1, None),
        encode(Version::V2, None),
        encode(Version::V2, Some(addrs("1.2.3.4:1", "5.6.7.8:2"))),
        b"PROXY UNKNOWN whatever\r\n".to_vec(),
    ];
    for h in &headers {
        for cut in 0..h.len() {
            match parse(&h[..cut]) {
                Ok(Parsed::Need(n)) => assert!(cut + n <= h.len(), "{h:?} at {cut}: {n}"),
                other => panic!("{h:?} at {cut}: {other:?}"),
            }
        }
    }
}
