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
//! the format version and every listed file's length up front; each file
//! is then read once, into memory, and its CRC-32 checked on those very
//! bytes before they are parsed. A file the manifest does not list is
//! never read.
//!
//! CRC-32 catches accidents (truncation, torn writes, bit rot), not a
//! crafted file whose checksums were recomputed. So the parsers trust
//! nothing either: every count, dimension, id and length read from a file
//! is checked against the others before it is used or sizes an allocation,
//! and vectors must be finite. A damaged or hostile file is a
//! [`RetrievalError::Corrupt`](crate::RetrievalError::Corrupt), never a
//! panic, an out-of-bounds index or an allocation larger than the files.
//!
//! The HNSW graph is saved in the crate's own layout (`graph.rs`:
//! little-endian words, every count, level and link checked on load).
//! Indexes saved by earlier versions hold hnsw_rs's dump instead,
//! native-endian with 64-bit `usize` (they move between machines of the
//! same byte order and word size only). hnsw_rs's loader asserts, unwraps,
//! calls `process::exit` and allocates lengths read from the file, so
//! `hnsw_dump.rs` parses and checks both files completely before hnsw_rs
//! sees them. One gap remains for those old saves: hnsw_rs reopens the
//! files by path, so a process that rewrites them between that check and
//! hnsw_rs's read is not defended against (a panic there is still caught
//! and reported).
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, RetrievalError, VectorIndex};
//!
//! let dir = tempfile::tempdir()?;
//! let mut index = FlatIndex::new(FlatConfig::new(2, Metric::L2))?;
//! index.upsert(vec![Entry::new("a", vec![1.0, 2.0])])?;
//! index.save(dir.path())?;
//! index.upsert(vec![Entry::new("b", vec![3.0, 4.0])])?;
//! index.save(dir.path())?; // a new generation; the old one is deleted after the switch
//! assert!(dir.path().join("CURRENT").exists());
//! assert_eq!(FlatIndex::load(dir.path())?.len(), 2);
//!
//! // Flip bytes in a saved file: loading reports corruption instead of reading garbage.
//! let current: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("CURRENT"))?)?;
//! let generation = dir.path().join(current["generation"].as_str().unwrap());
//! for file in std::fs::read_dir(&generation)? {
//!     let path = file?.path();
//!     if path.file_name().unwrap() != "MANIFEST.json" {
//!         let mut bytes = std::fs::read(&path)?;
//!         let last = bytes.len() - 1;
//!         bytes[last] ^= 0xff;
//!         std::fs::write(&path, bytes)?;
//!     }
//! }
//! assert!(matches!(FlatIndex::load(dir.path()), Err(RetrievalError::Corrupt { .. })));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{corrupt, io_err, Result};

/// Name written into every manifest.
pub(crate) const FORMAT_NAME: &str = "ragjet-retrieval";
/// Bumped on any incompatible change of the on-disk layout.
///
/// # Examples
///
/// ```
/// // Recorded in every manifest; a save with a newer version is refused on load.
/// assert!(ragjet_retrieval::persist::FORMAT_VERSION >= 1);
/// ```
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

/// The current generation of a saved directory, opened by
/// [`open_verified`]: its manifest is checked, its files are not read yet.
#[derive(Debug)]
pub(crate) struct Generation {
    dir: PathBuf,
    kind: String,
    /// Name → (length, CRC-32) of every listed file.
    files: HashMap<String, (u64, u32)>,
}

impl Generation {
    /// The kind of index the generation holds (`flat`, `hnsw`, `store`,
    /// `bm25`).
    pub(crate) fn kind(&self) -> &str {
        &self.kind
    }

    /// The whole generation.
    pub(crate) fn root(&self) -> View<'_> {
        View {
            gen: self,
            prefix: String::new(),
        }
    }
}

/// A subdirectory of a [`Generation`] (a namespace of a store, or the
/// whole generation), through which its files are read and verified.
#[derive(Debug, Clone)]
pub(crate) struct View<'a> {
    gen: &'a Generation,
    /// `""` or `"dir/"`.
    prefix: String,
}

