mod common;

use common::{crc32, generation, write_with_valid_checksums};

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

    // A save of an earlier version (hnsw_rs's dump) still loads: same
    // entries, tombstones and config, a working graph, and the next save
    // is in the current format.
    let old = tmp.path().join("hnsw_rs");
    idx.save_as_hnsw_rs(&old).unwrap();
    assert!(generation(&old).join("graph.hnsw.graph").exists());
    let migrated = HnswIndex::load(&old).unwrap();
    assert_eq!(migrated.len(), idx.len());
    assert_eq!(migrated.tombstones(), 2);
    assert_eq!(migrated.config(), idx.config());
    let exact = |q: &[f32]| {
        data.iter()
            .enumerate()
            .filter(|(i, _)| *i != 1 && *i != 2)
            .map(|(i, v)| {
                (
                    v.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(),
                    i,
                )
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| format!("h{i}"))
            .unwrap()
    };
    let hits = queries
        .iter()
        .filter(|q| migrated.search(q, 1, None).unwrap()[0].id == exact(q))
        .count();
    assert!(hits >= 27, "{hits}/30 nearest found after migration");
    let dir3 = tmp.path().join("migrated");
    migrated.save(&dir3).unwrap();
    assert!(!generation(&dir3).join("graph.hnsw.graph").exists());
    let again = HnswIndex::load(&dir3).unwrap();
    assert_eq!(
        all_results(&again, &queries),
        all_results(&migrated, &queries)
    );
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

// ---------------------------------------------------------------------------
// Damaged and hostile files: the checksums are recomputed after each change,
// as an attacker (or a tool that "repairs" manifests) would do, so every
// parser must check what it reads by itself.

/// Counts panics on any thread of this test binary (hnsw_rs's panics are
/// caught inside `HnswIndex::load`, so only a hook sees them).
fn count_panics() -> &'static std::sync::atomic::AtomicUsize {
    use std::sync::atomic::AtomicUsize;
    use std::sync::OnceLock;
    static PANICS: OnceLock<&'static AtomicUsize> = OnceLock::new();
    PANICS.get_or_init(|| {
        let counter: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
        counter
    })
}

/// Truncates each file of the saved index at many lengths and flips one
/// bit at many positions, with valid checksums every time: each load must
/// be a `Corrupt` (or `Io`) error or an index that answers a search —
/// never a panic (not even one caught inside), an abort or an exit.
/// `load_and_search` returns the load's error, if any.
fn assert_damage_is_an_error(
    dir: &Path,
    every_byte_up_to: usize,
    load_and_search: &dyn Fn(&Path) -> Result<(), RetrievalError>,
) -> (usize, usize) {
    let panics = count_panics();
    let before = panics.load(std::sync::atomic::Ordering::SeqCst);
    let (mut rejected, mut accepted) = (0, 0);
    for file in generation_files(dir) {
        if file.file_name().unwrap() == "MANIFEST.json" {
            continue;
        }
        let original = fs::read(&file).unwrap();
        let len = original.len();
        // Every position in the first `every_byte_up_to` bytes (headers),
        // then a spread over the rest.
        let step = (len / 150).max(1);
        let positions: Vec<usize> = (0..len.min(every_byte_up_to))
            .chain((every_byte_up_to..len).step_by(step))
            .collect();
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for &at in &positions {
            variants.push(original[..at].to_vec());
            let mut flipped = original.clone();
            flipped[at] ^= 1 << (at % 8);
            variants.push(flipped);
        }
        variants.push([original.as_slice(), b"\0\0\0\0\0\0\0\0"].concat());
        for bytes in variants {
            write_with_valid_checksums(dir, &file, &bytes);
            match load_and_search(dir) {
                Ok(()) => accepted += 1,
                Err(RetrievalError::Corrupt { .. }) | Err(RetrievalError::Io { .. }) => {
                    rejected += 1
                }
                Err(other) => panic!("{file:?}: unexpected error {other:?}"),
            }
        }
        write_with_valid_checksums(dir, &file, &original);
        load_and_search(dir).expect("the restored files load");
    }
    assert_eq!(
        panics.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "a damaged file made the loader panic (see the messages above)"
    );
    (rejected, accepted)
}

