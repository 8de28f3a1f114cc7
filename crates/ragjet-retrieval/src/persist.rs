//! Crash-safe on-disk layout shared by every saved index and store.
//!
//! ```text
//! dir/
//!   CURRENT                 {"generation": "gen-00000003", "manifest_crc32": …}
//!   gen-00000003/
//!     MANIFEST.json         format name + version, kind, every file with length and CRC-32
//!     …index files…
//! ```
//!
//! `save` writes a complete new generation into `gen-N.tmp`, fsyncs every
//! file and the directory, renames it to `gen-N`, then writes `CURRENT.tmp`,
//! fsyncs it and renames it over `CURRENT` (an atomic replace on POSIX),
//! fsyncs `dir`, and only then deletes older generations. A crash at any
//! point therefore leaves `CURRENT` naming either the old or the new
//! complete generation. `load` checks `CURRENT`'s checksum of the manifest,
//! the format version, and the length and CRC-32 of every file before any of
//! them is parsed, so a truncated or corrupted file is an error, never a
//! panic or a silently wrong index.
//!
//! Limits: CRC-32 guards against accidents (truncation, torn writes, bit
//! rot), not against a deliberately crafted file — saved indexes are trusted
//! input. The HNSW graph files are hnsw_rs's own dump format, which is
//! native-endian with 64-bit `usize`: an index moves between machines of the
//! same byte order and word size only. hnsw_rs's loader can abort the process
//! on a malformed graph file, which is why nothing reaches it before every
//! checksum has matched.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{corrupt, io_err, Result};

/// Name written into every manifest.
pub(crate) const FORMAT_NAME: &str = "ragjet-retrieval";
/// Bumped on any incompatible change of the on-disk layout.
pub const FORMAT_VERSION: u32 = 1;

const CURRENT: &str = "CURRENT";
const MANIFEST: &str = "MANIFEST.json";

#[derive(Debug, Serialize, Deserialize)]
struct Current {
    generation: String,
    manifest_crc32: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FileEntry {
    pub name: String,
    pub len: u64,
    pub crc32: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub kind: String,
    pub files: Vec<FileEntry>,
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(io_err(path))
}

fn fsync_dir(path: &Path) -> Result<()> {
    // Directories can be opened read-only and fsynced on Unix; elsewhere
    // this is best effort.
    match File::open(path) {
        Ok(d) => {
            let _ = d.sync_all();
            Ok(())
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn crc_of(path: &Path) -> Result<(u64, u32)> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
    Ok((len, h.finalize()))
}

/// Relative paths of all files under `root` (sorted), fsyncing each file
/// and directory on the way.
fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    let here = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&here)
        .map_err(io_err(&here))?
        .collect::<std::result::Result<_, _>>()
        .map_err(io_err(&here))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let r = rel.join(e.file_name());
        let ft = e.file_type().map_err(io_err(&p))?;
        if ft.is_dir() {
            walk(root, &r, out)?;
        } else {
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&p))?;
            out.push(r.to_string_lossy().replace('\\', "/"));
        }
    }
    fsync_dir(&here)
}

fn generation_number(name: &str) -> Option<u64> {
    name.strip_prefix("gen-")?.parse().ok()
}

