//! The engine's directory: every part of the state in one generation,
//! switched to atomically.
//!
//! ```text
//! dir/
//!   ENGINE                  {"state": "state-00000003", "manifest_crc32": …}
//!   state-00000003/
//!     MANIFEST.json         format, version, model identity, engine version,
//!                           length and CRC-32 of config.toml and docs.json
//!     config.toml           the configuration
//!     docs.json             per namespace: document id → content hash, chunk spans
//!     index/                ragjet_retrieval::VectorStore (its own checksums)
//!     bm25/ns-<i>/          ragjet_retrieval::Bm25Index per namespace (same)
//!   embeddings.redb         the embedding cache's disk tier (not versioned:
//!                           a cache, valid for any state)
//! ```
//!
//! Saving writes `state-N.tmp`, fsyncs it, renames it to `state-N`, then
//! replaces `ENGINE` through `ENGINE.tmp` + rename and fsyncs the directory
//! before older states are removed: a crash at any point leaves `ENGINE`
//! naming a complete state, the old or the new. Opening checks `ENGINE`'s
//! checksum of the manifest and the manifest's checksums of every file it
//! lists before parsing anything; the index and BM25 verify their own.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use ragjet_retrieval::{Bm25Index, VectorStore};
use serde::{Deserialize, Serialize};

use super::model::ModelIdentity;
use super::{Document, State};
use crate::chunk::ChunkerConfig;
use crate::config::EngineConfig;
use crate::error::{Error, Result};

const POINTER: &str = "ENGINE";
const MANIFEST: &str = "MANIFEST.json";
const FORMAT: &str = "ragjet-engine";
const FORMAT_VERSION: u32 = 1;
const CONFIG: &str = "config.toml";
const DOCS: &str = "docs.json";

/// What the engine keeps about a document besides its chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DocEntry {
    /// Hash of text, metadata and chunking settings: equal means unchanged.
    pub hash: String,
    /// Byte range in the document of chunk `i` (`"{id}#{i}"`).
    pub spans: Vec<(usize, usize)>,
}

/// The hash that decides whether a re-ingested document changed.
pub(crate) fn doc_hash(d: &Document, chunking: &ChunkerConfig) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"ragjet-engine/doc/v1");
    h.update(&(d.text.len() as u64).to_le_bytes());
    h.update(d.text.as_bytes());
    // Metadata is a BTreeMap, so its JSON is canonical.
    let meta = serde_json::to_vec(&d.metadata).unwrap_or_default();
    h.update(&(meta.len() as u64).to_le_bytes());
    h.update(&meta);
    h.update(format!("{chunking:?}").as_bytes());
    h.finalize().to_hex()[..32].to_string()
}

#[derive(Serialize, Deserialize)]
struct Pointer {
    state: String,
    manifest_crc32: u32,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    name: String,
    len: u64,
    crc32: u32,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    format: String,
    format_version: u32,
    model: ModelIdentity,
    version: u64,
    instance: u64,
    /// Per namespace, the version of its last change.
    namespace_versions: BTreeMap<String, u64>,
    /// Namespaces with a BM25 index, in the order of `bm25/ns-<i>`.
    bm25: Vec<String>,
    files: Vec<FileEntry>,
}

/// The parts of an engine that are saved.
pub(crate) struct SaveView<'a> {
    pub config: &'a EngineConfig,
    pub model: &'a ModelIdentity,
    pub version: u64,
    pub instance: u64,
    pub store: &'a VectorStore,
    pub bm25: &'a BTreeMap<String, Bm25Index>,
    pub docs: &'a BTreeMap<String, BTreeMap<String, DocEntry>>,
    pub versions: &'a BTreeMap<String, u64>,
}

