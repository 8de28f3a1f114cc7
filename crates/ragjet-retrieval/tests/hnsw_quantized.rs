//! Int8 and binary storage of `HnswIndex`: the walk on codes plus the
//! exact rescore keeps recall near f32's and every score exact; filters
//! (both the exact path and the filtered walk), deletes, replacing
//! upserts, compaction, namespaces, persistence and a rows directory work
//! as with f32 rows.

mod common;

use ragjet_retrieval::distance::Metric;
use ragjet_retrieval::{
    Entry, FilterOperator, FlatConfig, FlatIndex, Hit, HnswConfig, HnswIndex, IndexSpec,
    MetadataFilter, MetadataFilters, RetrievalError, Storage, VectorIndex, VectorStore,
};

const KINDS: [Storage; 2] = [Storage::Int8, Storage::Binary];

fn entries(rows: &[Vec<f32>]) -> Vec<Entry> {
    rows.iter()
        .enumerate()
        .map(|(i, v)| Entry::new(format!("e{i}"), v.clone()).with_meta("tag", (i % 5) as i64))
        .collect()
}

fn config(dim: usize, metric: Metric, storage: Storage) -> HnswConfig {
    HnswConfig::new(dim, metric).with_storage(storage)
}

fn exact_index(rows: &[Vec<f32>], metric: Metric) -> FlatIndex {
    let mut idx = FlatIndex::new(FlatConfig::new(rows[0].len(), metric)).unwrap();
    idx.upsert(entries(rows)).unwrap();
    idx
}

/// The exact f32 score of the stored row of `id` for `q`, in f64.
fn exact_score(idx: &HnswIndex, metric: Metric, q: &[f32], id: &str) -> f64 {
    let v = idx.vector(id).unwrap();
    match metric {
        Metric::L2 => -q
            .iter()
            .zip(&v)
            .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
            .sum::<f64>(),
        _ => {
            let n = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            q.iter()
                .zip(&v)
                .map(|(a, b)| *a as f64 / n * *b as f64)
                .sum()
        }
    }
}

/// Every hit's score is the exact score of its row (relative 1e-5), hits
/// come best first, and each passes `ok`.
fn check_hits(idx: &HnswIndex, metric: Metric, q: &[f32], hits: &[Hit], ok: impl Fn(&str) -> bool) {
    assert!(hits.windows(2).all(|p| p[0].score >= p[1].score));
    for h in hits {
        assert!(ok(&h.id), "{} should not be returned", h.id);
        let want = exact_score(idx, metric, q, &h.id);
        let tol = 1e-5 * want.abs().max(1.0);
        assert!(
            (h.score as f64 - want).abs() <= tol,
            "{}: score {} vs exact {want}",
            h.id,
            h.score
        );
    }
}

/// Mean recall@k of `idx` against exact search, checking every score.
fn recall(
    exact: &FlatIndex,
    idx: &HnswIndex,
    metric: Metric,
    qs: &[Vec<f32>],
    k: usize,
    filter: Option<&MetadataFilters>,
) -> f64 {
    let (mut hit, mut total) = (0, 0);
    for q in qs {
        let want = exact.search(q, k, filter).unwrap();
        let got = idx.search(q, k, filter).unwrap();
        assert_eq!(got.len(), want.len());
        check_hits(idx, metric, q, &got, |_| true);
        hit += got
            .iter()
            .filter(|h| want.iter().any(|w| w.id == h.id))
            .count();
        total += want.len();
    }
    hit as f64 / total as f64
}

fn tag_filter(op: FilterOperator, tag: i64) -> MetadataFilters {
    MetadataFilters::new(
        vec![MetadataFilter::new("tag", op, tag)],
        Default::default(),
    )
}

/// At the default rescoring depth (int8 4·k, binary 64·k, the walk's list
/// at least that long) recall@10 against exact search on 3,000 clustered
/// 128-d rows is ≥ 0.95 for int8 and ≥ 0.93 for binary, cosine and L2,
/// and every score is the row's exact score.
#[test]
fn recall_and_exact_scores_at_the_default_rescore() {
    // Queries from the same distribution, not near stored rows: harder.
    let mut all = common::clustered(3_040, 128, 200, 1.0, 21);
    let qs = all.split_off(3_000);
    for metric in [Metric::Cosine, Metric::L2] {
        let exact = exact_index(&all, metric);
        let mut f32_idx = HnswIndex::new(HnswConfig::new(128, metric)).unwrap();
        f32_idx.set_ef_search(16).unwrap();
        f32_idx.upsert(entries(&all)).unwrap();
        let base = recall(&exact, &f32_idx, metric, &qs, 10, None);
        for storage in KINDS {
            let mut idx = HnswIndex::new(config(128, metric, storage)).unwrap();
            idx.set_ef_search(16).unwrap();
            idx.upsert(entries(&all)).unwrap();
            let r = recall(&exact, &idx, metric, &qs, 10, None);
            eprintln!("{metric:?} {storage:?}: recall@10 {r:.3} (f32 HNSW {base:.3})");
            let floor = if storage == Storage::Int8 { 0.95 } else { 0.93 };
            assert!(r >= floor, "{metric:?} {storage:?}: recall@10 {r}");
            // The walk list is what the codes' precision costs: at a depth
            // of 1·k and ef 10, binary codes alone rank poorly.
            let (scanned, rescore) = idx.vector_bytes();
            assert_eq!(rescore, 3_000 * 128 * 4);
            assert!(scanned < rescore / 3, "{scanned} vs {rescore}");
        }
    }
}

