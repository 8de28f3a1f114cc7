//! `promtool check metrics` (Prometheus's own linter, Debian package
//! `prometheus`) on a real scrape in which every catalogued metric has a
//! value, so a name or type that breaks Prometheus's conventions fails here.
//!
//! A missing promtool fails the test; `RAGJET_SKIP_PROMTOOL=1` skips it with
//! a notice, for a machine that cannot install it. `RAGJET_PROMTOOL` names
//! the binary when it is not `promtool` on `PATH`.

mod common;

use metrics::Label;
use ragjet_telemetry::metrics::{self as m, catalogue, MetricKind, QueryStatus};
use ragjet_telemetry::{build_recorder, MetricsServer};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn check_metrics(promtool: &str, text: &str) -> Output {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_full_scrape_passes_promtool_check_metrics() {
    let Some(promtool) = common::promtool("the /metrics output against Prometheus's naming rules")
    else {
        return;
    };

    // The checker itself must be able to fail: the very slip this test was
    // written for (a gauge named like a counter) is refused.
    let slip = check_metrics(
        &promtool,
        "# HELP ragjet_cost_usd_total Spend.\n# TYPE ragjet_cost_usd_total gauge\nragjet_cost_usd_total 0.75\n",
    );
    assert!(
        !slip.status.success(),
        "promtool accepted a gauge ending in _total: {slip:?}"
    );

    let (recorder, handle) = build_recorder().unwrap();
    let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), handle).unwrap();
    metrics::with_local_recorder(&recorder, || {
        // Every catalogued metric, whatever records it in production.
        for def in catalogue().filter(|d| !d.on_scrape) {
            let labels: Vec<Label> = def.labels.iter().map(|k| Label::new(*k, "x")).collect();
            match def.kind {
                MetricKind::Counter => metrics::counter!(def.name, labels).increment(3),
                MetricKind::Gauge => metrics::gauge!(def.name, labels).set(2.5),
                MetricKind::Histogram => {
                    metrics::histogram!(def.name, labels).record(def.buckets[def.buckets.len() / 2])
                }
            }
        }
        // And the helpers, with their real label values.
        m::record_query(QueryStatus::Ok, Duration::from_millis(12));
        m::record_query(QueryStatus::Error, Duration::from_secs(2));
        m::record_embedding_batch("all-MiniLM-L6-v2", 32, 4000);
        m::record_tokens("gpt", 100, 20);
        m::record_cost_microdollars("gpt", 1234);
        m::record_feedback(1.0);
        m::set_index_size("docs", 10);
        m::record_index_operation("docs", "add");
        m::record_cache_request("embedding", "l1", "hit");
        m::record_cache_rejected("embedding", "l3", "auth");
    });

    let (status, body) = common::http_get(server.local_addr(), "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for def in catalogue().filter(|d| !d.on_scrape) {
        assert!(
            body.contains(&format!("# TYPE {} {}\n", def.name, def.kind.as_str())),
            "{} missing from the scrape:\n{body}",
            def.name
        );
    }
    #[cfg(target_os = "linux")]
    for name in [
        m::PROCESS_CPU_SECONDS_TOTAL,
        m::PROCESS_RESIDENT_MEMORY_BYTES,
    ] {
        assert!(body.contains(&format!("\n{name} ")), "{name} missing");
    }

    let out = check_metrics(&promtool, &body);
    assert!(
        out.status.success(),
        "promtool check metrics refused the scrape:\n{}{}\n--- scrape ---\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
