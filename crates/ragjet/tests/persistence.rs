//! Saving, opening, the embedding cache across engines, the automatic
//! move to HNSW, and damaged directories.

mod common;

use std::path::Path;

use ragjet::{CacheOutcome, Document, Engine, Error, ErrorKind, QueryOptions, SearchMode};

fn docs(range: std::ops::Range<usize>) -> Vec<Document> {
    common::corpus()[range].to_vec()
}

/// Re-ingesting unchanged documents embeds nothing: in the same engine
/// (unchanged documents are skipped), in a new engine on the same store
/// directory (the disk tier of the embedding cache answers), and in the
/// saved engine reopened.
#[test]
fn reingest_embeds_nothing_in_the_same_a_new_or_a_reopened_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let docs = docs(0..40);
    {
        let e = common::builder().store_dir(&store).build().unwrap();
        let r = e.ingest(docs.clone()).unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        assert_eq!(
            (r.chunks, r.embeddings_computed, r.embeddings_cached),
            (40, 40, 0)
        );
        let r = e.ingest(docs.clone()).unwrap();
        assert_eq!((r.unchanged, r.chunks, r.embeddings_computed), (40, 0, 0));
        assert_eq!(r.ingested.len(), 40);
        // New metadata re-indexes the document; its text is not re-embedded.
        let mut edited = docs[3].clone();
        edited.metadata.insert("edited".into(), true.into());
        let r = e.ingest(vec![edited]).unwrap();
        assert_eq!(
            (
                r.unchanged,
                r.chunks,
                r.embeddings_computed,
                r.embeddings_cached
            ),
            (0, 1, 0, 1)
        );
        e.save(&store).unwrap();
    }
    {
        // A new engine (an empty index) on the same directory: the
        // embeddings come from the disk tier written by the first one.
        let e = common::builder().store_dir(&store).build().unwrap();
        assert_eq!(e.num_documents("default"), 0);
        let r = e.ingest(docs.clone()).unwrap();
        assert_eq!(
            (r.chunks, r.embeddings_computed, r.embeddings_cached),
            (40, 0, 40)
        );
        // The time it saves is measured by the engine_bench example, not
        // here: a timed assertion on a shared machine would be flaky.
    }
    {
        let e = Engine::open(&store).unwrap();
        assert_eq!(e.store_dir(), Some(store.as_path()));
        assert_eq!(e.num_documents("default"), 40);
        assert_eq!(e.num_chunks("default"), 40);
        let a = e
            .query(&docs[5].text, &QueryOptions::new().top_k(1))
            .unwrap();
        assert_eq!(a.hits[0].doc_id, docs[5].id);
        assert_eq!(a.hits[0].metadata, docs[5].metadata);
        let a = e
            .query(&docs[3].text, &QueryOptions::new().top_k(1))
            .unwrap();
        assert_eq!(
            a.hits[0].metadata["edited"],
            ragjet::MetadataValue::Bool(true)
        );
        // Keyword search works on the reopened BM25 index.
        let kw = e
            .query(
                &docs[9].text,
                &QueryOptions::new().top_k(1).mode(SearchMode::Keyword),
            )
            .unwrap();
        assert_eq!(kw.hits[0].doc_id, docs[9].id);
        // docs[3] goes back to its first metadata: re-indexed, not re-embedded.
        let r = e.ingest(docs.clone()).unwrap();
        assert_eq!((r.unchanged, r.chunks, r.embeddings_computed), (39, 1, 0));
    }
}

/// An engine without a directory saves its embeddings along with the
/// state, so an engine started later on that directory embeds nothing.
#[test]
fn save_carries_the_embeddings_to_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("saved");
    let docs = docs(40..60);
    {
        let e = common::builder().build().unwrap();
        assert_eq!(e.store_dir(), None);
        let r = e.ingest(docs.clone()).unwrap();
        assert_eq!(r.embeddings_computed, 20);
        e.delete(&docs[0].id).unwrap();
        e.save(&target).unwrap();
    }
    assert!(Engine::exists(&target));
    assert!(target.join(ragjet::engine::EMBEDDING_CACHE_FILE).is_file());
    let e = common::builder().store_dir(&target).build().unwrap();
    let r = e.ingest(docs[1..].to_vec()).unwrap();
    assert_eq!((r.embeddings_computed, r.embeddings_cached), (0, 19));
    drop(e);
    let e = Engine::open(&target).unwrap();
    assert_eq!(
        e.num_documents("default"),
        19,
        "the deleted document stays deleted"
    );
    assert!(!e.document_ids("default").contains(&docs[0].id));
}

