//! The operations files of `docs/ops` (`docs/operations.md`) against the
//! real metric catalogue and Prometheus's own tools, so a renamed metric or
//! label, or a rule that no longer fires, fails here instead of in
//! someone's monitoring:
//!
//! - every metric and label named by `alerts.yml` and by the Grafana
//!   dashboard's queries is in [`full_catalogue`];
//! - `promtool check rules` and `promtool test rules` (the unit cases of
//!   `alerts_test.yml`) pass on `alerts.yml`, and `promtool check config` on
//!   `prometheus.yml`; each dashboard query parses as PromQL;
//! - both checks refuse a deliberately broken copy.
//!
//! A missing promtool fails the promtool tests; `RAGJET_SKIP_PROMTOOL=1`
//! skips them with a notice (as in `promtool.rs`). `RAGJET_PROMTOOL` names
//! the binary when it is not `promtool` on `PATH`.

mod common;

use ragjet_telemetry::metrics::{full_catalogue, MetricKind};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ops")
}

fn read(name: &str) -> String {
    let path = ops_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(promtool: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool")
}

fn describe(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch directory of this process, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ragjet-ops-docs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Identifiers of a PromQL expression outside quoted strings, each with
/// the text that follows it (to find its `{...}` selector).
fn identifiers(expr: &str) -> Vec<(String, &str)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'$' {
            // A Grafana variable ($job, $__rate_interval).
            i += 1;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            out.push((expr[start..i].to_string(), &expr[i..]));
        } else {
            i += 1;
        }
    }
    out
}

/// Label keys of a selector `{a="x", b=~"y"}` at the start of `rest`.
fn selector_keys(rest: &str) -> Vec<String> {
    let Some(body) = rest.strip_prefix('{') else {
        return Vec::new();
    };
    let body = &body[..body.find('}').unwrap_or(body.len())];
    identifiers(body).into_iter().map(|(k, _)| k).collect()
}

/// Label keys of every `by (...)` / `without (...)` clause.
fn grouping_keys(expr: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (word, rest) in identifiers(expr) {
        if word == "by" || word == "without" {
            if let Some(body) = rest.trim_start().strip_prefix('(') {
                let body = &body[..body.find(')').unwrap_or(body.len())];
                keys.extend(identifiers(body).into_iter().map(|(k, _)| k));
            }
        }
    }
    keys
}

/// What is wrong with the metric and label names of `expr`: names that are
/// not in the catalogue, or labels no metric of the expression carries.
/// Returns the metrics it names.
fn check_expr(expr: &str, problems: &mut Vec<String>) -> BTreeSet<&'static str> {
    // Labels Prometheus adds to every series, and histograms' `le`.
    let scrape_labels = ["job", "instance", "service", "pod", "kubernetes_namespace"];
    let mut named = BTreeSet::new();
    let mut labels: BTreeSet<&str> = scrape_labels.into_iter().collect();
    for (word, rest) in identifiers(expr) {
        if !(word.starts_with("ragjet_") || word.starts_with("process_")) {
            continue;
        }
        let def = full_catalogue().find(|d| {
            word == d.name
                || (d.kind == MetricKind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| word.strip_suffix(s) == Some(d.name)))
        });
        let Some(def) = def else {
            problems.push(format!("`{word}` is not in the metric catalogue: {expr}"));
            continue;
        };
        named.insert(def.name);
        let mut own: BTreeSet<&str> = def.labels.iter().copied().collect();
        own.extend(scrape_labels);
        if word.ends_with("_bucket") {
            own.insert("le");
        }
        for key in selector_keys(rest) {
            if !own.contains(key.as_str()) {
                problems.push(format!("`{word}` has no label `{key}`: {expr}"));
            }
        }
        labels.extend(own);
    }
    for key in grouping_keys(expr) {
        if !labels.contains(key.as_str()) {
            problems.push(format!(
                "no metric of the expression has label `{key}`: {expr}"
            ));
        }
    }
    named
}

/// Every `expr:` of a Prometheus rules file (block scalars included).
fn rule_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, value)) = line.split_once("expr:") else {
            continue;
        };
        if !indent.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let value = value.trim();
        if value == "|" || value == ">" {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let depth = next.len() - next.trim_start().len();
                if !next.trim().is_empty() && depth <= indent.len() {
                    break;
                }
                block.push_str(next.trim());
                block.push('\n');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(value.to_string());
        }
    }
    exprs
}

/// Every PromQL query of a Grafana dashboard: panel targets' `expr` and
/// template variables' `query`.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone())
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

/// A dashboard query as plain PromQL: Grafana's variables replaced by
/// values Prometheus accepts, `label_values(m, l)` by its selector `m`.
fn as_promql(expr: &str) -> String {
    let e = expr.replace("$__rate_interval", "5m").replace("$job", ".+");
    match e.strip_prefix("label_values(") {
        Some(rest) => rest.split(',').next().unwrap_or(rest).trim().to_string(),
        None => e,
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("grafana-dashboard.json")).expect("grafana-dashboard.json is JSON")
}

