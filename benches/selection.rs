//! Per-operation cost of the per-request hot path: backend selection for
//! every balance mode, and the sticky cookie's encode (first request of a
//! session) and decode (every later request).
//! Run: `cargo bench --bench selection`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use latch::backend::Backend;
use latch::balance::{Balancer, LeastConn, Maglev, PowerOfTwo, Request, SmoothRoundRobin};
use latch::config::ServerConfig;
use latch::sticky::{CookieCodec, ip_key};

fn pool(n: usize) -> Vec<Arc<Backend>> {
    (0..n)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
            Arc::new(Backend::new(&ServerConfig::new(addr, 1 + (i % 3) as u32)))
        })
        .collect()
}

fn balancers(c: &mut Criterion) {
    let req = Request {
        client_ip: "10.1.2.3".parse().unwrap(),
        path: "/socket.io/",
    };
    for n in [3, 32] {
        let backends = pool(n);
        // Some load, so least_conn and random compare real numbers.
        let _held: Vec<_> = backends
            .iter()
            .take(n / 2)
            .map(|b| b.start_request())
            .collect();
        let algos: Vec<(&str, Box<dyn Balancer>)> = vec![
            ("round_robin", Box::new(SmoothRoundRobin::new(n))),
            ("least_conn", Box::new(LeastConn::new())),
            ("random_p2c", Box::new(PowerOfTwo::with_seed(7))),
            ("maglev_ip", Box::new(Maglev::new(&backends))),
        ];
        for (name, algo) in algos {
            c.bench_function(&format!("{name}/{n}"), |b| {
                b.iter(|| black_box(algo.pick(black_box(&backends), &req, &|_| true)))
            });
        }
    }
    let backends = pool(3);
    let ring = Maglev::new(&backends);
    let ip = "10.1.2.3".parse().unwrap();
    c.bench_function("maglev_ip_key_with_prefix/3", |b| {
        b.iter(|| black_box(ring.pick_key(&ip_key(black_box(ip), 24, 64), &|_| true)))
    });
}

fn cookie(c: &mut Criterion) {
    let codec = CookieCodec::new(b"0123456789abcdef0123456789abcdef", "LATCH", None).unwrap();
    let now = 1_800_000_000;
    let value = codec.encode("127.0.0.1:9001", now);
    c.bench_function("cookie_encode", |b| {
        b.iter(|| black_box(codec.encode(black_box("127.0.0.1:9001"), now)))
    });
    c.bench_function("cookie_decode_valid", |b| {
        b.iter(|| black_box(codec.decode(black_box(&value), now)))
    });
    let mut forged = value.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    c.bench_function("cookie_decode_forged", |b| {
        b.iter(|| black_box(codec.decode(black_box(&forged), now)))
    });
}

criterion_group!(benches, balancers, cookie);
criterion_main!(benches);
