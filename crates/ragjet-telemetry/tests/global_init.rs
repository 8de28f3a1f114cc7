//! `Telemetry::init` installs process-wide globals, so it is tested in its
//! own test binary (its own process), in a single test.

mod common;

use common::{http_get, scalar, scrape};
use ragjet_telemetry::metrics::{self as m, QueryStatus};
use ragjet_telemetry::{LogFormat, Telemetry, TelemetryConfig, TelemetryError};
use std::time::Duration;

#[test]
fn init_is_idempotent_and_serves_metrics() {
    // A bad filter fails cleanly and installs nothing.
    let err = Telemetry::init(TelemetryConfig::default().with_log_filter("=[bad")).unwrap_err();
    assert!(matches!(err, TelemetryError::InvalidFilter { .. }), "{err}");

    let guard = Telemetry::init(
        TelemetryConfig::default()
            .with_metrics_port(0)
            .with_log_format(LogFormat::Json)
            .with_log_filter("warn"),
    )
    .unwrap();
    let addr = guard.metrics_addr().expect("endpoint running");
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    // A second init returns the same installation, whatever its config.
    let again = Telemetry::init(TelemetryConfig::default().with_metrics_port(1)).unwrap();
    assert_eq!(again.metrics_addr(), Some(addr));
    drop(again);

    // The global recorder is live: plain facade calls reach /metrics.
    m::record_query(QueryStatus::Ok, Duration::from_millis(12));
    m::record_query(QueryStatus::Ok, Duration::from_millis(40));
    let s = scrape(addr);
    assert_eq!(scalar(&s, "ragjet_queries_total", &[("status", "ok")]), 2.0);
    assert!(guard
        .metrics()
        .unwrap()
        .render()
        .contains("ragjet_queries_total"));

    // The tracing subscriber is the global one now.
    assert!(tracing::dispatcher::has_been_set());
    tracing::warn!("telemetry test log line");

    guard.flush().unwrap();
    let (status, _) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
}