/// With `index.kind = "auto"` a namespace moves to HNSW once it passes the
/// threshold, keeps answering (MMR included, whose vectors then come from
/// the embedding cache), and stays HNSW across save and open.
#[test]
fn auto_index_moves_to_hnsw_past_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("auto");
    let corpus = docs(60..120);
    let e = common::builder()
        .store_dir(&store)
        .configure(|c| c.index.hnsw_threshold = 30)
        .build()
        .unwrap();
    e.ingest(corpus[..20].to_vec()).unwrap();
    assert!(!e.is_hnsw("default"));
    let version = e.version();
    e.ingest(corpus[20..].to_vec()).unwrap();
    assert!(e.is_hnsw("default"));
    assert!(e.version() > version);
    assert_eq!(e.num_chunks("default"), 60);
    for d in corpus.iter().step_by(7) {
        let a = e.query(&d.text, &QueryOptions::new().top_k(1)).unwrap();
        assert_eq!(a.hits[0].doc_id, d.id);
    }
    let mmr = e
        .query(&corpus[0].text, &QueryOptions::new().top_k(5).mmr(0.5))
        .unwrap();
    assert_eq!(mmr.hits.len(), 5);
    assert_eq!(mmr.hits[0].doc_id, corpus[0].id);
    e.delete(&corpus[1].id).unwrap();
    e.save(&store).unwrap();
    drop(e);
    let e = Engine::open(&store).unwrap();
    assert!(e.is_hnsw("default"));
    assert_eq!(e.num_chunks("default"), 59);
    let a = e
        .query(&corpus[2].text, &QueryOptions::new().top_k(3))
        .unwrap();
    assert_eq!(a.hits[0].doc_id, corpus[2].id);
    assert!(a.hits.iter().all(|h| h.doc_id != corpus[1].id));
}

fn saved_engine(dir: &Path) {
    let e = common::builder().build().unwrap();
    e.ingest(docs(120..126)).unwrap();
    e.save(dir).unwrap();
}

fn state_dir(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state-")
                && p.is_dir()
        })
        .expect("a state directory")
}

#[test]
fn open_refuses_damaged_or_foreign_state() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Engine::open(dir.path().join("nothing")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Storage, "{missing}");
    assert!(!Engine::exists(dir.path()));

    // A leftover of a crashed save does not disturb opening, and the next
    // save clears it.
    let store = dir.path().join("store");
    saved_engine(&store);
    std::fs::create_dir(store.join("state-00000099.tmp")).unwrap();
    std::fs::write(store.join("ENGINE.tmp"), b"{half").unwrap();
    let e = Engine::open(&store).unwrap();
    assert_eq!(e.num_documents("default"), 6);
    e.save(&store).unwrap();
    drop(e);
    assert!(!store.join("state-00000099.tmp").exists());

    // A flipped byte in the document table.
    let docs_file = state_dir(&store).join("docs.json");
    let mut bytes = std::fs::read(&docs_file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&docs_file, &bytes).unwrap();
    let err = Engine::open(&store).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");

    // A truncated index file.
    let store = dir.path().join("store2");
    saved_engine(&store);
    let index_dir = state_dir(&store).join("index");
    let gen = std::fs::read_dir(&index_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    let victim = std::fs::read_dir(&gen)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let len = std::fs::metadata(&victim).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = Engine::open(&store).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Storage, "{err}");

    // A state made with another model: its vectors mean nothing here.
    let store = dir.path().join("store3");
    saved_engine(&store);
    let state = state_dir(&store);
    let manifest_path = state.join("MANIFEST.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["model"]["fingerprint"] = "0123456789abcdef0123456789abcdef".into();
    let mbytes = serde_json::to_vec_pretty(&manifest).unwrap();
    std::fs::write(&manifest_path, &mbytes).unwrap();
    let pointer = serde_json::json!({
        "state": state.file_name().unwrap().to_string_lossy(),
        "manifest_crc32": crc32fast::hash(&mbytes),
    });
    std::fs::write(store.join("ENGINE"), serde_json::to_vec(&pointer).unwrap()).unwrap();
    let err = Engine::open(&store).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "model"),
        "{err}"
    );
}

/// The saved configuration comes back with the engine.
#[test]
fn open_uses_the_saved_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("cfg");
    let e = common::builder()
        .chunking(100, 10)
        .bm25(false)
        .retrieval_cache(false)
        .build()
        .unwrap();
    e.ingest(docs(130..133)).unwrap();
    e.save(&store).unwrap();
    let config = e.config().clone();
    drop(e);
    let e = Engine::open(&store).unwrap();
    assert_eq!(e.config(), &config);
    let err = e
        .query("anything", &QueryOptions::new().mode(SearchMode::Keyword))
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "bm25.enabled"),
        "{err}"
    );
    let a = e.query("anything", &QueryOptions::new()).unwrap();
    assert_eq!(a.cache, CacheOutcome::Bypassed);
    // Opened with BM25 on, the keyword index is rebuilt from the chunks.
    drop(e);
    let e = Engine::builder()
        .config(config.clone())
        .bm25(true)
        .open(&store)
        .unwrap();
    let d = &docs(130..133)[1];
    let kw = e
        .query(
            &d.text,
            &QueryOptions::new().top_k(1).mode(SearchMode::Keyword),
        )
        .unwrap();
    assert_eq!(kw.hits[0].doc_id, d.id);
}

#[test]
fn config_files_name_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.toml");
    std::fs::write(
        &path,
        "[cache.semantic]\nenabled = true\nthreshold = 0.9\n\n[index]\nkind = \"flat\"\nhnsw_treshold = 5\n",
    )
    .unwrap();
    let err = Engine::builder().config_file(&path).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref key, .. } if key == "index.hnsw_treshold"),
        "{err}"
    );
    std::fs::write(
        &path,
        "[cache.semantic]\nenabled = true\nthreshold = 0.9\n\n[index]\nkind = \"flat\"\n",
    )
    .unwrap();
    let b = Engine::builder().config_file(&path).unwrap();
    let e = b.build().unwrap();
    assert!(e.config().cache.semantic.enabled);
    assert_eq!(e.config().index.kind, ragjet::IndexKind::Flat);
}
