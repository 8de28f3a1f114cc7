//! `/metrics` over real HTTP, parsed with a Prometheus text parser, using a
//! local recorder (no globals: these tests run in parallel).

mod common;

use common::{find, http_get, scalar, scrape};
use prometheus_parse::Value;
use ragjet_telemetry::metrics::{self as m, QueryStatus};
use ragjet_telemetry::{build_recorder, MetricsServer};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn scrape_reports_known_operations() {
    let (recorder, handle) = build_recorder().unwrap();
    let server = MetricsServer::start(any_port(), handle).unwrap();
    assert_ne!(server.local_addr().port(), 0, "the real port is reported");

    metrics::with_local_recorder(&recorder, || {
        for ms in [3, 30, 300] {
            m::record_query(QueryStatus::Ok, Duration::from_millis(ms));
        }
        m::record_query(QueryStatus::Error, Duration::from_secs(4));
        m::record_embedding_batch("minilm", 32, 4100);
        m::record_embedding_batch("minilm", 8, 900);
        m::record_tokens("gpt", 120, 40);
        m::set_index_size("docs", 1234);
        m::record_index_operation("docs", "search");
        m::record_index_operation("docs", "search");
        m::record_cache_request("embedding", "l1", "hit");
        m::record_feedback(0.75);
        m::record_cost_microdollars("gpt", 250_000);
        m::record_cost_microdollars("gpt", 500_000);
    });

    // Spin before the scrape so the process's CPU counter, which counts in
    // 10 ms ticks, must be above zero even on a loaded machine.
    let start = Instant::now();
    let mut spin = 0u64;
    while start.elapsed() < Duration::from_millis(200) {
        spin = std::hint::black_box(spin.wrapping_add(1));
    }
    let s = scrape(server.local_addr());
    let ok = [("status", "ok")];
    assert_eq!(scalar(&s, "ragjet_queries_total", &ok), 3.0);
    assert_eq!(
        scalar(&s, "ragjet_queries_total", &[("status", "error")]),
        1.0
    );
    assert_eq!(scalar(&s, "ragjet_query_duration_seconds_count", &ok), 3.0);
    assert!((scalar(&s, "ragjet_query_duration_seconds_sum", &ok) - 0.333).abs() < 1e-9);
    let Some(Value::Histogram(buckets)) =
        find(&s, "ragjet_query_duration_seconds", &ok).map(|x| &x.value)
    else {
        panic!("query duration is not a histogram");
    };
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).map(|b| b.count);
    // Buckets come from the catalogue: 1 ms .. 10 s.
    assert_eq!(at(0.001), Some(0.0));
    assert_eq!(at(0.005), Some(1.0));
    assert_eq!(at(0.05), Some(2.0));
    assert_eq!(at(0.5), Some(3.0));
    assert_eq!(at(10.0), Some(3.0));

    let minilm = [("model", "minilm")];
    assert_eq!(scalar(&s, "ragjet_embedding_batches_total", &minilm), 2.0);
    assert_eq!(scalar(&s, "ragjet_embedding_tokens_total", &minilm), 5000.0);
    assert_eq!(scalar(&s, "ragjet_embedding_batch_size_sum", &minilm), 40.0);
    assert_eq!(
        scalar(
            &s,
            "ragjet_tokens_total",
            &[("model", "gpt"), ("direction", "in")]
        ),
        120.0
    );
    assert_eq!(
        scalar(
            &s,
            "ragjet_tokens_total",
            &[("model", "gpt"), ("direction", "out")]
        ),
        40.0
    );
    assert_eq!(
        scalar(&s, "ragjet_index_size", &[("namespace", "docs")]),
        1234.0
    );
    assert_eq!(
        scalar(
            &s,
            "ragjet_index_operations_total",
            &[("namespace", "docs"), ("kind", "search")]
        ),
        2.0
    );
    assert_eq!(
        scalar(
            &s,
            "ragjet_cache_requests_total",
            &[("cache", "embedding"), ("tier", "l1"), ("result", "hit")]
        ),
        1.0
    );
    assert_eq!(scalar(&s, "ragjet_feedback_score_count", &[]), 1.0);
    assert_eq!(
        scalar(&s, "ragjet_cost_microdollars_total", &[("model", "gpt")]),
        750_000.0
    );

    // Help text comes from the catalogue.
    assert_eq!(
        s.docs.get("ragjet_queries_total").map(String::as_str),
        Some(m::find(m::QUERIES_TOTAL).unwrap().help)
    );
    // Process figures are read at scrape time.
    #[cfg(target_os = "linux")]
    {
        assert!(scalar(&s, "process_resident_memory_bytes", &[]) > 1e6);
        assert!(scalar(&s, "process_cpu_seconds_total", &[]) > 0.0);
    }
}

