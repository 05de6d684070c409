//! The PROXY protocol on a TCP (`mode = "tcp"`) listener, both ways, against
//! Debian's HAProxy: a client on 127.0.0.4 connects to HAProxy `mode tcp`
//! with `send-proxy-v2`, which connects to latch's TCP listener
//! (`proxy_protocol = true`) from 127.0.0.1; latch connects to its server
//! with `send_proxy` (v1 and v2), and that server is HAProxy `accept-proxy`
//! answering with the source address it was given. The client's own
//! address must come out at the far end: latch read it from one header
//! and wrote it into the next.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::haproxy::{connect_from, spawn_haproxy};
use support::{parse_response, spawn_lb, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_reads_one_header_and_writes_the_next() {
    let says_src = spawn_haproxy(1, |p| {
        format!(
            "frontend says_src\n  mode http\n  bind 127.0.0.1:{} accept-proxy\n  \
             http-request return status 200 content-type text/plain \
             lf-string \"%[src] %[src_port]\"\n",
            p[0]
        )
    })
    .await;
    for version in ["v1", "v2"] {
        let lb = spawn_lb(&format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nmode = \"tcp\"\nupstream = \"app\"\n\
             proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\n\n\
             [upstream.app]\nsend_proxy = \"{version}\"\nservers = [{{ addr = \"{}\" }}]\n",
            says_src.addr(0)
        ))
        .await;
        let front = spawn_haproxy(1, |p| {
            format!(
                "frontend in\n  mode tcp\n  bind 127.0.0.1:{}\n  default_backend latch\n\
                 backend latch\n  mode tcp\n  server latch {} send-proxy-v2\n",
                p[0],
                lb.addr()
            )
        })
        .await;
        let client = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
        let mut s = connect_from(client, front.addr(0)).await;
        let port = s.local_addr().unwrap().port();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        within(
            "the answer through HAProxy, latch and HAProxy",
            s.read_to_end(&mut got),
        )
        .await
        .expect("read");
        let r = parse_response(&got);
        assert_eq!(r.status, StatusCode::OK.as_u16(), "{version}: {r:?}");
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("127.0.0.4 {port}"),
            "send_proxy = {version}"
        );
    }
}