/// A loaded state, not yet attached to a model.
pub(crate) struct Saved {
    pub model: ModelIdentity,
    pub version: u64,
    pub instance: u64,
    pub state: State,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::storage(path, e)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn fsync_dir(path: &Path) -> Result<()> {
    // Directories open read-only and fsync on Unix; elsewhere best effort.
    let d = File::open(path).map_err(io(path))?;
    let _ = d.sync_all();
    Ok(())
}

fn state_number(name: &str) -> Option<u64> {
    name.strip_prefix("state-")?.parse().ok()
}

/// Whether `dir` holds a saved engine.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(POINTER).is_file()
}

/// Saves `view` as a new state of `dir`.
pub(crate) fn write(dir: &Path, view: &SaveView<'_>) -> Result<()> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut next = 1u64;
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let base = name.strip_suffix(".tmp").unwrap_or(&name);
        if let Some(n) = state_number(base) {
            next = next.max(n + 1);
        }
    }
    let name = format!("state-{next:08}");
    let tmp = dir.join(format!("{name}.tmp"));
    fs::create_dir(&tmp).map_err(io(&tmp))?;

    let config = view.config.to_toml_string()?;
    let docs = serde_json::to_vec(view.docs).map_err(|e| Error::storage(&tmp, e))?;
    let mut files = Vec::new();
    for (file, bytes) in [(CONFIG, config.as_bytes()), (DOCS, docs.as_slice())] {
        write_file(&tmp.join(file), bytes)?;
        files.push(FileEntry {
            name: file.to_string(),
            len: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        });
    }
    view.store.save(&tmp.join("index"))?;
    let bm25_dir = tmp.join("bm25");
    fs::create_dir(&bm25_dir).map_err(io(&bm25_dir))?;
    let mut bm25_names = Vec::new();
    for (i, (ns, b)) in view.bm25.iter().enumerate() {
        b.save(&bm25_dir.join(format!("ns-{i}")))?;
        bm25_names.push(ns.clone());
    }
    fsync_dir(&bm25_dir)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        model: view.model.clone(),
        version: view.version,
        instance: view.instance,
        namespace_versions: view.versions.clone(),
        bm25: bm25_names,
        files,
    };
    let mbytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::storage(&tmp, e))?;
    write_file(&tmp.join(MANIFEST), &mbytes)?;
    fsync_dir(&tmp)?;
    let state_dir = dir.join(&name);
    fs::rename(&tmp, &state_dir).map_err(io(&state_dir))?;
    fsync_dir(dir)?;

    let pointer = Pointer {
        state: name.clone(),
        manifest_crc32: crc32fast::hash(&mbytes),
    };
    let pbytes = serde_json::to_vec(&pointer).map_err(|e| Error::storage(dir, e))?;
    let ptmp = dir.join(format!("{POINTER}.tmp"));
    write_file(&ptmp, &pbytes)?;
    let ppath = dir.join(POINTER);
    fs::rename(&ptmp, &ppath).map_err(io(&ppath))?;
    fsync_dir(dir)?;

    // Older states and leftovers of crashed saves are garbage now.
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        let base = n.strip_suffix(".tmp").unwrap_or(&n);
        if n != name && state_number(base).is_some() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// Refuses a symbolic link at `path`: an engine directory is read and
/// written only inside itself, so a link planted in it (to a copy with the
/// expected checksums, to a device, to another directory, to a file the
/// embedding cache would then write) cannot make the engine touch anything
/// elsewhere. `dir` itself may be a link: the operator's choice.
pub(crate) fn refuse_link(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::storage(
            path,
            "a symbolic link in a saved engine is not followed",
        )),
        // A missing part is reported by whoever reads it.
        _ => Ok(()),
    }
}

