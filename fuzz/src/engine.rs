//! Fuzz targets over the facade: filters, the engine's TOML configuration,
//! saved engine directories, the command-line tool's JSON-lines input, and
//! tokenising + embedding arbitrary text on a tiny model.
//!
//! Each `pub fn` takes the fuzzer's bytes and panics only on a bug: parse
//! errors are expected answers; a panic, a hang or a broken round trip is
//! not. Shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` and the
//! stable replay test `crates/ragjet/tests/fuzz_replay.rs` (which includes
//! this file), so it uses only `ragjet`, `serde_json` and `tempfile`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ragjet::inference::Embedder;
use ragjet::{Document, Engine, EngineConfig, Metadata, MetadataFilters, MetadataValue};

/// The command-line tools' `"text"` reader, compiled as the examples use it.
#[path = "../../examples/jsonl.rs"]
#[allow(dead_code)]
mod jsonl;

/// A 2-layer, 32-wide BERT with a 233-token WordPiece vocabulary: a real
/// tokenizer and forward pass at a fuzzing speed.
pub fn tiny_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/ragjet-inference/tests/fixtures/tiny-cross-encoder")
        .canonicalize()
        .or_else(|_| {
            // Included from crates/ragjet/tests: one more level up.
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../ragjet-inference/tests/fixtures/tiny-cross-encoder")
                .canonicalize()
        })
        .expect("the tiny test model of ragjet-inference")
}

/// Filters: the bytes up to the first newline are a filter in LlamaIndex's
/// JSON form, the rest a metadata object. A parsed filter must encode a
/// canonical key, judge the metadata, and survive a JSON round trip with
/// the same canonical key (the retrieval cache keys on it).
pub fn filters(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (filter, meta) = text.split_once('\n').unwrap_or((&text, "{}"));
    let Ok(f) = MetadataFilters::from_json(filter) else {
        return;
    };
    f.validate().expect("validate is documented as always Ok");
    let key = f.canonical_key();
    let metadata: Metadata = serde_json::from_str(meta).unwrap_or_else(|_| {
        let mut m = Metadata::new();
        m.insert("a".into(), MetadataValue::from(1i64));
        m.insert("b".into(), MetadataValue::from("x"));
        m
    });
    let verdict = f.matches(&metadata);
    let json = serde_json::to_string(&f).expect("a parsed filter serialises");
    let back = MetadataFilters::from_json(&json)
        .unwrap_or_else(|e| panic!("re-parsing {json:?} failed: {e}"));
    assert_eq!(back.canonical_key(), key, "round trip changed {json}");
    assert_eq!(
        back.matches(&metadata),
        verdict,
        "round trip changed {json}"
    );
}

/// Engine configuration: TOML text. A configuration that parses must
/// validate (parsing validates) and print back to TOML that parses to the
/// same configuration (compared as printed TOML, so NaN cannot fool it).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = EngineConfig::from_toml_str(text) else {
        return;
    };
    let printed = c.to_toml_string().expect("a parsed configuration prints");
    let back = EngineConfig::from_toml_str(&printed)
        .unwrap_or_else(|e| panic!("printed configuration does not parse: {e}\n{printed}"));
    assert_eq!(
        back.to_toml_string().expect("prints again"),
        printed,
        "the TOML round trip changed the configuration"
    );
}

/// The command-line tool's JSON-lines input: `rag ingest` documents (the
/// parse of `examples/rag.rs`'s `read_documents`, line by line: an object
/// with string `id` and `text`, every other field a metadata value) and the
/// shared `"text"` reader of `examples/jsonl.rs`, run on a file holding
/// the bytes. Documents that parse are chunked by the tiny model's engine.
pub fn jsonl(scratch: &Path, data: &[u8]) {
    let path = scratch.join("input.jsonl");
    std::fs::write(&path, data).expect("scratch file");
    let _ = jsonl::read_texts(&path, Some(64));
    let mut docs = Vec::new();
    for line in String::from_utf8_lossy(data).lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            continue;
        };
        let (Some(serde_json::Value::String(id)), Some(serde_json::Value::String(text))) =
            (obj.get("id"), obj.get("text"))
        else {
            continue;
        };
        let mut doc = Document::new(id.clone(), text.clone());
        let mut ok = true;
        for (k, v) in &obj {
            if k == "id" || k == "text" {
                continue;
            }
            match serde_json::from_value::<MetadataValue>(v.clone()) {
                Ok(v) => {
                    doc.metadata.insert(k.clone(), v);
                }
                Err(_) => ok = false,
            }
        }
        if ok {
            docs.push(doc);
        }
    }
    if docs.is_empty() || docs.len() > 16 {
        return;
    }
    // Ingest reports bad documents (empty id, blank text) one by one; an
    // engine-level error on documents that parsed is a bug. Deleting them
    // again keeps the shared engine small across inputs.
    static E: OnceLock<Engine> = OnceLock::new();
    let engine = E.get_or_init(|| tiny_engine(None).expect("tiny engine builds"));
    let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
    engine
        .ingest(docs)
        .expect("ingest of parsed documents answers a report");
    for id in ids {
        engine.delete(&id).expect("delete answers");
    }
}