/// Writes a new generation of `dir` with `write` filling a fresh directory,
/// then switches `CURRENT` to it atomically.
pub(crate) fn save_atomic(
    dir: &Path,
    kind: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut next = 1u64;
    for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let base = name.strip_suffix(".tmp").unwrap_or(&name);
        if let Some(n) = generation_number(base) {
            next = next.max(n + 1);
        }
    }
    let gen_name = format!("gen-{next:08}");
    let tmp = dir.join(format!("{gen_name}.tmp"));
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    write(&tmp)?;

    let mut names = Vec::new();
    walk(&tmp, Path::new(""), &mut names)?;
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let (len, crc32) = crc_of(&tmp.join(&name))?;
        files.push(FileEntry { name, len, crc32 });
    }
    let manifest = Manifest {
        format: FORMAT_NAME.to_string(),
        format_version: FORMAT_VERSION,
        kind: kind.to_string(),
        files,
    };
    let mbytes = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| corrupt(&tmp, format!("cannot encode manifest: {e}")))?;
    write_file(&tmp.join(MANIFEST), &mbytes)?;
    fsync_dir(&tmp)?;
    let gen_dir = dir.join(&gen_name);
    fs::rename(&tmp, &gen_dir).map_err(io_err(&gen_dir))?;
    fsync_dir(dir)?;

    let current = Current {
        generation: gen_name.clone(),
        manifest_crc32: crc32fast::hash(&mbytes),
    };
    let cbytes = serde_json::to_vec(&current)
        .map_err(|e| corrupt(dir, format!("cannot encode CURRENT: {e}")))?;
    let ctmp = dir.join(format!("{CURRENT}.tmp"));
    write_file(&ctmp, &cbytes)?;
    let cpath = dir.join(CURRENT);
    fs::rename(&ctmp, &cpath).map_err(io_err(&cpath))?;
    fsync_dir(dir)?;

    // Old generations and leftovers of crashed saves are garbage now.
    for e in fs::read_dir(dir).map_err(io_err(dir))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let base = name.strip_suffix(".tmp").unwrap_or(&name);
        if name != gen_name && generation_number(base).is_some() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// Opens the current generation of `dir` and verifies every file in it.
/// Returns the generation directory and its manifest.
pub(crate) fn open_verified(dir: &Path) -> Result<(PathBuf, Manifest)> {
    let cpath = dir.join(CURRENT);
    let cbytes = read_file(&cpath)?;
    let current: Current =
        serde_json::from_slice(&cbytes).map_err(|e| corrupt(&cpath, format!("unreadable: {e}")))?;
    if generation_number(&current.generation).is_none() {
        return Err(corrupt(&cpath, "bad generation name"));
    }
    let gen_dir = dir.join(&current.generation);
    let mpath = gen_dir.join(MANIFEST);
    let mbytes = read_file(&mpath)?;
    if crc32fast::hash(&mbytes) != current.manifest_crc32 {
        return Err(corrupt(&mpath, "manifest checksum mismatch"));
    }
    let manifest: Manifest =
        serde_json::from_slice(&mbytes).map_err(|e| corrupt(&mpath, format!("unreadable: {e}")))?;
    if manifest.format != FORMAT_NAME {
        return Err(corrupt(
            &mpath,
            format!("not a ragjet index ({:?})", manifest.format),
        ));
    }
    if manifest.format_version != FORMAT_VERSION {
        return Err(corrupt(
            &mpath,
            format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                manifest.format_version
            ),
        ));
    }
    for f in &manifest.files {
        if f.name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(corrupt(&mpath, format!("bad file name {:?}", f.name)));
        }
        let p = gen_dir.join(&f.name);
        let (len, crc) = crc_of(&p)?;
        if len != f.len {
            return Err(corrupt(
                &p,
                format!("length {len}, expected {} (truncated?)", f.len),
            ));
        }
        if crc != f.crc32 {
            return Err(corrupt(&p, "checksum mismatch"));
        }
    }
    Ok((gen_dir, manifest))
}

/// Encodes f32s little-endian.
pub(crate) fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub(crate) fn bytes_to_f32s(path: &Path, b: &[u8], expected: usize) -> Result<Vec<f32>> {
    if b.len() != expected * 4 {
        return Err(corrupt(
            path,
            format!("{} bytes, expected {}", b.len(), expected * 4),
        ));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

pub(crate) fn f16s_to_bytes(v: &[half::f16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 2);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

pub(crate) fn bytes_to_f16s(path: &Path, b: &[u8], expected: usize) -> Result<Vec<half::f16>> {
    if b.len() != expected * 2 {
        return Err(corrupt(
            path,
            format!("{} bytes, expected {}", b.len(), expected * 2),
        ));
    }
    Ok(b.chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
        .collect())
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(|e| corrupt(path, format!("cannot encode: {e}")))?;
    write_file(path, &bytes)
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| corrupt(path, format!("unreadable: {e}")))
}
