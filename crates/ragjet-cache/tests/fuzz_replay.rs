//! Replays the committed `cache_value` fuzz corpus
//! (`fuzz/corpus-seed/cache_value/`) through the functions the cargo-fuzz
//! target calls, on stable Rust: every stored value a fuzzing run kept, and
//! every crash it found once fixed, stays a regression test here. The disk
//! tier always; the Redis tier with `--features redis` and a server in
//! `RAGJET_TEST_REDIS_URL` (as `tests/redis.rs`: without one the test
//! FAILS unless `RAGJET_SKIP_REDIS_TESTS=1`).

#[path = "../../../fuzz/src/cache.rs"]
mod targets;

use std::path::PathBuf;

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus-seed/cache_value");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the committed corpus)", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{}: corpus too small", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (p, bytes)
        })
        .collect()
}

#[test]
fn disk_tier_corpus() {
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in corpus() {
        let r = std::panic::catch_unwind(|| targets::disk_value(dir.path(), &bytes));
        assert!(r.is_ok(), "disk tier panicked on {}", path.display());
    }
}

/// The stored-bytes builder really reaches the decoder: a well-formed
/// envelope of a string reads back as that string (else every corpus file
/// would stop at the checksum and the replay would prove little).
#[test]
fn well_formed_envelopes_decode() {
    use ragjet_cache::{DiskConfig, TieredCache};
    let payload = postcard_string("hello");
    let mut data = vec![1u8]; // odd: well-formed header, String tag, no lz4
    data.extend_from_slice(&payload);
    let dir = tempfile::tempdir().unwrap();
    targets::disk_value(dir.path(), &data);
    let cache = TieredCache::builder()
        .disk(DiskConfig::new(dir.path().join("fuzz-cache.redb")))
        .build()
        .unwrap();
    assert_eq!(
        cache.get::<String>(&targets::key()).as_deref(),
        Some("hello")
    );
}

fn postcard_string(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

#[cfg(feature = "redis")]
#[test]
fn redis_tier_corpus() {
    let url = match std::env::var("RAGJET_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("RAGJET_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1") => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the Redis fuzz corpus replay (RAGJET_SKIP_REDIS_TESTS=1)"
            );
            return;
        }
        _ => panic!(
            "RAGJET_TEST_REDIS_URL is not set: scripts/test.sh starts a server, or set \
             RAGJET_SKIP_REDIS_TESTS=1 to skip knowingly"
        ),
    };
    let prefix = format!("ragjet-fuzz-replay:{}:", std::process::id());
    for (path, bytes) in corpus() {
        let r = std::panic::catch_unwind(|| targets::redis_value(&url, &prefix, &bytes));
        assert!(r.is_ok(), "redis tier panicked on {}", path.display());
    }
}
