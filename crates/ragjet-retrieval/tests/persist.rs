mod common;

use std::fs;
use std::path::{Path, PathBuf};

use ragjet_retrieval::{
    AnyIndex, Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, IndexSpec, Metric,
    RetrievalError, Storage, VectorIndex, VectorStore,
};

fn entries(data: &[Vec<f32>], tag: &str) -> Vec<Entry> {
    data.iter()
        .enumerate()
        .map(|(i, v)| {
            Entry::new(format!("{tag}{i}"), v.clone())
                .with_text(format!("text {i}"))
                .with_meta("i", i as i64)
                .with_meta("tags", vec!["a", "b"])
                .with_ref_doc_id(format!("doc{}", i % 7))
        })
        .collect()
}

fn all_results(idx: &dyn VectorIndex, queries: &[Vec<f32>]) -> Vec<Vec<(String, u32)>> {
    queries
        .iter()
        .map(|q| {
            idx.search(q, 10, None)
                .unwrap()
                .into_iter()
                .map(|h| (h.id, h.score.to_bits()))
                .collect()
        })
        .collect()
}

/// Every file of the current generation (not CURRENT itself).
fn generation_files(dir: &Path) -> Vec<PathBuf> {
    let gen = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.file_name().unwrap().to_string_lossy().starts_with("gen-"))
        .unwrap();
    let mut out = Vec::new();
    let mut stack = vec![gen];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn assert_rejected<T: std::fmt::Debug>(r: Result<T, RetrievalError>, what: &str) {
    match r {
        Err(RetrievalError::Corrupt { .. }) | Err(RetrievalError::Io { .. }) => {}
        other => panic!("{what}: expected a corrupt/io error, got {other:?}"),
    }
}

#[test]
fn flat_round_trip_and_corruption_is_rejected() {
    let data = common::clustered(500, 24, 8, 0.5, 1);
    let queries = common::clustered(10, 24, 8, 0.5, 2);
    for storage in [Storage::F32, Storage::F16] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("idx");
        let mut idx =
            FlatIndex::new(FlatConfig::new(24, Metric::Cosine).with_storage(storage)).unwrap();
        idx.upsert(entries(&data, "p")).unwrap();
        idx.delete(&["p3", "p77"]);
        idx.save(&dir).unwrap();
        let back = FlatIndex::load(&dir).unwrap();
        assert_eq!(back.len(), idx.len());
        assert_eq!(back.get("p5"), idx.get("p5"));
        assert!(back.get("p3").is_none());
        assert_eq!(all_results(&back, &queries), all_results(&idx, &queries));
        assert_eq!(back.config(), idx.config());

        for file in generation_files(&dir) {
            let original = fs::read(&file).unwrap();
            // Truncated.
            fs::write(&file, &original[..original.len() / 2]).unwrap();
            assert_rejected(FlatIndex::load(&dir), &format!("truncated {file:?}"));
            // One flipped byte.
            let mut bad = original.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x5a;
            fs::write(&file, &bad).unwrap();
            assert_rejected(FlatIndex::load(&dir), &format!("corrupted {file:?}"));
            fs::write(&file, &original).unwrap();
            assert!(FlatIndex::load(&dir).is_ok());
        }
        // A damaged or missing CURRENT is an error too.
        let current = dir.join("CURRENT");
        let original = fs::read(&current).unwrap();
        fs::write(&current, &original[..5]).unwrap();
        assert_rejected(FlatIndex::load(&dir), "truncated CURRENT");
        fs::remove_file(&current).unwrap();
        assert_rejected(FlatIndex::load(&dir), "missing CURRENT");
    }
}

#[test]
fn hnsw_round_trip_reloads_the_same_graph() {
    let data = common::clustered(2_000, 16, 20, 0.8, 5);
    let queries = common::clustered(30, 16, 20, 0.8, 6);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hnsw");
    let mut cfg = HnswConfig::new(16, Metric::L2);
    cfg.ef_construction = 48;
    let mut idx = HnswIndex::new(cfg).unwrap();
    idx.upsert(entries(&data, "h")).unwrap();
    idx.delete(&["h1", "h2"]);
    idx.save(&dir).unwrap();
    let back = HnswIndex::load(&dir).unwrap();
    assert_eq!(back.len(), idx.len());
    assert_eq!(back.tombstones(), 2);
    assert_eq!(back.config(), idx.config());
    // Identical results: the graph was reloaded, not rebuilt (a parallel
    // rebuild would give a different graph).
    assert_eq!(all_results(&back, &queries), all_results(&idx, &queries));
    // The reloaded index keeps working.
    let mut back = back;
    back.upsert(vec![Entry::new("new", queries[0].clone())])
        .unwrap();
    assert_eq!(back.search(&queries[0], 1, None).unwrap()[0].id, "new");
    // A reloaded graph saves and reloads again.
    let dir2 = tmp.path().join("hnsw2");
    back.save(&dir2).unwrap();
    let again = HnswIndex::load(&dir2).unwrap();
    assert_eq!(all_results(&again, &queries), all_results(&back, &queries));
    assert!(matches!(
        FlatIndex::load(&dir),
        Err(RetrievalError::Corrupt { .. })
    ));
    assert!(matches!(AnyIndex::load(&dir), Ok(AnyIndex::Hnsw(_))));

    for file in generation_files(&dir) {
        let original = fs::read(&file).unwrap();
        fs::write(&file, &original[..original.len() - 1]).unwrap();
        assert_rejected(HnswIndex::load(&dir), &format!("truncated {file:?}"));
        fs::write(&file, &original).unwrap();
    }
    assert!(HnswIndex::load(&dir).is_ok());

    // An empty HNSW index saves and loads too.
    let empty = HnswIndex::new(HnswConfig::new(4, Metric::Cosine)).unwrap();
    let edir = tmp.path().join("empty");
    empty.save(&edir).unwrap();
    assert!(HnswIndex::load(&edir).unwrap().is_empty());
}

