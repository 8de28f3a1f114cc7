//! Loading a saved index reads only files inside its directory: a manifest
//! naming `..`, an absolute path or `.`, and a symbolic link (a listed
//! file, a subdirectory or the generation itself pointing elsewhere) are
//! refused, even when the link's target has exactly the bytes and
//! checksums the manifest expects. Links could otherwise make a loader
//! that is handed a directory read (or, through hnsw_rs's reopen, map)
//! files the directory's owner never put there.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use ragjet_retrieval::{
    Entry, FlatConfig, FlatIndex, IndexSpec, Metric, RetrievalError, VectorIndex, VectorStore,
};

fn saved_flat(dir: &Path) {
    let mut idx = FlatIndex::new(FlatConfig::new(3, Metric::Cosine)).unwrap();
    idx.upsert(vec![
        Entry::new("a", vec![1.0, 0.0, 0.0]).with_text("alpha"),
        Entry::new("b", vec![0.0, 1.0, 0.0]).with_text("beta"),
    ])
    .unwrap();
    idx.save(dir).unwrap();
}

fn generation(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("gen-"))
        .unwrap()
}

/// Every regular file under `dir`, relative paths.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn refused<T: std::fmt::Debug>(r: Result<T, RetrievalError>, what: &str) -> String {
    match r {
        Err(e @ RetrievalError::Corrupt { .. }) | Err(e @ RetrievalError::Io { .. }) => {
            e.to_string()
        }
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// `CURRENT`, the manifest and each listed file replaced by a link to an
/// identical copy outside the directory: still refused.
#[test]
fn a_listed_file_that_is_a_link_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    saved_flat(&dir);
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let names = files(&dir);
    assert!(names.len() >= 3, "{names:?}");
    for (i, name) in names.into_iter().enumerate() {
        let inside = dir.join(&name);
        let copy = outside.join(i.to_string());
        fs::copy(&inside, &copy).unwrap();
        fs::remove_file(&inside).unwrap();
        symlink(&copy, &inside).unwrap();
        let e = refused(FlatIndex::load(&dir), &format!("{name:?} linked outside"));
        assert!(e.contains("link"), "{e}");
        fs::remove_file(&inside).unwrap();
        fs::copy(&copy, &inside).unwrap();
        FlatIndex::load(&dir).expect("restored");
    }
}

/// A listed file replaced by a FIFO (reading it would block forever) is
/// refused without being opened.
#[test]
fn a_listed_file_that_is_a_fifo_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    saved_flat(&dir);
    let gen = generation(&dir);
    let name = files(&gen)
        .into_iter()
        .find(|n| n != Path::new("MANIFEST.json"))
        .unwrap();
    fs::remove_file(gen.join(&name)).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(gen.join(&name))
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(made.success());
    let e = refused(FlatIndex::load(&dir), "a FIFO");
    assert!(e.contains("not a regular file"), "{e}");
}

/// The generation directory, and a namespace subdirectory of a store, moved
/// out and linked back in.
#[test]
fn a_linked_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    saved_flat(&dir);
    let gen = generation(&dir);
    let moved = tmp.path().join("moved-gen");
    fs::rename(&gen, &moved).unwrap();
    symlink(&moved, &gen).unwrap();
    let e = refused(FlatIndex::load(&dir), "linked generation");
    assert!(e.contains("link"), "{e}");

    let sdir = tmp.path().join("store");
    let mut store = VectorStore::new();
    store
        .create_namespace("hr", IndexSpec::Flat(FlatConfig::new(2, Metric::Cosine)))
        .unwrap();
    store
        .upsert("hr", vec![Entry::new("x", vec![1.0, 2.0])])
        .unwrap();
    store.save(&sdir).unwrap();
    VectorStore::load(&sdir).expect("a clean save loads");
    let sgen = generation(&sdir);
    let ns = fs::read_dir(&sgen)
        .unwrap()
        .flatten()
        .find(|e| e.file_type().unwrap().is_dir())
        .expect("a namespace subdirectory")
        .path();
    let moved = tmp.path().join("moved-ns");
    fs::rename(&ns, &moved).unwrap();
    symlink(&moved, &ns).unwrap();
    let e = refused(VectorStore::load(&sdir), "linked namespace directory");
    assert!(e.contains("link"), "{e}");
}

/// A manifest naming files outside the generation, with every checksum
/// recomputed so only the name is wrong.
#[test]
fn manifest_names_outside_the_generation_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    saved_flat(&dir);
    let gen = generation(&dir);
    let gen_name = gen.file_name().unwrap().to_string_lossy().into_owned();
    let manifest_path = gen.join("MANIFEST.json");
    let original: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    // A file one level up, with the right length and checksum.
    let first = original["files"][0]["name"].as_str().unwrap().to_string();
    fs::copy(gen.join(&first), dir.join(&first)).unwrap();
    for bad in [
        format!("../{first}"),
        format!("./{first}"),
        format!("{}/{first}", dir.display()),
        format!("x/../../{first}"),
    ] {
        let mut m = original.clone();
        m["files"][0]["name"] = bad.clone().into();
        let bytes = serde_json::to_vec(&m).unwrap();
        fs::write(&manifest_path, &bytes).unwrap();
        let current = serde_json::json!({
            "generation": gen_name,
            "manifest_crc32": crc32fast::hash(&bytes),
        });
        fs::write(dir.join("CURRENT"), serde_json::to_vec(&current).unwrap()).unwrap();
        refused(FlatIndex::load(&dir), &bad);
    }
}