#[test]
fn the_name_check_refuses_unknown_metrics_and_labels() {
    for bad in [
        "rate(ragjet_query_latency_seconds_bucket[5m])",
        "rate(ragjet_queries_total{result=\"error\"}[5m])",
        "sum by (tenant) (rate(ragjet_queries_total[5m]))",
        "ragjet_queries_total_bucket",
    ] {
        let mut problems = Vec::new();
        check_expr(bad, &mut problems);
        assert!(!problems.is_empty(), "accepted {bad}");
    }
    let mut problems = Vec::new();
    let named = check_expr(
        "histogram_quantile(0.95, sum by (job, le) (rate(ragjet_query_duration_seconds_bucket{status=\"ok\", job=~\"$job\"}[$__rate_interval])))",
        &mut problems,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["ragjet_query_duration_seconds"]
    );
}

#[test]
fn alerts_and_dashboard_name_only_catalogued_metrics() {
    let mut problems = Vec::new();

    let alerts = rule_exprs(&read("alerts.yml"));
    assert!(alerts.len() >= 10, "found only {} rules", alerts.len());
    let mut alert_metrics = BTreeSet::new();
    for e in &alerts {
        alert_metrics.extend(check_expr(e, &mut problems));
    }
    // The SLOs docs/operations.md promises an alert for.
    for must in [
        "ragjet_query_duration_seconds",
        "ragjet_queries_total",
        "ragjet_cache_requests_total",
        "ragjet_queue_rejected_total",
        "ragjet_queue_depth",
        "ragjet_circuit_state",
        "ragjet_cost_microdollars_total",
    ] {
        assert!(alert_metrics.contains(must), "no alert on {must}");
    }

    let mut queries = Vec::new();
    dashboard_exprs(&dashboard(), &mut queries);
    assert!(queries.len() >= 20, "found only {} queries", queries.len());
    let mut panel_metrics = BTreeSet::new();
    for q in &queries {
        let named = check_expr(q, &mut problems);
        if named.is_empty() {
            problems.push(format!("dashboard query names no ragjet metric: {q}"));
        }
        panel_metrics.extend(named);
    }
    assert!(panel_metrics.len() >= 15, "{panel_metrics:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_is_a_grafana_dashboard() {
    let d = dashboard();
    assert!(d["title"].is_string() && d["uid"].is_string());
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {id} is wider than the grid");
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "panel {id} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {id}");
            }
        }
    }
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job"]);
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) =
        common::promtool("the alert rules, their unit tests and the dashboard's queries")
    else {
        return;
    };
    let dir = ops_dir();
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = run(&promtool, args, &dir);
        assert!(
            out.status.success(),
            "promtool {args:?} failed:\n{}",
            describe(&out)
        );
    }

    // The unit cases can fail: with a metric renamed in the rules, the
    // breaker's alert never fires. (One short case, the breaker's, so the
    // check costs milliseconds; it passes on the real rules first.)
    let case = read("alerts_test.yml");
    let start = case
        .find("  # The model's breaker opens")
        .expect("the breaker case");
    let end = start + case[start..].find("\n\n").expect("the case ends");
    let short = format!(
        "rule_files:\n  - alerts.yml\nevaluation_interval: 1m\ntests:\n{}\n",
        &case[start..end]
    );
    let broken = scratch("broken");
    std::fs::write(broken.join("alerts_test.yml"), short).unwrap();
    std::fs::write(broken.join("alerts.yml"), read("alerts.yml")).unwrap();
    let out = run(&promtool, &["test", "rules", "alerts_test.yml"], &broken);
    assert!(out.status.success(), "{}", describe(&out));
    std::fs::write(
        broken.join("alerts.yml"),
        read("alerts.yml").replace("ragjet_circuit_state", "ragjet_circuit_status"),
    )
    .unwrap();
    let out = run(&promtool, &["test", "rules", "alerts_test.yml"], &broken);
    assert!(
        !out.status.success(),
        "promtool test rules passed a renamed metric:\n{}",
        describe(&out)
    );
    assert!(
        describe(&out).contains("RagjetCircuitOpen"),
        "{}",
        describe(&out)
    );
    std::fs::remove_dir_all(&broken).unwrap();
}

#[test]
fn dashboard_queries_parse_as_promql() {
    let Some(promtool) =
        common::promtool("the alert rules, their unit tests and the dashboard's queries")
    else {
        return;
    };
    let mut queries = Vec::new();
    dashboard_exprs(&dashboard(), &mut queries);
    // Each query as a recording rule: `promtool check rules` parses it.
    let rules = |qs: &[String]| {
        let mut y = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, q) in qs.iter().enumerate() {
            let q = serde_json::to_string(&as_promql(q)).unwrap();
            y.push_str(&format!(
                "      - record: dashboard:query_{i}\n        expr: {q}\n"
            ));
        }
        y
    };
    let dir = scratch("dashboard");
    std::fs::write(dir.join("dashboard_rules.yml"), rules(&queries)).unwrap();
    let out = run(&promtool, &["check", "rules", "dashboard_rules.yml"], &dir);
    assert!(
        out.status.success(),
        "a dashboard query is not PromQL:\n{}",
        describe(&out)
    );
    // And the parse can fail.
    std::fs::write(
        dir.join("bad_rules.yml"),
        rules(&["sum by (job (rate(ragjet_queries_total[5m]))".to_string()]),
    )
    .unwrap();
    let out = run(&promtool, &["check", "rules", "bad_rules.yml"], &dir);
    assert!(!out.status.success(), "promtool accepted broken PromQL");
    std::fs::remove_dir_all(&dir).unwrap();
}
