//! The controls wired into the engine (`[control]`) and the autoscaling
//! advice endpoint. The state machines themselves are tested with a manual
//! clock in `src/control/*`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ragjet::control::{AdviceServer, BreakerState, ScalePolicy, ScaleSignals};
use ragjet::{Document, Error, ErrorKind, QueryOptions, Refusal};

#[test]
fn rate_limits_and_the_breaker_guard_the_engine() {
    let e = common::builder()
        .configure(|c| {
            c.control.rate_limit.enabled = true;
            // Effectively no refill during the test: the burst is all.
            c.control.rate_limit.queries_per_second = 1e-6;
            c.control.rate_limit.query_burst = 3.0;
            c.control.rate_limit.ingests_per_second = 1e-6;
            c.control.rate_limit.ingest_burst = 1.0;
            c.control.breaker.enabled = true;
            c.control.breaker.consecutive_failures = 2;
            c.control.breaker.open_seconds = 3600;
        })
        .build()
        .unwrap();
    e.ingest(common::corpus()[..3].to_vec()).unwrap();
    let err = e
        .ingest(vec![Document::new("x", "one more document")])
        .unwrap_err();
    assert!(
        matches!(err, Error::Overloaded(Refusal::RateLimited { .. })),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Overloaded);

    let options = QueryOptions::new().top_k(2);
    e.query("parents class", &options).unwrap();
    // Bad input is refused without counting against the model.
    e.query("", &options).unwrap_err();
    assert_eq!(e.circuit_breaker().unwrap().state(), BreakerState::Closed);
    // The model failing twice (reported by whoever saw it) opens the circuit:
    // the next query fails fast, before embedding anything.
    let b = e.circuit_breaker().unwrap();
    b.acquire().unwrap().failure();
    b.acquire().unwrap().failure();
    let err = e.query("parents class", &options).unwrap_err();
    assert!(
        matches!(err, Error::Overloaded(Refusal::CircuitOpen { .. })),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert!(
        err.to_string().contains("circuit engine.model is open"),
        "{err}"
    );
    // Three queries admitted by the limiter so far; the fourth is refused.
    let err = e.query("parents class", &options).unwrap_err();
    assert!(
        matches!(err, Error::Overloaded(Refusal::RateLimited { .. })),
        "{err}"
    );
}

fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before a large body is all sent.
    let _ = s.write_all(request);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn post(addr: SocketAddr, body: &str) -> String {
    let req = format!(
        "POST /scale HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(addr, req.as_bytes())
}

#[test]
fn advice_endpoint_answers_and_survives_malformed_requests() {
    let server = AdviceServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ScalePolicy::default(),
        || {
            Some(ScaleSignals {
                replicas: 2,
                queue_depth: 0,
                p95_ms: 120.0,
                utilisation: 0.95,
                error_rate: 0.0,
                seconds_since_last_scale: None,
            })
        },
    )
    .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    let r = http(addr, b"GET /scale HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"action\":\"up\""), "{r}");
    assert!(r.contains("\"desired_replicas\":3"), "{r}");

    let r = post(
        addr,
        r#"{"signals":{"replicas":4,"queue_depth":0,"p95_ms":80,"utilisation":0.1,"error_rate":0}}"#,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\"action\":\"down\""), "{r}");

    for (request, status) in [
        (post(addr, "{not json"), "400"),
        (post(addr, r#"{"signals":{"replicas":0}}"#), "400"),
        (
            post(
                addr,
                r#"{"signals":{"replicas":1,"queue_depth":0,"p95_ms":1,"utilisation":7,"error_rate":0}}"#,
            ),
            "400",
        ),
        (post(addr, &"x".repeat(200_000)), "413"),
        (
            http(addr, b"DELETE /scale HTTP/1.1\r\nHost: x\r\n\r\n"),
            "405",
        ),
        (http(addr, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), "404"),
    ] {
        assert!(
            request.starts_with(&format!("HTTP/1.1 {status}")),
            "expected {status}: {request}"
        );
    }
    // Garbage and a head over the limit concern only their own connection.
    http(addr, b"\x00\x01garbage\r\n\r\n");
    http(
        addr,
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40_000)).as_bytes(),
    );
    let r = http(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("ok\n"), "{r}");
}

#[test]
fn advice_endpoint_without_signals_or_with_a_failing_source() {
    let quiet = AdviceServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ScalePolicy::default(),
        || None,
    )
    .unwrap();
    let r = http(
        quiet.local_addr(),
        b"GET /scale HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    let failing = AdviceServer::start(
        "127.0.0.1:0".parse().unwrap(),
        ScalePolicy::default(),
        || panic!("source broke"),
    )
    .unwrap();
    let r = http(
        failing.local_addr(),
        b"GET /scale HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 500"), "{r}");
    let r = http(
        failing.local_addr(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// `examples/operations.rs` runs as documented (`cargo run -p ragjet
/// --example operations`) and shows each control doing its job.
#[test]
fn the_operations_example_runs() {
    use std::process::{Command, Stdio};
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "run",
        "--offline",
        "-q",
        "-p",
        "ragjet",
        "--example",
        "operations",
    ])
    .current_dir(root)
    .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo run --example operations");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for needle in [
        "tenant-a sent 5 at once, 3 admitted",
        "breaker: open after 4 calls reached the LLM",
        "dead letters: 2 re-driven, 0 failed, 0 left; breaker closed",
        "-> small-llm",
        "-> large-llm",
        "significant: true",
        "holding [\"e5-base\", \"minilm\"]",
        "\"action\":\"up\"",
        "ragjet_circuit_state{breaker=\"llm\"} 0",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
}