/// The current state directory of `dir` and its verified manifest.
fn open_verified(dir: &Path) -> Result<(PathBuf, Manifest)> {
    let ppath = dir.join(POINTER);
    refuse_link(&ppath)?;
    if !ppath.is_file() {
        return Err(Error::storage(dir, "no saved engine here (no ENGINE file)"));
    }
    let pbytes = fs::read(&ppath).map_err(io(&ppath))?;
    let pointer: Pointer = serde_json::from_slice(&pbytes)
        .map_err(|e| Error::storage(&ppath, format!("unreadable: {e}")))?;
    if state_number(&pointer.state).is_none() {
        return Err(Error::storage(&ppath, "bad state name"));
    }
    let state_dir = dir.join(&pointer.state);
    let mpath = state_dir.join(MANIFEST);
    refuse_link(&state_dir)?;
    refuse_link(&mpath)?;
    let mbytes = fs::read(&mpath).map_err(io(&mpath))?;
    if crc32fast::hash(&mbytes) != pointer.manifest_crc32 {
        return Err(Error::storage(&mpath, "manifest checksum mismatch"));
    }
    let manifest: Manifest = serde_json::from_slice(&mbytes)
        .map_err(|e| Error::storage(&mpath, format!("unreadable: {e}")))?;
    if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
        return Err(Error::storage(
            &mpath,
            format!(
                "format {:?} version {} is not this build's {FORMAT:?} version {FORMAT_VERSION}",
                manifest.format, manifest.format_version
            ),
        ));
    }
    for f in &manifest.files {
        if f.name.contains('/') || f.name.contains('\\') || f.name.starts_with('.') {
            return Err(Error::storage(
                &mpath,
                format!("bad file name {:?}", f.name),
            ));
        }
        let p = state_dir.join(&f.name);
        refuse_link(&p)?;
        let bytes = fs::read(&p).map_err(io(&p))?;
        if bytes.len() as u64 != f.len {
            return Err(Error::storage(
                &p,
                format!("length {}, expected {} (truncated?)", bytes.len(), f.len),
            ));
        }
        if crc32fast::hash(&bytes) != f.crc32 {
            return Err(Error::storage(&p, "checksum mismatch"));
        }
    }
    Ok((state_dir, manifest))
}

/// The configuration saved in `dir`.
pub(crate) fn read_config(dir: &Path) -> Result<EngineConfig> {
    let (state_dir, _) = open_verified(dir)?;
    let path = state_dir.join(CONFIG);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    EngineConfig::from_toml_str(&text)
}

/// Loads the state saved in `dir`.
pub(crate) fn read(dir: &Path) -> Result<Saved> {
    let (state_dir, manifest) = open_verified(dir)?;
    let dpath = state_dir.join(DOCS);
    let dbytes = fs::read(&dpath).map_err(io(&dpath))?;
    let docs: BTreeMap<String, BTreeMap<String, DocEntry>> = serde_json::from_slice(&dbytes)
        .map_err(|e| Error::storage(&dpath, format!("unreadable: {e}")))?;
    // The index and BM25 loaders refuse links inside the directory they
    // are given; the directories themselves are checked here.
    let index_dir = state_dir.join("index");
    refuse_link(&index_dir)?;
    let store = VectorStore::load(&index_dir)?;
    let mut bm25 = BTreeMap::new();
    refuse_link(&state_dir.join("bm25"))?;
    for (i, ns) in manifest.bm25.iter().enumerate() {
        let ns_dir = state_dir.join("bm25").join(format!("ns-{i}"));
        refuse_link(&ns_dir)?;
        let b = Bm25Index::load(&ns_dir)?;
        if bm25.insert(ns.clone(), b).is_some() {
            return Err(Error::storage(
                &state_dir,
                format!("BM25 namespace {ns:?} appears twice"),
            ));
        }
    }
    // Every document's namespace must have an index: a state that says
    // otherwise was not written by `write`.
    for ns in docs.keys() {
        if store.namespace(ns).is_err() {
            return Err(Error::storage(
                &dpath,
                format!("namespace {ns:?} has documents but no index"),
            ));
        }
    }
    Ok(Saved {
        model: manifest.model,
        version: manifest.version,
        instance: manifest.instance,
        state: State {
            store,
            bm25,
            docs,
            versions: manifest.namespace_versions,
        },
    })
}
