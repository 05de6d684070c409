//! Per-connection cost of the PROXY protocol: parsing the header a
//! `proxy_protocol` listener reads first (whole, as one read usually brings
//! it), and encoding the one `send_proxy` writes on each new upstream
//! connection. Run: `cargo bench --bench proxy_header`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use latch::proxy_protocol::{Addrs, Version, encode, parse};

fn headers(c: &mut Criterion) {
    let v4 = Addrs {
        src: "203.0.113.57:51234".parse().unwrap(),
        dst: "10.0.0.5:443".parse().unwrap(),
    };
    let v6 = Addrs {
        src: "[2001:db8:85a3::8a2e:370:7334]:51234".parse().unwrap(),
        dst: "[2001:db8::5]:443".parse().unwrap(),
    };
    for (name, addrs) in [("ipv4", v4), ("ipv6", v6)] {
        for (version, v) in [("v1", Version::V1), ("v2", Version::V2)] {
            let bytes = encode(v, Some(addrs));
            c.bench_function(&format!("parse {version} {name}"), |b| {
                b.iter(|| parse(black_box(&bytes)))
            });
            c.bench_function(&format!("encode {version} {name}"), |b| {
                b.iter(|| encode(v, black_box(Some(addrs))))
            });
        }
    }
}

criterion_group!(benches, headers);
criterion_main!(benches);