#[test]
fn damaged_hnsw_dumps_are_errors_never_panics() {
    let data = common::clustered(40, 4, 4, 0.5, 31);
    // Every header byte of each file; then a spread (L2 has the wider
    // sweep, cosine differs only in the distance). The crate's own graph
    // files, and hnsw_rs's dump as earlier versions saved it.
    for (metric, every_byte_up_to, hnsw_rs_format) in [
        (Metric::L2, 300, false),
        (Metric::Cosine, 100, false),
        (Metric::L2, 300, true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hnsw");
        let mut cfg = HnswConfig::new(4, metric);
        cfg.m = 4;
        cfg.ef_construction = 16;
        let mut idx = HnswIndex::new(cfg).unwrap();
        idx.upsert(entries(&data, "h")).unwrap();
        idx.delete(&["h3"]);
        if hnsw_rs_format {
            idx.save_as_hnsw_rs(&dir).unwrap();
        } else {
            idx.save(&dir).unwrap();
        }
        let q = data[0].clone();
        let (rejected, accepted) = assert_damage_is_an_error(&dir, every_byte_up_to, &|d| {
            let idx = HnswIndex::load(d)?;
            idx.search(&q, 5, None).unwrap();
            let f = ragjet_retrieval::MetadataFilters::from_json(
                r#"{"filters": [{"key": "i", "operator": ">", "value": 3}]}"#,
            )
            .unwrap();
            idx.search(&q, 50, Some(&f)).unwrap();
            Ok(())
        });
        eprintln!(
            "{metric:?} (hnsw_rs format: {hnsw_rs_format}): \
             {rejected} damaged variants rejected, {accepted} loaded"
        );
        assert!(rejected > 500 && accepted > 0, "{rejected} / {accepted}");
    }
}

#[test]
fn damaged_flat_bm25_and_store_files_are_errors_never_panics() {
    let data = common::clustered(30, 6, 3, 0.5, 32);
    let tmp = tempfile::tempdir().unwrap();
    for storage in [Storage::F32, Storage::F16] {
        let dir = tmp.path().join(format!("flat-{storage:?}"));
        let mut idx =
            FlatIndex::new(FlatConfig::new(6, Metric::Cosine).with_storage(storage)).unwrap();
        idx.upsert(entries(&data, "p")).unwrap();
        idx.save(&dir).unwrap();
        let (rejected, _) = assert_damage_is_an_error(&dir, 64, &|d| {
            FlatIndex::load(d)?
                .search(&data[1], usize::MAX, None)
                .unwrap();
            Ok(())
        });
        assert!(rejected > 100);
    }

    let dir = tmp.path().join("bm25");
    let mut bm = ragjet_retrieval::Bm25Index::new(Default::default()).unwrap();
    for i in 0..20 {
        bm.upsert(&format!("d{i}"), &format!("word{} shared text {i}", i % 3))
            .unwrap();
    }
    bm.save(&dir).unwrap();
    let (rejected, _) = assert_damage_is_an_error(&dir, 64, &|d| {
        ragjet_retrieval::Bm25Index::load(d)?.search("shared word1", usize::MAX);
        Ok(())
    });
    assert!(rejected > 100);

    let dir = tmp.path().join("store");
    let mut store = VectorStore::new();
    store
        .create_namespace("a", IndexSpec::Flat(FlatConfig::new(6, Metric::L2)))
        .unwrap();
    let mut h = HnswConfig::new(6, Metric::Cosine);
    h.m = 4;
    h.ef_construction = 8;
    store.create_namespace("b", IndexSpec::Hnsw(h)).unwrap();
    store.upsert("a", entries(&data[..10], "a")).unwrap();
    store.upsert("b", entries(&data[10..], "b")).unwrap();
    store.save(&dir).unwrap();
    let (rejected, _) = assert_damage_is_an_error(&dir, 64, &|d| {
        let s = VectorStore::load(d)?;
        for ns in s.namespaces() {
            s.search(ns, &data[0], 3, None).unwrap();
        }
        Ok(())
    });
    assert!(rejected > 100);
}

/// The offsets of hnsw_rs's dump fields that the targeted tests below
/// change (full-mode format, native-endian, 8-byte `usize`).
struct GraphLayout {
    /// First point of layer 0: its origin id.
    first_origin: usize,
    /// That point's first layer-0 neighbour: its rank in its layer.
    first_neighbour_rank: usize,
}

fn graph_layout(graph: &[u8]) -> GraphLayout {
    let usize_at = |at: usize| usize::from_ne_bytes(graph[at..at + 8].try_into().unwrap());
    // magic, dumpmode, M, level scale, nb_layer, ef, nb_point, dimension
    let mut at = 4 + 1 + 1 + 8 + 1 + 8 + 8 + 8;
    at += 8 + usize_at(at); // distance name
    at += 8 + usize_at(at); // value type name
    at += 1 + 4 + 8; // layer count, layer magic, points in layer 0
    let first_origin = at + 4; // after the point magic
    at = first_origin + 8 + 1 + 4; // origin, layer, rank
    assert!(usize_at(at) > 0, "the first point has layer-0 neighbours");
    GraphLayout {
        first_origin,
        first_neighbour_rank: at + 8 + 8 + 1,
    }
}

/// Targeted damage the review named: the loader must say what is wrong.
#[test]
fn hostile_hnsw_dumps_are_rejected_with_a_reason() {
    let data = common::clustered(60, 8, 4, 0.5, 33);
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        let mut cfg = HnswConfig::new(8, Metric::L2);
        cfg.m = 6;
        // One thread: both builds are then the same every run, so the
        // offsets read by `graph_layout` (the first point's first
        // neighbour) exist every run; a parallel build can leave that
        // point without layer-0 links.
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| {
                let mut idx = HnswIndex::new(cfg).unwrap();
                idx.upsert(entries(&data, "h")).unwrap();
                // The format of earlier versions: hnsw_rs's dump.
                idx.save_as_hnsw_rs(&dir).unwrap();
            });
        let gen = generation(&dir);
        (dir, gen)
    };
    let expect_corrupt = |dir: &Path, what: &str, reason: &str| match HnswIndex::load(dir) {
        Err(RetrievalError::Corrupt { reason: r, .. }) => {
            assert!(r.contains(reason), "{what}: reason {r:?} lacks {reason:?}")
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    };

    // The index header says another dimension than the graph's points: used
    // to panic in `copy_from_slice` when the search snapshot was taken.
    let (dir, gen) = fresh("dim");
    let meta = fs::read_to_string(gen.join("hnsw.json")).unwrap();
    let changed = meta.replace("\"dim\":8", "\"dim\":5");
    assert_ne!(meta, changed);
    write_with_valid_checksums(&dir, &gen.join("hnsw.json"), changed.as_bytes());
    expect_corrupt(&dir, "header dimension", "dimension");

    // A point id outside 0..n: used to load "fine" with no search
    // snapshot, every search then silently empty.
    let (dir, gen) = fresh("origin");
    let gpath = gen.join("graph.hnsw.graph");
    let mut graph = fs::read(&gpath).unwrap();
    let at = graph_layout(&graph).first_origin;
    graph[at..at + 8].copy_from_slice(&1_000_000usize.to_ne_bytes());
    write_with_valid_checksums(&dir, &gpath, &graph);
    expect_corrupt(&dir, "point id", "out of range");

    // A neighbour naming a point that does not exist: hnsw_rs indexes its
    // layers with it.
    let (dir, gen) = fresh("neighbour");
    let gpath = gen.join("graph.hnsw.graph");
    let mut graph = fs::read(&gpath).unwrap();
    let at = graph_layout(&graph).first_neighbour_rank;
    graph[at..at + 4].copy_from_slice(&1_000_000i32.to_ne_bytes());
    write_with_valid_checksums(&dir, &gpath, &graph);
    expect_corrupt(&dir, "neighbour", "not in the graph");

    // A vector whose stored length is short: hnsw_rs reads `dimension`
    // values from it regardless (an out-of-bounds read). And one whose
    // length is huge: hnsw_rs allocates it before reading (an abort).
    for (name, len) in [("short", 4u64), ("huge", 1u64 << 62)] {
        let (dir, gen) = fresh(name);
        let dpath = gen.join("graph.hnsw.data");
        let mut bytes = fs::read(&dpath).unwrap();
        // Data header (magic, dimension), then the first point's magic and id.
        let at = 4 + 8 + 4 + 8;
        assert_eq!(
            u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap()),
            32
        );
        bytes[at..at + 8].copy_from_slice(&len.to_ne_bytes());
        write_with_valid_checksums(&dir, &dpath, &bytes);
        expect_corrupt(&dir, name, "vector length");
    }

    // A manifest listing no graph file: the loader does not read unlisted
    // files.
    let (dir, gen) = fresh("unlisted");
    let mpath = gen.join("MANIFEST.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
    manifest["files"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "graph.hnsw.data");
    let m = serde_json::to_vec(&manifest).unwrap();
    fs::write(&mpath, &m).unwrap();
    let current = serde_json::json!({
        "generation": gen.file_name().unwrap().to_string_lossy(),
        "manifest_crc32": crc32(&m),
    });
    fs::write(dir.join("CURRENT"), current.to_string()).unwrap();
    expect_corrupt(&dir, "unlisted file", "not listed");
}

