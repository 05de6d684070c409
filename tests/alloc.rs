//! A regression guard on the request path's allocations: a counting global
//! allocator counts the allocations made on latch's own threads (a runtime
//! of its own, marked at thread start) while it proxies keep-alive requests,
//! and the number per request must stay under a fixed small bound. Counts
//! are deterministic enough for a bound, unlike timings; speed itself is
//! measured in `benches/`.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use support::*;

/// Allocations per proxied keep-alive GET, at most. Today's count is
/// printed by the test; lower this bound when the path gets leaner.
const MAX_ALLOCS_PER_REQUEST: f64 = 5.0;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on latch's runtime threads only.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTED.with(Cell::get) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter only reads a const-initialised thread local and bumps an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

async fn requests(client: &mut HttpConn, n: usize) {
    for _ in 0..n {
        let (status, _, body) = client.get("app.test", "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
}

#[test]
fn a_keep_alive_request_allocates_little() {
    // latch runs on a runtime of its own whose threads are counted; the
    // client and the backend run on the test's runtime, which is not.
    let latch_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .enable_all()
        .build()
        .unwrap();
    let test_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = test_rt.block_on(spawn_keepalive(std::time::Duration::from_secs(60)));
    let toml = simple_config(&[backend.addr], "");
    let lb = latch_rt.block_on(async { spawn_lb(&toml).await });
    test_rt.block_on(async {
        let mut client = HttpConn::connect(lb.addr()).await;
        // Warm up: the pooled connection, metric series, buffers.
        requests(&mut client, 200).await;
        let before = ALLOCS.load(Ordering::Relaxed);
        let n = 2000;
        requests(&mut client, n).await;
        let per_request = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / n as f64;
        println!("allocations per proxied keep-alive request: {per_request:.2}");
        assert!(
            per_request <= MAX_ALLOCS_PER_REQUEST,
            "{per_request:.2} allocations per request (bound {MAX_ALLOCS_PER_REQUEST})"
        );
    });
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 1);
    drop(lb);
    latch_rt.shutdown_background();
}
