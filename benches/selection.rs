//! Per-operation cost of backend selection (the per-request hot path).
//! Run: `cargo bench --bench selection`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use latch::backend::Backend;
use latch::balance::{Balancer, Request, SmoothRoundRobin};
use latch::config::ServerConfig;

fn pool(n: usize) -> Vec<Arc<Backend>> {
    (0..n)
        .map(|i| {
            let addr = format!("127.0.0.1:{}", 10_000 + i).parse().unwrap();
            Arc::new(Backend::new(&ServerConfig::new(addr, 1 + (i % 3) as u32)))
        })
        .collect()
}

fn round_robin(c: &mut Criterion) {
    let req = Request {
        client_ip: "10.1.2.3".parse().unwrap(),
        path: "/socket.io/",
    };
    for n in [3, 32] {
        let backends = pool(n);
        let rr = SmoothRoundRobin::new(n);
        c.bench_function(&format!("round_robin/{n}"), |b| {
            b.iter(|| black_box(rr.pick(black_box(&backends), &req, &|_| true)))
        });
    }
}

criterion_group!(benches, round_robin);
criterion_main!(benches);