/// The rescoring depth widens the walk: binary at 1·k with ef 10 ranks on
/// Hamming distance alone and loses recall that its default depth has.
#[test]
fn the_rescoring_depth_is_used() {
    let all = common::clustered(2_000, 96, 30, 0.4, 31);
    let qs = common::queries_near(&all, 30, 0.4, 32);
    let exact = exact_index(&all, Metric::Cosine);
    let mut shallow =
        HnswIndex::new(config(96, Metric::Cosine, Storage::Binary).with_rescore(1)).unwrap();
    shallow.set_ef_search(10).unwrap();
    shallow.upsert(entries(&all)).unwrap();
    let mut deep = HnswIndex::new(config(96, Metric::Cosine, Storage::Binary)).unwrap();
    deep.set_ef_search(10).unwrap();
    deep.upsert(entries(&all)).unwrap();
    let (rs, rd) = (
        recall(&exact, &shallow, Metric::Cosine, &qs, 10, None),
        recall(&exact, &deep, Metric::Cosine, &qs, 10, None),
    );
    eprintln!("binary recall@10 at ef 10: rescore 1 {rs:.3}, default {rd:.3}");
    assert!(rd >= 0.9 && rs + 0.1 < rd, "rescore 1: {rs}, default: {rd}");
}

/// Filters (exact path: few rows pass), deletes by id and by source
/// document, replacing upserts and compaction: no deleted or filtered-out
/// entry comes back, scores stay exact, recall stays high, and after a
/// compaction (which retrains the codes) a save / load gives identical
/// answers.
#[test]
fn filters_deletes_upserts_compact_and_persistence() {
    let dim = 64;
    let all = common::clustered(2_400, dim, 20, 0.4, 41);
    let qs = common::queries_near(&all, 25, 0.4, 42);
    for storage in KINDS {
        for metric in [Metric::Cosine, Metric::L2] {
            let ents: Vec<Entry> = entries(&all)
                .into_iter()
                .enumerate()
                .map(|(i, e)| e.with_ref_doc_id(format!("doc{}", i / 10)))
                .collect();
            let mut exact = FlatIndex::new(FlatConfig::new(dim, metric)).unwrap();
            exact.upsert(ents.clone()).unwrap();
            let mut idx = HnswIndex::new(config(dim, metric, storage)).unwrap();
            // Batches: the codes are retrained when the rows double.
            for chunk in ents.chunks(500) {
                idx.upsert(chunk.to_vec()).unwrap();
            }
            let f = tag_filter(FilterOperator::Eq, 3);
            let tag3 = |i: &HnswIndex, id: &str| i.get(id).unwrap().metadata["tag"] == 3i64.into();
            for q in &qs {
                let hits = idx.search(q, 10, Some(&f)).unwrap();
                assert_eq!(hits.len(), 10);
                check_hits(&idx, metric, q, &hits, |id| tag3(&idx, id));
            }
            // Few rows pass: exact search over them, so recall is 1.
            assert_eq!(recall(&exact, &idx, metric, &qs, 10, Some(&f)), 1.0);

            let gone: Vec<String> = (0..2_400).step_by(3).map(|i| format!("e{i}")).collect();
            let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
            assert_eq!(idx.delete(&refs), 800);
            exact.delete(&refs);
            assert_eq!(idx.delete_ref_doc("doc7"), 7);
            exact.delete_ref_doc("doc7");
            // Replace live entries with vectors of other rows (moved to
            // new slots; the old slots become tombstones) and add new ones.
            let mut changes: Vec<Entry> = (1..2_400)
                .step_by(9)
                .filter(|i| i % 3 != 0 && i / 10 != 7)
                .map(|i| {
                    Entry::new(format!("e{i}"), all[(i * 7) % 2_400].clone())
                        .with_meta("tag", (i % 5) as i64)
                })
                .collect();
            changes.extend(
                (0..40).map(|i| {
                    Entry::new(format!("n{i}"), all[i * 11].clone()).with_meta("tag", 1i64)
                }),
            );
            idx.upsert(changes.clone()).unwrap();
            exact.upsert(changes).unwrap();
            assert_eq!(idx.len(), exact.len());
            assert_eq!(idx.vector("e1"), exact.vector("e1"));
            let dead = |id: &str| {
                id.strip_prefix('e')
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|n| n % 3 == 0 || n / 10 == 7)
            };
            for q in &qs {
                let hits = idx.search(q, 10, None).unwrap();
                check_hits(&idx, metric, q, &hits, |id| !dead(id));
            }
            // Tombstones: the selection path (all live rows pass, fewer
            // than the exact-search cut-off) answers exactly.
            assert_eq!(recall(&exact, &idx, metric, &qs, 10, None), 1.0);
            assert!(idx.tombstones() > 0);
            let tombstones = idx.tombstones();
            assert_eq!(idx.compact(), tombstones);
            assert_eq!(idx.tombstones(), 0);
            assert_eq!(idx.len(), exact.len());
            // After compaction the graph walk on the retrained codes.
            let r = recall(&exact, &idx, metric, &qs, 10, None);
            assert!(r >= 0.9, "{storage:?} {metric:?} after compact: {r}");

            let dir = tempfile::tempdir().unwrap();
            idx.save(dir.path()).unwrap();
            let back = HnswIndex::load(dir.path()).unwrap();
            assert_eq!(back.config().storage, storage);
            assert_eq!(back.vector_bytes(), idx.vector_bytes());
            for q in &qs {
                for filter in [None, Some(&f)] {
                    assert_eq!(
                        back.search(q, 10, filter).unwrap(),
                        idx.search(q, 10, filter).unwrap(),
                        "{storage:?} {metric:?}"
                    );
                }
            }
        }
    }
}

