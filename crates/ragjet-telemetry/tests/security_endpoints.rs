//! The `/metrics` endpoint against hostile clients: it binds loopback
//! unless told otherwise; garbage, oversized heads, request smuggling
//! shapes, slowloris drips and a connection flood each concern only their
//! own connections, and a normal scrape works after every one of them (the
//! process neither crashes nor wedges).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::scrape;
use ragjet_telemetry::{build_recorder, MetricsServer, TelemetryConfig, DEFAULT_METRICS_PORT};

fn server() -> MetricsServer {
    let (_recorder, handle) = build_recorder().unwrap();
    MetricsServer::start("127.0.0.1:0".parse().unwrap(), handle).unwrap()
}

/// Sends `request` and returns what comes back before the server closes
/// (empty if it closes without answering).
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before a large request is all sent.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

#[test]
fn the_endpoint_binds_loopback_by_default() {
    let c = TelemetryConfig::default();
    assert_eq!(
        c.metrics_addr,
        Some(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            DEFAULT_METRICS_PORT
        )))
    );
    let c = TelemetryConfig::default().with_metrics_port(0);
    assert!(c.metrics_addr.unwrap().ip().is_loopback());
    // A wider address only when the caller names one.
    let wide: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let c = TelemetryConfig {
        metrics_addr: Some(wide),
        ..TelemetryConfig::default()
    };
    assert_eq!(c.metrics_addr, Some(wide));
}

#[test]
fn malformed_requests_are_refused_and_scrapes_go_on() {
    let server = server();
    let addr = server.local_addr();
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary garbage", b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec()),
        ("empty head", b"\r\n\r\n".to_vec()),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("unknown version", b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        (
            "40 KiB request line",
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(40 << 10)).into_bytes(),
        ),
        (
            "20 KiB header",
            format!("GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(20 << 10))
                .into_bytes(),
        ),
        (
            "200 headers",
            format!("GET /metrics HTTP/1.1\r\n{many_headers}\r\n").into_bytes(),
        ),
        (
            "bad header name",
            b"GET /metrics HTTP/1.1\r\nBad Name\x01: v\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header value",
            b"GET /metrics HTTP/1.1\r\nHost: a\x00b\r\n\r\n".to_vec(),
        ),
        (
            "non-UTF-8 path",
            b"GET /\xff\xfe\xfd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "absurd Content-Length",
            b"GET /metrics HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
        ),
        (
            "Content-Length and chunked together",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\nzzzz\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "broken chunk size",
            b"POST /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZZZZZZZZZZZ\r\n".to_vec(),
        ),
        (
            "a body announced and never sent",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 1048576\r\n\r\nabc".to_vec(),
        ),
        (
            "a megabyte of newlines",
            vec![b'\n'; 1 << 20],
        ),
    ];
    for (what, request) in &cases {
        let r = raw(addr, request);
        let s = status(&r);
        // A 4xx, or the connection closed without an answer; never a 5xx,
        // and never metrics for a request the server could not parse.
        assert!(s.is_empty() || s.starts_with("HTTP/1.1 4"), "{what}: {s:?}");
        eprintln!("{what}: {}", if s.is_empty() { "closed" } else { s });
        scrape(addr); // asserts 200 and a valid exposition
    }
}

/// Drips a request head one byte at a time until the server hangs up;
/// returns how long that took (`None`: still connected after `limit`).
fn drip(addr: SocketAddr, every: Duration, limit: Duration) -> Option<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(every)).unwrap();
    let t0 = Instant::now();
    let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    if s.write_all(head).is_err() {
        return Some(t0.elapsed());
    }
    let mut buf = [0u8; 256];
    while t0.elapsed() < limit {
        if s.write_all(b"a").is_err() {
            return Some(t0.elapsed());
        }
        match s.read(&mut buf) {
            // Closed, or answered (a 408) and closing.
            Ok(_) => return Some(t0.elapsed()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(t0.elapsed()),
        }
    }
    None
}

/// Slowloris clients are cut off by the request-head deadline (5 s) and
/// never hold up a scrape; a flood of idle connections beyond the cap
/// (128) is refused at the door and the endpoint recovers by itself.
#[test]
fn slow_and_idle_clients_are_cut_off() {
    let server = server();
    let addr = server.local_addr();
    let limit = Duration::from_secs(30);
    let drips: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || drip(addr, Duration::from_millis(200), limit)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    scrape(addr);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let mut slowest = Duration::ZERO;
    for d in drips {
        let cut = d
            .join()
            .unwrap()
            .expect("a dripping client was never cut off");
        slowest = slowest.max(cut);
    }
    // The head deadline, not the 15 s connection deadline, ends them.
    assert!(slowest < Duration::from_secs(10), "{slowest:?}");
    eprintln!("slowloris: 16 dripping clients cut off after at most {slowest:?}");

    // Idle connections past the cap: the extra ones are closed at once.
    let idle: Vec<TcpStream> = (0..160)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    loop {
        let answered = TcpStream::connect(addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.starts_with("HTTP/1.1 200").then_some(())
        });
        if answered.is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(12),
            "no scrape served while idle connections were held"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "connection flood: 160 idle connections held, scrapes served again after {:?}",
        t0.elapsed()
    );
    drop(idle);
    scrape(addr);
}