/// Targeted damage to the crate's own graph files: each is `Corrupt` with
/// the reason (the walk indexes rows and lists by the links it reads).
#[test]
fn hostile_flat_graphs_are_rejected_with_a_reason() {
    let data = common::clustered(60, 8, 4, 0.5, 34);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = HnswConfig::new(8, Metric::L2);
    cfg.m = 6;
    let mut idx = HnswIndex::new(cfg).unwrap();
    idx.upsert(entries(&data, "h")).unwrap();
    let word = |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
    let put =
        |b: &mut Vec<u8>, i: usize, v: u32| b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    // Header: magic, version, slots, dim, M, entry, top level, upper words;
    // then one level per slot; then layer 0 (stride 1 + 2M).
    let n = data.len();
    let layer0 = 8 + n;
    type Damage<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Damage<'_>, &str)> = vec![
        ("version", Box::new(|b| put(b, 1, 99)), "version"),
        ("slots", Box::new(|b| put(b, 2, 61)), "slots"),
        (
            "link",
            Box::new(|b| {
                put(b, layer0, 1);
                put(b, layer0 + 1, 1_000_000)
            }),
            "not in the graph",
        ),
        ("count", Box::new(|b| put(b, layer0, 13)), "links on layer"),
        ("level", Box::new(|b| put(b, 8, 40)), "on layer 40"),
        (
            "entry",
            Box::new(|b| {
                let top = word(b, 6);
                put(b, 6, top + 1)
            }),
            "entry point",
        ),
    ];
    for (name, damage, reason) in cases {
        let dir = tmp.path().join(name);
        idx.save(&dir).unwrap();
        let gpath = generation(&dir).join("graph.bin");
        let mut bytes = fs::read(&gpath).unwrap();
        damage(&mut bytes);
        write_with_valid_checksums(&dir, &gpath, &bytes);
        match HnswIndex::load(&dir) {
            Err(RetrievalError::Corrupt { reason: r, .. }) => {
                assert!(r.contains(reason), "{name}: reason {r:?} lacks {reason:?}")
            }
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
    }
    let dir = tmp.path().join("nan");
    idx.save(&dir).unwrap();
    let vpath = generation(&dir).join("vectors.bin");
    let mut bytes = fs::read(&vpath).unwrap();
    bytes[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    write_with_valid_checksums(&dir, &vpath, &bytes);
    assert_rejected(HnswIndex::load(&dir), "NaN row");
}

/// Saved configs are validated like new ones: an `ef_construction` that
/// would size hnsw_rs's heaps absurdly, or `M` = 256 (a byte in hnsw_rs),
/// is an error, not an abort or a graph without links.
#[test]
fn absurd_saved_configs_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cfg");
    let mut idx = HnswIndex::new(HnswConfig::new(2, Metric::L2)).unwrap();
    idx.upsert(vec![Entry::new("a", vec![1.0, 0.0])]).unwrap();
    idx.save(&dir).unwrap();
    let gen = generation(&dir);
    let meta = fs::read_to_string(gen.join("hnsw.json")).unwrap();
    for (from, to) in [
        (
            "\"ef_construction\":200",
            "\"ef_construction\":1000000000000",
        ),
        ("\"m\":16", "\"m\":256"),
    ] {
        let changed = meta.replace(from, to);
        assert_ne!(meta, changed);
        write_with_valid_checksums(&dir, &gen.join("hnsw.json"), changed.as_bytes());
        assert_rejected(HnswIndex::load(&dir), to);
    }
}

