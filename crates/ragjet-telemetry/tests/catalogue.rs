//! `docs/metrics.md` must be exactly what the catalogue generates.

use ragjet_telemetry::metrics::{catalogue_markdown, full_catalogue};
use std::path::PathBuf;

#[test]
fn docs_table_matches_catalogue() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md");
    let generated = catalogue_markdown();
    if std::env::var_os("RAGJET_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/metrics.md");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/metrics.md is out of date; run RAGJET_UPDATE_DOCS=1 cargo test -p ragjet-telemetry --test catalogue"
    );
    // Every metric has a row, whatever the features of this build.
    for m in full_catalogue() {
        assert!(on_disk.contains(&format!("| `{}` |", m.name)), "{}", m.name);
    }
}

#[test]
fn agreed_names_are_present() {
    use ragjet_telemetry::metrics::find;
    for (name, labels) in [
        ("ragjet_index_size", &["namespace"][..]),
        ("ragjet_index_operations_total", &["namespace", "kind"]),
        ("ragjet_cache_requests_total", &["cache", "tier", "result"]),
        ("ragjet_cache_evictions_total", &["cache", "tier"]),
        ("ragjet_cache_bytes", &["cache", "tier"]),
        ("ragjet_queries_total", &["status"]),
        ("ragjet_tokens_total", &["model", "direction"]),
        ("ragjet_embedding_tokens_total", &["model"]),
        ("ragjet_cost_microdollars_total", &["model"]),
        ("ragjet_cache_rejected_total", &["cache", "tier", "reason"]),
    ] {
        let def = find(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(def.labels, labels, "{name}");
    }
}
