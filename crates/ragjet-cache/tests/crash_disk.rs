//! What a crash or damage leaves in the disk tier's file must open or be
//! refused with an error, never abort the process. Found by the kill -9
//! trials (`examples/crash_trials.rs cache`): a child killed while redb was
//! creating the file left one that no later open accepted. Found by the
//! `store` fuzz target and a damage search: redb panics on some damaged
//! files, and aborts the process on a few (a panic while unwinding, an
//! allocation of a size read from the damaged file), which `catch_unwind`
//! cannot stop; the disk tier now checks an existing file in a child
//! process first and moves a damaged one aside.

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
fn a_damaged_header_is_set_aside_not_a_panic() {
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
    r.unwrap()
        .expect("a damaged cache file is replaced by an empty one");
    assert_eq!(
        std::fs::read(dir.path().join("damaged.redb.damaged")).unwrap(),
        bytes,
        "the damaged file is kept aside, intact"
    );
}

/// Renders the figures a Prometheus recorder got while `f` ran.
fn with_recorder(f: impl FnOnce()) -> String {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, f);
    handle.render()
}

/// Found by a seeded damage search over a 40-entry cache file (ten bytes
/// overwritten in a B-tree page): redb read a length from the damaged
/// page and asked for a 4 TiB allocation, whose failure aborts the
/// process ("memory allocation of 4398046511104 bytes failed") before any
/// `catch_unwind` can see it. Without the check in a child process this
/// test binary dies.
#[test]
fn a_file_that_makes_redb_abort_is_set_aside_and_the_cache_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("valid.redb");
    let c = open(&path).unwrap();
    let key = |i: usize| Scope::tenant("t").key("k").str(&format!("a{i}")).finish();
    for i in 0..40 {
        c.put(&key(i), &vec![i as f32; 32]).unwrap();
    }
    drop(c);
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 81920, "the layout the damage was found on");
    bytes[57480..57490].copy_from_slice(&[235, 112, 148, 221, 4, 46, 38, 26, 60, 246]);
    std::fs::write(&path, &bytes).unwrap();

    let mut opened = None;
    let text = with_recorder(|| opened = Some(open(&path)));
    let cache = opened.unwrap().expect("opens, empty");
    assert!(
        text.lines().any(
            |l| l.starts_with(ragjet_cache::metrics::CACHE_DAMAGED_FILES_TOTAL)
                && l.contains("tier=\"l2\"")
                && l.ends_with(" 1")
        ),
        "the damaged file is counted:\n{text}"
    );
    assert_eq!(cache.get::<Vec<f32>>(&key(3)), None, "starts empty");
    cache.put(&key(3), &vec![1.0f32; 32]).unwrap();
    assert_eq!(cache.get::<Vec<f32>>(&key(3)), Some(vec![1.0f32; 32]));
    assert_eq!(
        std::fs::read(dir.path().join("valid.redb.damaged")).unwrap(),
        bytes,
        "the damaged file is kept aside, intact"
    );
    drop(cache);
    // The replacement is a sound file: it reopens with its entry and no
    // second file is set aside.
    let again = open(&path).unwrap();
    assert_eq!(again.get::<Vec<f32>>(&key(3)), Some(vec![1.0f32; 32]));
}

#[test]
fn a_sound_file_is_opened_in_place_with_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.redb");
    valid_file(dir.path());
    std::fs::rename(dir.path().join("valid.redb"), &path).unwrap();
    let c = open(&path).unwrap();
    let key = Scope::tenant("t").key("k").str("a").finish();
    assert_eq!(c.get::<String>(&key).as_deref(), Some("kept"));
    assert!(!dir.path().join("c.redb.damaged").exists());
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Found by the `store` fuzz target (input `01 07 17 00 f3`: byte 23 of
/// `embeddings.redb`'s header xor 0xf3): redb sized its region layout from
/// the damaged header and allocated about 1 GiB opening the file, then
/// opened it. The check now runs under an allocation cap, so the file is
/// set aside and this process never allocates that.
#[cfg(target_os = "linux")]
#[test]
fn a_header_declaring_a_huge_layout_is_set_aside_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = valid_file(dir.path());
    bytes[23] ^= 0xf3;
    let path = dir.path().join("huge.redb");
    std::fs::write(&path, &bytes).unwrap();
    let before = peak_rss_kb();
    let c = open(&path).expect("opens, empty");
    let rise_mib = peak_rss_kb().saturating_sub(before) / 1024;
    assert!(rise_mib < 200, "peak RSS rose {rise_mib} MiB opening it");
    assert!(dir.path().join("huge.redb.damaged").exists(), "set aside");
    let key = Scope::tenant("t").key("k").str("a").finish();
    assert_eq!(c.get::<String>(&key), None, "starts empty");
}
