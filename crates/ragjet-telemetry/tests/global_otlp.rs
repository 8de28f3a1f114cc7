//! `Telemetry::init` with OTLP export: dropping the guard flushes batched
//! spans to the collector. Globals, so its own test binary.
#![cfg(feature = "otlp")]

mod common;

use ragjet_telemetry::otlp::OtlpConfig;
use ragjet_telemetry::{spans, LogFormat, Telemetry, TelemetryConfig};
use std::time::Duration;

#[test]
fn dropping_the_guard_flushes_spans() {
    let (addr, rx) = common::otlp_receiver();
    let mut config = TelemetryConfig::default()
        .with_log_format(LogFormat::Off)
        .with_otlp(OtlpConfig {
            endpoint: format!("http://{addr}/v1/traces"),
            sampling_ratio: 1.0,
            timeout: Duration::from_secs(5),
        });
    config.install_metrics = false;
    let guard = Telemetry::init(config).unwrap();
    assert_eq!(guard.metrics_addr(), None);
    {
        let q = spans::query("flush-test-namespace", 3);
        let _g = q.enter();
    }
    // The batch processor waits up to 5 s before exporting on its own;
    // nothing has arrived yet, and the drop below must push it out.
    assert!(rx.try_recv().is_err());
    drop(guard);
    let (_, body) = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("flushed on drop");
    assert!(String::from_utf8_lossy(&body).contains("flush-test-namespace"));
}