/// Simulated crashes: whatever a save left behind before switching CURRENT,
/// the old state loads; after the switch, the new one does.
#[test]
fn interrupted_save_leaves_old_or_new_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let mut idx = FlatIndex::new(FlatConfig::new(2, Metric::Dot)).unwrap();
    idx.upsert(vec![Entry::new("old", vec![1.0, 0.0])]).unwrap();
    idx.save(&dir).unwrap();

    // Crash while writing the next generation: a half-written gen-*.tmp.
    let partial = dir.join("gen-00000002.tmp");
    fs::create_dir(&partial).unwrap();
    fs::write(partial.join("vectors.bin"), b"half").unwrap();
    assert!(FlatIndex::load(&dir).unwrap().get("old").is_some());

    // Crash after the new generation was renamed but before CURRENT moved:
    // a complete gen-00000003 exists but CURRENT still names the old one.
    let mut newer = idx.clone();
    newer
        .upsert(vec![Entry::new("new", vec![0.0, 1.0])])
        .unwrap();
    let side = tmp.path().join("side");
    newer.save(&side).unwrap();
    let side_gen = fs::read_dir(&side)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    copy_dir(&side_gen, &dir.join("gen-00000003"));
    fs::write(dir.join("CURRENT.tmp"), b"{\"generation\": \"gen-000").unwrap();
    let loaded = FlatIndex::load(&dir).unwrap();
    assert!(loaded.get("new").is_none() && loaded.get("old").is_some());

    // The next save cleans up the leftovers and switches to the new state.
    newer.save(&dir).unwrap();
    let loaded = FlatIndex::load(&dir).unwrap();
    assert!(loaded.get("new").is_some());
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("gen-")).count(),
        1,
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn unknown_format_version_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    let mut idx = FlatIndex::new(FlatConfig::new(2, Metric::Dot)).unwrap();
    idx.upsert(vec![Entry::new("a", vec![1.0, 0.0])]).unwrap();
    idx.save(&dir).unwrap();
    let gen = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let mpath = gen.join("MANIFEST.json");
    let m = fs::read_to_string(&mpath)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 99");
    fs::write(&mpath, &m).unwrap();
    // Fix up CURRENT's checksum so only the version is wrong.
    let current = format!(
        "{{\"generation\":\"{}\",\"manifest_crc32\":{}}}",
        gen.file_name().unwrap().to_string_lossy(),
        crc32(m.as_bytes())
    );
    fs::write(dir.join("CURRENT"), current).unwrap();
    let err = FlatIndex::load(&dir).unwrap_err().to_string();
    assert!(err.contains("format version 99"), "{err}");
}

fn crc32(b: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the crate under test.
    let mut crc = !0u32;
    for &x in b {
        crc ^= x as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn namespaces_are_isolated_and_persist_together() {
    let mut store = VectorStore::new();
    store
        .create_namespace("hr", IndexSpec::Flat(FlatConfig::new(2, Metric::Cosine)))
        .unwrap();
    let mut h = HnswConfig::new(2, Metric::Cosine);
    h.ef_construction = 16;
    store.create_namespace("sales", IndexSpec::Hnsw(h)).unwrap();
    assert!(matches!(
        store.create_namespace("hr", IndexSpec::Flat(FlatConfig::new(2, Metric::Dot))),
        Err(RetrievalError::NamespaceExists(_))
    ));
    store
        .upsert("hr", vec![Entry::new("salary-table", vec![1.0, 0.0])])
        .unwrap();
    store
        .upsert(
            "sales",
            vec![
                Entry::new("pipeline", vec![0.0, 1.0]),
                Entry::new("same-id", vec![1.0, 0.1]),
            ],
        )
        .unwrap();
    store
        .upsert("hr", vec![Entry::new("same-id", vec![0.0, 1.0])])
        .unwrap();
    // A query aimed exactly at an hr vector, run in sales, never sees hr.
    let hits = store.search("sales", &[1.0, 0.0], 10, None).unwrap();
    assert!(hits.iter().all(|h| h.id != "salary-table"));
    assert_eq!(store.search("hr", &[1.0, 0.0], 10, None).unwrap().len(), 2);
    assert!(matches!(
        store.search("legal", &[1.0, 0.0], 1, None),
        Err(RetrievalError::NamespaceNotFound(_))
    ));
    // Same id in two namespaces: deleting in one leaves the other.
    store.namespace_mut("hr").unwrap().delete(&["same-id"]);
    assert!(store.namespace("sales").unwrap().get("same-id").is_some());

    let tmp = tempfile::tempdir().unwrap();
    store.save(tmp.path()).unwrap();
    let back = VectorStore::load(tmp.path()).unwrap();
    assert_eq!(back.namespaces(), vec!["hr", "sales"]);
    assert_eq!(back.namespace("hr").unwrap().len(), 1);
    assert_eq!(back.namespace("sales").unwrap().namespace(), "sales");
    assert_eq!(
        back.search("sales", &[1.0, 0.0], 10, None).unwrap(),
        store.search("sales", &[1.0, 0.0], 10, None).unwrap()
    );
    assert!(store.drop_namespace("hr"));
    assert!(store.namespace("hr").is_err());
}
