//! Replays the committed fuzz corpora (`fuzz/corpus-seed/<target>/`) through
//! the same functions the cargo-fuzz targets call, on stable Rust: every
//! input a fuzzing run kept (and every crash it found, once fixed) stays a
//! regression test. The long runs are `fuzz/run.sh` (docs/reliability.md).

#[path = "../../../fuzz/src/engine.rs"]
mod targets;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus-seed")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the committed corpus)", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{}: a corpus of {} file(s) replays next to nothing",
        dir.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (p, bytes)
        })
        .collect()
}

fn replay(target: &str, f: impl Fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes)));
        assert!(
            r.is_ok(),
            "fuzz target {target} panicked on {}",
            path.display()
        );
    }
}

#[test]
fn filters_corpus() {
    replay("filters", targets::filters);
}

#[test]
fn config_corpus() {
    replay("config", targets::config);
}

#[test]
fn jsonl_corpus() {
    let dir = tempfile::tempdir().unwrap();
    replay("jsonl", |b| targets::jsonl(dir.path(), b));
}

#[test]
fn embed_corpus() {
    replay("embed", targets::embed);
}

#[test]
fn store_corpus() {
    let dir = tempfile::tempdir().unwrap();
    replay("store", |b| targets::store(dir.path(), b));
}