/// An engine on the tiny model, chunks of at most 48 tokens (its positions
/// stop at 64), no caches on disk unless `store` is given.
pub fn tiny_engine(store: Option<&Path>) -> ragjet::Result<Engine> {
    let mut b = Engine::builder()
        .model_dir(tiny_model())
        .num_threads(1)
        .chunking(48, 8);
    if let Some(dir) = store {
        b = b.store_dir(dir);
    }
    b.build()
}

/// Tokenising and embedding arbitrary text (lossy UTF-8) on the tiny
/// model: token counts, spans and truncation agree with each other and
/// every vector is finite and of the model's dimension.
pub fn embed(data: &[u8]) {
    static M: OnceLock<Embedder> = OnceLock::new();
    let m = M.get_or_init(|| Embedder::load(tiny_model()).expect("tiny model loads"));
    let text = String::from_utf8_lossy(data);
    let spans = m.token_spans(&text).expect("any text tokenises");
    for s in &spans {
        assert!(
            s.start <= s.end
                && s.end <= text.len()
                && text.is_char_boundary(s.start)
                && text.is_char_boundary(s.end),
            "span {s:?} outside {} bytes or not on a char boundary",
            text.len()
        );
    }
    let n = m.count_tokens(&text).expect("any text counts");
    let cut = m.truncate_to_tokens(&text, 5).expect("any text truncates");
    assert!(text.starts_with(cut), "a truncation is a prefix");
    assert!(m.count_tokens(cut).expect("counts") <= n.max(5));
    let parts: Vec<&str> = text.split('\n').take(8).collect();
    let e = m.embed(&parts).expect("any texts embed");
    assert_eq!(e.rows(), parts.len());
    assert_eq!(e.dim(), m.dim());
    assert!(
        e.as_slice().iter().all(|x| x.is_finite()),
        "non-finite embedding"
    );
}

/// A saved engine directory (tiny model, two namespaces, BM25 on) made
/// once per process; fuzz inputs damage copies of it.
fn template() -> &'static (tempfile::TempDir, Vec<PathBuf>) {
    static T: OnceLock<(tempfile::TempDir, Vec<PathBuf>)> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = tiny_engine(Some(dir.path())).expect("tiny engine builds");
        let docs = (0..12)
            .map(|i| {
                Document::new(
                    format!("d{i}"),
                    format!("passage {i} about cache and index {}", i * 7),
                )
                .with_meta("group", (i % 3) as i64)
            })
            .collect();
        e.ingest(docs).expect("ingest");
        e.save(dir.path()).expect("save");
        drop(e);
        let mut files = Vec::new();
        collect_files(dir.path(), dir.path(), &mut files);
        // Every file, the embedding cache's redb file among them: redb
        // aborts the process on some damaged files, so the disk tier checks
        // an existing file in a child process and moves a damaged one aside
        // (docs/reliability.md, crash 2).
        files.sort();
        (dir, files)
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            collect_files(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let p = entry.expect("entry").path();
        let dest = to.join(p.file_name().expect("named"));
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// Loading index files: a copy of a saved engine directory with one of its
/// state files (not the embedding cache) damaged (byte 0 picks the file, byte 1 how: replaced by the rest of the
/// input, overwritten at an offset, truncated, or bytes flipped), then
/// opened. Opening must answer an engine or an error; an engine that opens
/// must answer a query.
pub fn store(scratch: &Path, data: &[u8]) {
    let [which, how, rest @ ..] = data else {
        return;
    };
    let (template, files) = template();
    let dir = scratch.join("store");
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(template.path(), &dir);
    let file = dir.join(&files[*which as usize % files.len()]);
    let mut bytes = std::fs::read(&file).expect("template file");
    match how % 4 {
        0 => bytes = rest.to_vec(),
        1 => {
            let at = rest
                .get(..2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize)
                % bytes.len().max(1);
            let patch = rest.get(2..).unwrap_or(&[]);
            let end = (at + patch.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&patch[..end - at]);
        }
        2 => {
            let len = rest
                .get(..2)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
            bytes.truncate(len % bytes.len().max(1));
        }
        _ => {
            for pair in rest.chunks(3) {
                if let [a, b, x] = pair {
                    let at = u16::from_le_bytes([*a, *b]) as usize % bytes.len().max(1);
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= x | 1;
                    }
                }
            }
        }
    }
    std::fs::write(&file, &bytes).expect("write damaged file");
    let opened = Engine::builder()
        .model_dir(tiny_model())
        .num_threads(1)
        .open(&dir);
    if let Ok(engine) = opened {
        let _ = engine.len();
        engine
            .query("cache index", &ragjet::QueryOptions::new().top_k(3))
            .expect("an engine that opened answers a query");
    }
}