/// Values no index can hold, and documents BM25 could not have made, are
/// refused even with valid checksums (they used to load: NaN rows then
/// ranked arbitrarily, and a BM25 document's length disagreed with its
/// terms).
#[test]
fn hostile_flat_and_bm25_files_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("flat");
    let mut idx = FlatIndex::new(FlatConfig::new(2, Metric::L2)).unwrap();
    idx.upsert(vec![
        Entry::new("a", vec![1.0, 0.0]),
        Entry::new("b", vec![0.0, 1.0]),
    ])
    .unwrap();
    idx.save(&dir).unwrap();
    let vpath = generation(&dir).join("vectors.bin");
    let mut bytes = fs::read(&vpath).unwrap();
    bytes[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    write_with_valid_checksums(&dir, &vpath, &bytes);
    assert_rejected(FlatIndex::load(&dir), "NaN row");

    let dir = tmp.path().join("bm25");
    let mut bm = ragjet_retrieval::Bm25Index::new(Default::default()).unwrap();
    bm.upsert("d", "one two two").unwrap();
    bm.save(&dir).unwrap();
    let path = generation(&dir).join("bm25.json");
    let text = fs::read_to_string(&path).unwrap();
    for (from, to) in [
        ("\"len\":3", "\"len\":4000000000"),
        ("[\"two\",2]", "[\"two\",0]"),
    ] {
        let changed = text.replace(from, to);
        assert_ne!(text, changed, "{from}");
        write_with_valid_checksums(&dir, &path, changed.as_bytes());
        assert_rejected(ragjet_retrieval::Bm25Index::load(&dir), to);
    }
}