/// A filter passing more rows than the exact-search cut-off (20,000) is
/// applied during the walk on the codes: every hit passes, scores are
/// exact, recall stays high; tombstones without a filter take the same
/// path.
#[test]
fn broad_filters_and_tombstones_walk_the_codes() {
    let dim = 16;
    let all = common::clustered(26_000, dim, 60, 0.5, 51);
    let qs = common::queries_near(&all, 30, 0.3, 52);
    let exact = exact_index(&all, Metric::Cosine);
    let f = tag_filter(FilterOperator::Ne, 0);
    for storage in KINDS {
        let mut cfg = config(dim, Metric::Cosine, storage);
        cfg.ef_construction = 40;
        cfg.capacity_hint = 26_000;
        let mut idx = HnswIndex::new(cfg).unwrap();
        idx.upsert(entries(&all)).unwrap();
        for q in &qs {
            let hits = idx.search(q, 10, Some(&f)).unwrap();
            let ok = |id: &str| idx.get(id).unwrap().metadata["tag"] != 0i64.into();
            check_hits(&idx, Metric::Cosine, q, &hits, ok);
        }
        let r = recall(&exact, &idx, Metric::Cosine, &qs, 10, Some(&f));
        eprintln!("{storage:?} filtered (80 %) recall@10 = {r:.3}");
        assert!(r >= 0.9, "{storage:?} filtered recall@10 = {r}");
        let gone: Vec<String> = (0..26_000).step_by(13).map(|i| format!("e{i}")).collect();
        let refs: Vec<&str> = gone.iter().map(String::as_str).collect();
        idx.delete(&refs);
        let mut ex = exact_index(&all, Metric::Cosine);
        ex.delete(&refs);
        let r = recall(&ex, &idx, Metric::Cosine, &qs, 10, None);
        assert!(r >= 0.9, "{storage:?} with tombstones: {r}");
    }
}

