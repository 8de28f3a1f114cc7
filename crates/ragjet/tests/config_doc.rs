//! `docs/configuration.md` against the real configuration parser, so the
//! reference cannot drift from `EngineConfig`:
//!
//! - every TOML block of the page parses with [`EngineConfig::from_toml_str`];
//! - the block marked `config-doc: defaults` is exactly the default
//!   configuration;
//! - every option of `EngineConfig` has a row in the option tables, every
//!   row names a real option, and a row's default, set explicitly, leaves
//!   the default configuration unchanged.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ragjet::config::{EngineConfig, PriceConfig};

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The page's ```toml blocks, each with the `config-doc:` marker of the
/// line before it (if any).
fn toml_blocks(doc: &str) -> Vec<(Option<String>, String)> {
    let mut blocks = Vec::new();
    let mut marker = None;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(m) = line.trim().strip_prefix("<!-- config-doc:") {
            marker = Some(m.trim_end_matches("-->").trim().to_string());
            continue;
        }
        if line.trim() == "```toml" {
            let mut body = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    break;
                }
                body.push_str(l);
                body.push('\n');
            }
            blocks.push((marker.take(), body));
        } else if !line.trim().is_empty() {
            marker = None;
        }
    }
    blocks
}

/// Parses a block; a `redis_url` is refused by a build without the `redis`
/// feature, which the block is then checked for and parsed without.
fn parse(block: &str) -> EngineConfig {
    let sets_redis = block
        .lines()
        .any(|l| l.trim_start().starts_with("redis_url"));
    if cfg!(feature = "redis") || !sets_redis {
        return EngineConfig::from_toml_str(block).unwrap_or_else(|e| panic!("{e}\n{block}"));
    }
    let err = EngineConfig::from_toml_str(block).unwrap_err();
    assert!(err.to_string().contains("cache.redis_url"), "{err}");
    let without: String = block
        .lines()
        .filter(|l| !l.trim_start().starts_with("redis_url"))
        .map(|l| format!("{l}\n"))
        .collect();
    EngineConfig::from_toml_str(&without).unwrap_or_else(|e| panic!("{e}\n{without}"))
}

