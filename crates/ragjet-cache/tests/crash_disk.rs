//! What a crash or damage leaves in the disk tier's file must open or be
//! refused with an error, never abort the process. Found by the kill -9
//! trials (`examples/crash_trials.rs cache`): a child killed while redb was
//! creating the file left one that no later open accepted.

use ragjet_cache::{DiskConfig, Scope, TieredCache};

fn open(path: &std::path::Path) -> ragjet_cache::Result<TieredCache> {
    TieredCache::builder().disk(DiskConfig::new(path)).build()
}

/// A complete file holding one entry, as bytes.
fn valid_file(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("valid.redb");
    let c = open(&path).unwrap();
    let key = Scope::tenant("t").key("k").str("a").finish();
    c.put(&key, &"kept".to_string()).unwrap();
    drop(c);
    std::fs::read(&path).unwrap()
}

#[test]
fn a_kill_while_redb_creates_the_file_leaves_one_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let full = valid_file(dir.path());
    // redb sizes the file, writes its header without the magic number,
    // syncs, then writes the magic: a kill before that leaves either zeros
    // or a header whose first 9 bytes are zero.
    let mut no_magic = full.clone();
    no_magic[..9].fill(0);
    for (name, bytes) in [("zeros", vec![0u8; 1 << 20]), ("no_magic", no_magic)] {
        let path = dir.path().join(format!("{name}.redb"));
        std::fs::write(&path, &bytes).unwrap();
        let cache = open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let key = Scope::tenant("t").key("k").str(name).finish();
        cache.put(&key, &name.to_string()).unwrap();
        assert_eq!(cache.get::<String>(&key).as_deref(), Some(name));
        let aside = dir.path().join(format!("{name}.redb.incomplete"));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            bytes,
            "{name}: set aside intact"
        );
    }
}

#[test]
fn a_file_cut_short_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let full = valid_file(dir.path());
    for len in [64, 320, 512, 4096, full.len() / 2, full.len() - 1] {
        let path = dir.path().join(format!("cut{len}.redb"));
        std::fs::write(&path, &full[..len]).unwrap();
        // Before: redb's `assert!(file_len >= layout.len())` panicked here.
        let r = std::panic::catch_unwind(|| open(&path).map(|_| ()));
        assert!(r.is_ok(), "prefix {len}: opening panicked");
    }
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"my notes, not a cache").unwrap();
    assert!(open(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"my notes, not a cache");
}

/// The `store` fuzz target's first crash: an engine directory whose
/// `embeddings.redb` had bytes 12..29 overwritten (redb's header, page size
/// among them) panicked in redb's `assert_eq!(page_size, …)` while the
/// engine opened its embedding cache.
#[test]
fn a_damaged_header_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = valid_file(dir.path());
    let patch = [
        0u8, 0, 0, 0, 0, 0, 0, 0, 0xb5, 0xef, 0xe7, 0, 0, 0, 1, 0xaa, 0xe1,
    ];
    bytes[12..12 + patch.len()].copy_from_slice(&patch);
    let path = dir.path().join("damaged.redb");
    std::fs::write(&path, &bytes).unwrap();
    let r = std::panic::catch_unwind(|| open(&path).map(|_| ()));
    assert!(r.is_ok(), "opening panicked");
    assert!(r.unwrap().is_err(), "a damaged header is refused");
}
