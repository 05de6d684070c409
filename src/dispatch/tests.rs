use super::*;
use crate::backend::LoadReport;
use crate::config::ServerConfig;

fn server(port: u16, f: impl FnOnce(&mut ServerConfig)) -> Arc<Backend> {
    let mut cfg = ServerConfig::new(format!("127.0.0.1:{port}").parse().unwrap(), 1);
    f(&mut cfg);
    Arc::new(Backend::standalone("chat", &cfg))
}

fn report(b: &Backend, load: u32, max: Option<u32>) {
    b.set_reported(LoadReport { load, max }, now_ms() + 60_000);
}

#[test]
fn least_reported_load_wins_and_dispatches_count_until_the_next_report() {
    let b = [server(1, |_| {}), server(2, |_| {}), server(3, |_| {})];
    report(&b[0], 50, None);
    report(&b[1], 10, None);
    report(&b[2], 12, None);
    let mut got = Vec::new();
    for _ in 0..4 {
        let (i, how) = choose(&b, Sticky::None).unwrap();
        assert_eq!(how, How::New);
        b[i].count_dispatch();
        got.push(i);
    }
    // 10 → 11 → 12 ties 12 (first wins) → then server 2.
    assert_eq!(got, [1, 1, 1, 2]);
    report(&b[1], 10, None);
    assert_eq!(b[1].pending(), 0, "a report absorbs the pending dispatches");
    assert_eq!(choose(&b, Sticky::None).unwrap().0, 1);
}

#[test]
fn weight_scales_the_load() {
    let b = [server(1, |_| {}), server(2, |c| c.weight = 4)];
    report(&b[0], 10, None);
    report(&b[1], 30, None);
    assert_eq!(choose(&b, Sticky::None).unwrap().0, 1, "30/4 < 10/1");
}

#[test]
fn full_down_and_draining_servers_are_never_named() {
    let b = [
        server(1, |c| c.max_conns = Some(5)),
        server(2, |_| {}),
        server(3, |_| {}),
        server(4, |c| c.backup = true),
    ];
    report(&b[0], 5, None); // at max_conns by its own report
    report(&b[1], 7, Some(8));
    b[1].count_dispatch(); // 7 + 1 pending reaches its max
    b[2].start_draining();
    assert_eq!(why_not(&b[0]), Some(Repin::Full));
    assert_eq!(why_not(&b[1]), Some(Repin::Full));
    assert_eq!(why_not(&b[2]), Some(Repin::Down));
    assert_eq!(choose(&b, Sticky::None), Some((3, How::New)), "the backup");
    report(&b[3], 1, Some(1));
    assert_eq!(choose(&b, Sticky::None), None, "all full or down");
}

#[test]
fn a_pin_holds_while_its_server_can_be_named() {
    let b = [server(1, |_| {}), server(2, |_| {})];
    report(&b[0], 0, None);
    report(&b[1], 99, None);
    assert_eq!(choose(&b, Sticky::Pin(Some(1))), Some((1, How::Pinned)));
    report(&b[1], 99, Some(99));
    assert_eq!(
        choose(&b, Sticky::Pin(Some(1))),
        Some((0, How::Repinned(Repin::Full)))
    );
    assert_eq!(
        choose(&b, Sticky::Pin(None)),
        Some((0, How::Repinned(Repin::Invalid)))
    );
}

#[test]
fn a_hashed_key_keeps_its_server_and_moves_only_when_it_cannot_be_named() {
    let b: Vec<_> = (1..=5).map(|p| server(p, |_| {})).collect();
    for key in 0..200u64 {
        let k = hash64(&key.to_le_bytes(), 0);
        let (first, how) = choose(&b, Sticky::Hash(k)).unwrap();
        assert_eq!(how, How::Hash);
        report(&b[(first + 1) % 5], 1000, None); // load elsewhere moves nothing
        assert_eq!(choose(&b, Sticky::Hash(k)).unwrap().0, first);
        report(&b[first], 1, Some(1));
        let moved = choose(&b, Sticky::Hash(k)).unwrap().0;
        assert_ne!(moved, first);
        report(&b[first], 0, None);
        assert_eq!(
            choose(&b, Sticky::Hash(k)).unwrap().0,
            first,
            "back when it is"
        );
        report(&b[(first + 1) % 5], 0, None);
    }
}

#[test]
fn the_answer_is_the_first_advertised_address_or_addr() {
    let plain = server(7001, |_| {});
    let a = Answer::of(&plain);
    assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 7001));
    assert_eq!(a.addrs, ["127.0.0.1:7001"]);
    let lines = server(7002, |c| {
        c.id = "msg-2".into();
        c.advertise = vec!["[2001:db8::2]:443".into(), "isp2.example.net:8443".into()];
    });
    let a = Answer::of(&lines);
    assert_eq!(a.id, "msg-2");
    assert_eq!((a.host.as_str(), a.port), ("2001:db8::2", 443));
    assert_eq!(a.addrs.len(), 2);
}