/// Dotted paths of the leaves of a TOML table.
fn leaves(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// Every option of `EngineConfig`: the defaults' keys plus those whose
/// default is none (filled in here, so they serialize). Map keys are the
/// placeholders the page uses (`<term>`, `<model>`).
fn every_option() -> BTreeSet<String> {
    let mut c = EngineConfig::default();
    c.model.dir = Some("/m".into());
    c.model.name = Some("m".into());
    c.model.precision = Some("f32".into());
    c.model.num_threads = Some(1);
    c.cache.dir = Some("/c".into());
    c.cache.redis_url = Some("redis://r".into());
    c.rerank.model_dir = Some("/r".into());
    c.rerank.activation = Some("sigmoid".into());
    c.rerank.max_length = Some(1);
    c.telemetry.budgets.daily_usd = Some(1.0);
    c.telemetry.budgets.monthly_usd = Some(1.0);
    c.control.experiment.log_path = Some("/ab.jsonl".into());
    c.query
        .synonyms
        .insert("<term>".into(), vec!["alternative".into()]);
    c.telemetry.prices.insert(
        "<model>".into(),
        PriceConfig {
            input_per_million: 0.0,
            output_per_million: 0.0,
        },
    );
    let text = c.to_toml_string().unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap();
    let mut keys = BTreeSet::new();
    leaves(&value, "", &mut keys);
    keys
}

/// Option-table rows: (dotted key, default cell).
fn rows(doc: &str) -> Vec<(String, String)> {
    doc.lines()
        .filter_map(|line| {
            // `\|` inside a cell is an escaped bar, not a column.
            let line = line.replace("\\|", "/");
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| `key` | type | default | meaning |" splits into 6 cells.
            if cells.len() < 6 {
                return None;
            }
            let key = cells[1].strip_prefix('`')?.strip_suffix('`')?;
            key.contains('.')
                .then(|| (key.to_string(), cells[3].to_string()))
        })
        .collect()
}

#[test]
fn every_toml_block_parses() {
    let blocks = toml_blocks(&doc());
    assert!(blocks.len() >= 2, "found {} blocks", blocks.len());
    for (_, block) in &blocks {
        parse(block);
    }
}

#[test]
fn the_defaults_block_is_the_default_configuration() {
    let blocks = toml_blocks(&doc());
    let defaults: Vec<_> = blocks
        .iter()
        .filter(|(m, _)| m.as_deref() == Some("defaults"))
        .collect();
    assert_eq!(defaults.len(), 1, "one block marked config-doc: defaults");
    assert_eq!(parse(&defaults[0].1), EngineConfig::default());

    // And it names every option, set or commented out.
    let block = &defaults[0].1;
    for key in every_option() {
        let leaf = key.rsplit('.').next().unwrap();
        let leaf = if leaf.starts_with('<') { "" } else { leaf };
        let table = key.split('.').next().unwrap();
        assert!(
            block.contains(&format!("[{table}")) && block.contains(leaf),
            "{key} missing from the defaults block"
        );
    }
}

#[test]
fn the_production_profile_parses_and_differs_where_it_says() {
    let blocks = toml_blocks(&doc());
    let prod: Vec<_> = blocks
        .iter()
        .filter(|(m, _)| m.as_deref() == Some("production"))
        .collect();
    assert_eq!(prod.len(), 1, "one block marked config-doc: production");
    let c = parse(&prod[0].1);
    assert!(c.control.rate_limit.enabled && c.control.breaker.enabled);
    assert_eq!(c.queue.timeout_ms, Some(2000));
    assert_eq!(c.query.max_top_k, 100);
    assert!(c.telemetry.budgets.daily_usd.is_some());
    assert_eq!(
        c.cache.redis_url.is_some(),
        cfg!(feature = "redis"),
        "the profile sets a Redis tier"
    );
}

#[test]
fn the_tables_cover_every_option_with_its_real_default() {
    let doc = doc();
    let rows = rows(&doc);
    let documented: BTreeSet<String> = rows.iter().map(|(k, _)| k.clone()).collect();
    let real = every_option();
    let missing: Vec<_> = real.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&real).collect();
    assert!(missing.is_empty(), "options without a row: {missing:?}");
    assert!(unknown.is_empty(), "rows naming no option: {unknown:?}");
    assert_eq!(rows.len(), documented.len(), "a key has two rows");

    let defaults = EngineConfig::default().to_toml_string().unwrap();
    let defaults: toml::Value = toml::from_str(&defaults).unwrap();
    let mut with_value = BTreeSet::new();
    leaves(&defaults, "", &mut with_value);
    for (key, cell) in &rows {
        let value = cell
            .strip_prefix('`')
            .and_then(|c| c.split_once('`'))
            .map(|(v, _)| v);
        match value {
            Some(value) => {
                // Setting the documented default changes nothing.
                let (table, leaf) = key.rsplit_once('.').unwrap();
                let text = format!("[{table}]\n{leaf} = {value}\n");
                let parsed = EngineConfig::from_toml_str(&text)
                    .unwrap_or_else(|e| panic!("{key}: default {value}: {e}"));
                assert_eq!(
                    parsed,
                    EngineConfig::default(),
                    "{key}: the documented default {value} is not the real one"
                );
            }
            None => assert!(
                !with_value.contains(key),
                "{key} has a default value in EngineConfig; write it in backticks"
            ),
        }
    }
}

#[test]
fn the_row_check_can_fail() {
    // A wrong documented default is caught by the comparison above.
    let parsed = EngineConfig::from_toml_str("[index]\nhnsw_ef_search = 65\n").unwrap();
    assert_ne!(parsed, EngineConfig::default());
    // And a row for an option that does not exist.
    let fake = "| `index.hnsw_ef` | integer | `64` | no such key |\n";
    let documented: BTreeSet<String> = rows(fake).into_iter().map(|(k, _)| k).collect();
    assert!(!every_option().is_superset(&documented));
}