/// Namespaces of a store hold HNSW indexes of either kind; the store's
/// save and load keep the kind and the answers.
#[test]
fn namespaces_keep_their_storage_through_a_store_save() {
    let dim = 32;
    let all = common::clustered(1_200, dim, 10, 0.4, 61);
    let qs = common::queries_near(&all, 10, 0.4, 62);
    let mut store = VectorStore::new();
    for storage in KINDS {
        let name = format!("{storage:?}");
        let cfg = config(dim, Metric::Cosine, storage).with_rescore(6);
        store.create_namespace(&name, IndexSpec::Hnsw(cfg)).unwrap();
        store.upsert(&name, entries(&all)).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    store.save(tmp.path()).unwrap();
    let back = VectorStore::load(tmp.path()).unwrap();
    for storage in KINDS {
        let name = format!("{storage:?}");
        for q in &qs {
            let a = store.search(&name, q, 5, None).unwrap();
            assert_eq!(a.len(), 5);
            assert_eq!(back.search(&name, q, 5, None).unwrap(), a);
        }
    }
}

/// Rows in a mapped file (`rows_dir`) answer exactly as rows in RAM (both
/// built in batches below the parallel threshold, so both graphs are the
/// same), through replacing upserts, deletes, a compaction and a save /
/// load that maps the rows in the same directory; the file is unlinked,
/// so the directory stays empty, and on Linux the rows are a file mapping
/// (no anonymous memory) that is not resident after the batch.
#[test]
fn rows_in_a_mapped_file_answer_as_rows_in_ram() {
    let dim = 48;
    let all = common::clustered(1_500, dim, 12, 0.4, 71);
    let qs = common::queries_near(&all, 15, 0.4, 72);
    for storage in KINDS {
        let spill = tempfile::tempdir().unwrap();
        let cfg = config(dim, Metric::L2, storage);
        let mut ram = HnswIndex::new(cfg.clone()).unwrap();
        let mut file = HnswIndex::new(cfg.with_rows_dir(spill.path())).unwrap();
        for idx in [&mut ram, &mut file] {
            for chunk in entries(&all).chunks(60) {
                idx.upsert(chunk.to_vec()).unwrap();
            }
            let again: Vec<Entry> = entries(&all[..30])
                .into_iter()
                .map(|e| Entry {
                    vector: e.vector.iter().map(|x| -x).collect(),
                    ..e
                })
                .collect();
            idx.upsert(again).unwrap();
            assert_eq!(idx.delete(&["e40", "e41", "missing"]), 2);
        }
        #[cfg(target_os = "linux")]
        {
            let (size, rss, anon) = mapped_in(spill.path());
            assert!(size >= 1_530 * dim * 4, "rows map of {size} bytes");
            assert_eq!(anon, 0);
            assert!(rss < size / 4, "{rss} of {size} bytes resident");
        }
        let same = |a: &HnswIndex, b: &HnswIndex| {
            for q in &qs {
                let f = tag_filter(FilterOperator::Gte, 2);
                for filter in [None, Some(&f)] {
                    assert_eq!(
                        a.search(q, 10, filter).unwrap(),
                        b.search(q, 10, filter).unwrap(),
                        "{storage:?}"
                    );
                }
            }
            assert_eq!(a.vector("e5"), b.vector("e5"));
            assert_eq!(a.vector_bytes(), b.vector_bytes());
        };
        same(&ram, &file);
        ram.compact();
        file.compact();
        same(&ram, &file);
        let saved = tempfile::tempdir().unwrap();
        file.save(saved.path()).unwrap();
        let back = HnswIndex::load(saved.path()).unwrap();
        assert_eq!(back.config().rows_dir.as_deref(), Some(spill.path()));
        same(&ram, &back);
        drop((file, back));
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
    }
}

/// `(size, resident, anonymous)` bytes of the mappings of files in `dir`
/// (unlinked: `/proc/self/smaps` names them with " (deleted)").
#[cfg(target_os = "linux")]
fn mapped_in(dir: &std::path::Path) -> (usize, usize, usize) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let prefix = dir.to_str().unwrap();
    let (mut size, mut rss, mut anon) = (0, 0, 0);
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.contains(prefix);
            continue;
        }
        if !inside {
            continue;
        }
        let kb = |l: &str| -> usize {
            l.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
                * 1024
        };
        if line.starts_with("Size:") {
            size += kb(line);
        } else if line.starts_with("Rss:") {
            rss += kb(line);
        } else if line.starts_with("Anonymous:") {
            anon += kb(line);
        }
    }
    (size, rss, anon)
}

/// Configurations that would silently not do what they say are refused:
/// a rows directory with f32 storage, f16 storage; a gone rows directory
/// is an I/O error; a saved config without the new fields (earlier
/// versions) reads as f32.
#[test]
fn bad_configs_are_refused_and_old_configs_read_as_f32() {
    let spill = tempfile::tempdir().unwrap();
    let cfg = HnswConfig::new(4, Metric::Cosine).with_rows_dir(spill.path());
    assert!(matches!(
        HnswIndex::new(cfg),
        Err(RetrievalError::InvalidOption(_))
    ));
    assert!(matches!(
        HnswIndex::new(config(4, Metric::Cosine, Storage::F16)),
        Err(RetrievalError::Unsupported(_))
    ));
    let gone = config(4, Metric::Cosine, Storage::Int8).with_rows_dir(spill.path().join("gone"));
    assert!(matches!(
        HnswIndex::new(gone),
        Err(RetrievalError::Io { .. })
    ));
    let old = r#"{"dim":4,"metric":"cosine","m":16,"ef_construction":200,"ef_search":64,"capacity_hint":10}"#;
    let cfg: HnswConfig = serde_json::from_str(old).unwrap();
    assert_eq!(
        (cfg.storage, cfg.rescore, cfg.rows_dir),
        (Storage::F32, 0, None)
    );
}