impl View<'_> {
    /// The subdirectory `name` of this one.
    pub(crate) fn sub(&self, name: &str) -> Self {
        View {
            gen: self.gen,
            prefix: format!("{}{name}/", self.prefix),
        }
    }

    /// This directory on disk.
    pub(crate) fn dir(&self) -> PathBuf {
        self.gen.dir.join(&self.prefix)
    }

    /// The path of file `name` in this directory.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.gen.dir.join(format!("{}{name}", self.prefix))
    }

    /// Reads file `name`, which the manifest must list, and checks its
    /// length and CRC-32 on the bytes returned: what is parsed is what was
    /// verified. At most the listed length (+1, to see a longer file) is
    /// read.
    pub(crate) fn read(&self, name: &str) -> Result<Vec<u8>> {
        let rel = format!("{}{name}", self.prefix);
        let path = self.gen.dir.join(&rel);
        let &(len, crc) = self
            .gen
            .files
            .get(&rel)
            .ok_or_else(|| corrupt(&path, "not listed in the manifest"))?;
        let f = File::open(&path).map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        f.take(len.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io_err(&path))?;
        if bytes.len() as u64 != len {
            return Err(corrupt(
                &path,
                format!("length {}, expected {len} (truncated?)", bytes.len()),
            ));
        }
        if crc32fast::hash(&bytes) != crc {
            return Err(corrupt(&path, "checksum mismatch"));
        }
        Ok(bytes)
    }

    /// [`View::read`], then JSON.
    pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<T> {
        let bytes = self.read(name)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(self.path(name), format!("unreadable: {e}")))
    }
}

/// Refuses a symbolic link at `path`. A saved directory is read only
/// inside itself, so a link planted in it (to another file with the
/// expected bytes, to a device, to another directory) cannot make a load
/// read elsewhere. The directory handed to `load` may itself be a link:
/// that is the operator's choice, not the saved data's.
fn refuse_link(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    if meta.file_type().is_symlink() {
        return Err(corrupt(
            path,
            "a symbolic link in a saved index is not followed",
        ));
    }
    Ok(())
}

/// Opens the current generation of `dir`: checks `CURRENT`, the manifest's
/// checksum, format and version, every file name and every file's length
/// (so a truncated file is found before anything is parsed). Contents are
/// verified as each file is read ([`View::read`]).
pub(crate) fn open_verified(dir: &Path) -> Result<Generation> {
    let cpath = dir.join(CURRENT);
    refuse_link(&cpath)?;
    let cbytes = read_file(&cpath)?;
    let current: Current =
        serde_json::from_slice(&cbytes).map_err(|e| corrupt(&cpath, format!("unreadable: {e}")))?;
    if generation_number(&current.generation).is_none() {
        return Err(corrupt(&cpath, "bad generation name"));
    }
    let gen_dir = dir.join(&current.generation);
    let mpath = gen_dir.join(MANIFEST);
    refuse_link(&gen_dir)?;
    refuse_link(&mpath)?;
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
    let mut files = HashMap::with_capacity(manifest.files.len());
    for f in &manifest.files {
        if f.name
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(corrupt(&mpath, format!("bad file name {:?}", f.name)));
        }
        let mut p = gen_dir.clone();
        for part in f.name.split('/') {
            p.push(part);
            refuse_link(&p)?;
        }
        let meta = fs::metadata(&p).map_err(io_err(&p))?;
        // A FIFO or device would block or never end when read.
        if !meta.is_file() {
            return Err(corrupt(&p, "not a regular file"));
        }
        let len = meta.len();
        if len != f.len {
            return Err(corrupt(
                &p,
                format!("length {len}, expected {} (truncated?)", f.len),
            ));
        }
        if files.insert(f.name.clone(), (f.len, f.crc32)).is_some() {
            return Err(corrupt(&mpath, format!("file {:?} listed twice", f.name)));
        }
    }
    Ok(Generation {
        dir: gen_dir,
        kind: manifest.kind,
        files,
    })
}

/// Encodes f32s little-endian.
pub(crate) fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Decodes `expected` little-endian f32s; the length must match exactly
/// and every value be finite (no index holds NaN or infinity).
pub(crate) fn bytes_to_f32s(path: &Path, b: &[u8], expected: usize) -> Result<Vec<f32>> {
    if expected.checked_mul(4) != Some(b.len()) {
        return Err(corrupt(
            path,
            format!("{} bytes, expected {expected} f32 values", b.len()),
        ));
    }
    let v: Vec<f32> = b
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(corrupt(path, format!("value {i} is not finite"))),
        None => Ok(v),
    }
}

pub(crate) fn f16s_to_bytes(v: &[half::f16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 2);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Decodes `expected` little-endian f16s, as [`bytes_to_f32s`].
pub(crate) fn bytes_to_f16s(path: &Path, b: &[u8], expected: usize) -> Result<Vec<half::f16>> {
    if expected.checked_mul(2) != Some(b.len()) {
        return Err(corrupt(
            path,
            format!("{} bytes, expected {expected} f16 values", b.len()),
        ));
    }
    let v: Vec<half::f16> = b
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
        .collect();
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(corrupt(path, format!("value {i} is not finite"))),
        None => Ok(v),
    }
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(|e| corrupt(path, format!("cannot encode: {e}")))?;
    write_file(path, &bytes)
}