#[test]
fn counters_grow_between_scrapes() {
    let (recorder, handle) = build_recorder().unwrap();
    let server = MetricsServer::start(any_port(), handle).unwrap();
    let addr = server.local_addr();
    let bump = |n| {
        metrics::with_local_recorder(&recorder, || {
            for _ in 0..n {
                m::record_query(QueryStatus::Ok, Duration::from_millis(1));
            }
        })
    };
    bump(2);
    assert_eq!(
        scalar(&scrape(addr), "ragjet_queries_total", &[("status", "ok")]),
        2.0
    );
    bump(5);
    let s = scrape(addr);
    assert_eq!(scalar(&s, "ragjet_queries_total", &[("status", "ok")]), 7.0);
    assert_eq!(
        scalar(
            &s,
            "ragjet_query_duration_seconds_count",
            &[("status", "ok")]
        ),
        7.0
    );
}

#[test]
fn recorders_are_independent() {
    let (a, ha) = build_recorder().unwrap();
    let (_b, hb) = build_recorder().unwrap();
    metrics::with_local_recorder(&a, || m::record_feedback(1.0));
    assert!(ha.render().contains("ragjet_feedback_score_count 1"));
    assert!(!hb.render().contains("ragjet_feedback_score"));
}

#[test]
fn other_paths_and_methods_are_refused() {
    let (_recorder, handle) = build_recorder().unwrap();
    let server = MetricsServer::start(any_port(), handle).unwrap();
    let (status, _) = http_get(server.local_addr(), "/nope");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http_get(server.local_addr(), "/metrics?x=1");
    assert_eq!(status, "HTTP/1.1 200 OK");
}

/// A client that connects and sends nothing, and one that sends an endless
/// header line, must not hold up a scrape (the former serial server read
/// each client to the end of its headers before accepting the next).
#[test]
fn silent_and_endless_clients_do_not_block_a_scrape() {
    let (_recorder, handle) = build_recorder().unwrap();
    let server = MetricsServer::start(any_port(), handle).unwrap();
    let addr = server.local_addr();

    let silent = TcpStream::connect(addr).unwrap();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let endless = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Endless: ")
            .unwrap();
        let chunk = [b'a'; 1024];
        let mut sent = 0usize;
        loop {
            if s.write_all(&chunk).is_err() {
                // The server gave up on this client and closed it (it may
                // do so before 64 KiB when the socket buffers are small).
                let _ = sent_tx.send(());
                return sent;
            }
            sent += chunk.len();
            if sent == 64 * 1024 {
                let _ = sent_tx.send(());
            }
            if sent > 1 << 30 {
                return sent; // never cut off: the assertion below fails
            }
        }
    });
    // The endless client is well into its header (or already cut off)
    // before we scrape.
    sent_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let t0 = Instant::now();
    scrape(addr); // asserts 200 OK and a valid exposition
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");

    // The endless header is cut off at the request-head cap, well before a
    // gigabyte (kernel socket buffers absorb some megabytes at most).
    let sent = endless.join().unwrap();
    assert!(sent < 256 << 20, "endless header accepted: {sent} bytes");
    drop(silent);
}

#[test]
fn a_taken_port_is_an_error() {
    let (_r, handle) = build_recorder().unwrap();
    let first = MetricsServer::start(any_port(), handle.clone()).unwrap();
    let err = MetricsServer::start(first.local_addr(), handle).unwrap_err();
    assert!(
        matches!(err, ragjet_telemetry::TelemetryError::Bind { .. }),
        "{err}"
    );
}

#[test]
fn dropping_the_server_frees_the_port() {
    let (_r, handle) = build_recorder().unwrap();
    let server = MetricsServer::start(any_port(), handle.clone()).unwrap();
    let addr = server.local_addr();
    drop(server);
    let again = MetricsServer::start(addr, handle).expect("port free after drop");
    assert_eq!(again.local_addr(), addr);
}

#[cfg(feature = "cuda")]
#[test]
fn gpu_gauges_are_served_with_cuda() {
    let (recorder, handle) = build_recorder().unwrap();
    metrics::with_local_recorder(&recorder, || m::set_gpu_memory(0, 1 << 30, 80 << 30));
    let s = common::parse(&handle.render());
    assert_eq!(
        scalar(&s, m::GPU_MEMORY_USED_BYTES, &[("device", "0")]),
        (1u64 << 30) as f64
    );
    assert_eq!(
        scalar(&s, m::GPU_MEMORY_TOTAL_BYTES, &[("device", "0")]),
        (80u64 << 30) as f64
    );
}
