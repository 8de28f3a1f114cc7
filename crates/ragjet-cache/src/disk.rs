//! L2: an on-disk tier on redb.
//!
//! # Why redb
//!
//! redb is a pure-Rust, single-file, copy-on-write B-tree with ACID
//! transactions: a commit either lands whole or not at all, so a power cut
//! leaves the last committed state readable with no repair step of ours.
//! Its workload fits a cache (point reads and small writes, one process);
//! it builds without a C toolchain and opens in milliseconds. fjall (an
//! LSM tree) would write faster under heavy ingest but brings background
//! compaction threads and more tuning than a bounded cache needs.
//!
//! # Layout
//!
//! * `entries`: key (32 bytes) → (write sequence, envelope).
//! * `order`: write sequence → key; the smallest sequence is evicted first
//!   when the byte bound is passed (oldest write first, a FIFO: a read-path
//!   LRU would turn every disk hit into a write transaction).
//! * `meta`: running byte total and next sequence, updated in the same
//!   transactions, so the bound survives restarts without a scan.
//!
//! Every envelope carries a CRC-32 and the key it was written under; an entry
//! failing either check, or larger than `max_value_bytes` (checked on the
//! stored length and on the lz4 size prefix, before copying or
//! decompressing), is a miss, counted as rejected, and is deleted.
//!
//! # Damaged files
//!
//! redb checks its file but does not promise to survive arbitrary damage:
//! on some damaged files it panics, and on a few it aborts the process (a
//! panic while unwinding, an allocation of a size read from the damage),
//! which no `catch_unwind` can stop. The file is only a cache, so an
//! existing one is first opened and walked whole in a forked child
//! ([`crate::probe`]); one that takes the child down is moved aside and
//! the tier starts empty, instead of the process going down with it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::clock::is_expired;
use crate::codec;
use crate::error::{storage, CacheError, Result};
use crate::key::CacheKey;
use crate::stats::{Counters, TierStats};

const ENTRIES: TableDefinition<&[u8; 32], (u64, &[u8])> = TableDefinition::new("entries");
const ORDER: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("order");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_BYTES: &str = "bytes";
const META_SEQ: &str = "next_seq";
/// Bytes counted per entry on top of the envelope (key, sequence, B-tree
/// overhead), so the bound means roughly what it says on disk.
const ENTRY_OVERHEAD: u64 = 64;

/// Settings of the disk tier.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{DiskConfig, Scope, TieredCache};
///
/// let dir = std::env::temp_dir().join(format!("ragjet-doc-disk-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// // A bounded, compressed store that may lose its last writes on a crash
/// // (never its consistency) in exchange for cheaper commits.
/// let config = DiskConfig { max_bytes: 64 << 20, durable: false, ..DiskConfig::new(dir.join("l2.redb")) };
/// let key = Scope::tenant("t").key("doc").str("summary").finish();
/// {
///     let cache = TieredCache::builder().disk(config.clone()).build()?;
///     cache.put(&key, &"kept across restarts".to_string())?;
/// }
/// let reopened = TieredCache::builder().disk(config).build()?;
/// assert_eq!(reopened.get::<String>(&key).as_deref(), Some("kept across restarts"));
/// drop(reopened);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// The database file (created when absent).
    pub path: PathBuf,
    /// Upper bound on stored bytes (compressed envelopes plus overhead).
    pub max_bytes: u64,
    /// Compress payloads with lz4.
    pub compress: bool,
    /// Payloads shorter than this are stored uncompressed.
    pub compress_min_bytes: usize,
    /// fsync every commit (`true`, default). With `false` a crash may lose
    /// the latest writes but still leaves a consistent, readable store.
    pub durable: bool,
    /// redb page cache size.
    pub page_cache_bytes: usize,
    /// Largest encoded value (header plus uncompressed payload) stored or
    /// read back; larger writes skip this tier, larger stored entries are
    /// refused unread, so a damaged file cannot make a lookup allocate more.
    pub max_value_bytes: usize,
}

impl DiskConfig {
    /// Defaults for a store at `path`: 1 GiB bound, lz4 above 256 bytes,
    /// durable commits, 32 MiB page cache, values up to 64 MiB.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_bytes: 1 << 30,
            compress: true,
            compress_min_bytes: 256,
            durable: true,
            page_cache_bytes: 32 << 20,
            max_value_bytes: 64 << 20,
        }
    }
}

pub(crate) struct DiskTier {
    db: Database,
    cfg: DiskConfig,
    bytes: AtomicU64,
    entries: AtomicU64,
    pub counters: Arc<Counters>,
    label: &'static str,
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> CacheError {
    CacheError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn meta(
    t: &impl ReadableTable<&'static str, u64>,
    k: &str,
) -> std::result::Result<u64, redb::StorageError> {
    Ok(t.get(k)?.map(|v| v.value()).unwrap_or(0))
}

/// redb's magic number, which it writes last when it creates a file.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const REDB_MAGIC_LEN: usize = REDB_MAGIC.len();

/// A process killed while redb was creating the file leaves it without the
/// magic number (redb writes it only once the rest is on disk): such a file
/// holds no committed data, but redb refuses it forever. It is renamed to
/// `<file>.incomplete` (not deleted: it may be something else a user
/// pointed us at) so that a fresh file is created in its place.
fn set_aside_unfinished(path: &Path) -> Result<()> {
    use std::io::Read;
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(()); // absent (created below) or unreadable (redb reports it)
    };
    let mut head = Vec::with_capacity(REDB_MAGIC_LEN);
    file.take(REDB_MAGIC_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| open_err(path, e))?;
    if !head.is_empty() && head.iter().all(|&b| b == 0) {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".incomplete");
        tracing::warn!(
            path = %path.display(),
            "disk cache file never fully created (killed while creating it); set aside"
        );
        std::fs::rename(path, &aside).map_err(|e| open_err(path, e))?;
    }
    Ok(())
}

/// Exit statuses of the child that checks a file (see [`check_file`]).
const CHECK_SOUND: i32 = 0;
/// redb refused the file with an error that is not damage (not a database
/// of ours, locked, unreadable): opened here, it fails the same way and the
/// file is left alone.
const CHECK_REFUSED: i32 = 1;
/// redb reported the file corrupted.
const CHECK_CORRUPT: i32 = 2;

/// The work the open below does on a file, plus a walk of every page and
/// entry, run in a child: redb aborts the process on some damaged files
/// (a panic while unwinding), and then only the child dies.
fn check_file(path: &Path, cache_bytes: usize) -> i32 {
    fn walk(path: &Path, cache_bytes: usize) -> std::result::Result<(), redb::Error> {
        let mut db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)?;
        // Verifies every page's checksum and the allocator state; the
        // reads and writes below would otherwise meet damage only when a
        // lookup reached it, in this process.
        db.check_integrity()?;
        let tx = db.begin_write()?;
        {
            let e = tx.open_table(ENTRIES)?;
            for row in e.iter()? {
                let (k, v) = row?;
                let _ = (k.value(), v.value());
            }
            let o = tx.open_table(ORDER)?;
            for row in o.iter()? {
                let (k, v) = row?;
                let _ = (k.value(), v.value());
            }
            let m = tx.open_table(META)?;
            meta(&m, META_BYTES)?;
            meta(&m, META_SEQ)?;
            e.len()?;
        }
        tx.commit()?;
        Ok(())
    }
    match walk(path, cache_bytes) {
        Ok(()) => CHECK_SOUND,
        Err(redb::Error::Corrupted(_)) => CHECK_CORRUPT,
        Err(_) => CHECK_REFUSED,
    }
}

/// How long the check may take: generous, since a hang is read as damage
/// and costs the cache's contents.
fn check_deadline(file_len: u64) -> std::time::Duration {
    std::time::Duration::from_secs(30 + file_len / (16 << 20))
}

/// Checks an existing cache file in a child process (see [`crate::probe`])
/// and renames it to `<file>.damaged` when redb panicked, aborted, hung or
/// reported it corrupted, so that an empty cache is created in its place:
/// the file is a cache, its loss costs recomputation, and opening it here
/// could take the process down. Counted in
/// [`CACHE_DAMAGED_FILES_TOTAL`](crate::metrics::CACHE_DAMAGED_FILES_TOTAL).
/// A file that does not start with redb's magic number is not checked: it
/// is not a cache file of ours, and the open below refuses it untouched.
fn set_aside_if_damaged(cfg: &DiskConfig, label: &'static str) -> Result<()> {
    use crate::probe::{in_child, Outcome};
    use std::io::Read;
    let path = &cfg.path;
    let Ok(file) = std::fs::File::open(path) else {
        return Ok(());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = Vec::with_capacity(REDB_MAGIC_LEN);
    file.take(REDB_MAGIC_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| open_err(path, e))?;
    if head != REDB_MAGIC {
        return Ok(());
    }
    // What a sound file needs: the page cache, a copy of the file's
    // worth of pages at most, and room for redb's own state.
    let max_alloc = (cfg.page_cache_bytes as u64)
        .saturating_add(len)
        .saturating_add(256 << 20);
    let why = match in_child(check_deadline(len), max_alloc, || {
        check_file(path, cfg.page_cache_bytes)
    }) {
        Outcome::Exited(CHECK_SOUND | CHECK_REFUSED, _) => return Ok(()),
        Outcome::NotRun(reason) => {
            tracing::warn!(
                path = %path.display(),
                %reason,
                "disk cache file not checked before opening; a damaged file may abort the process"
            );
            return Ok(());
        }
        Outcome::Exited(CHECK_CORRUPT, _) => "redb reports it corrupted".to_string(),
        Outcome::Exited(code, msg) => format!("redb panicked (exit {code}): {msg}"),
        Outcome::Signalled(sig, msg) => format!("redb aborted (signal {sig}): {msg}"),
        Outcome::TimedOut => format!("checking it took longer than {:?}", check_deadline(len)),
    };
    let mut aside = path.as_os_str().to_owned();
    aside.push(".damaged");
    tracing::warn!(
        path = %path.display(),
        reason = %why,
        "disk cache file damaged; moved aside and starting empty"
    );
    crate::metrics::damaged_file(label, "l2");
    std::fs::rename(path, &aside).map_err(|e| open_err(path, e))?;
    Ok(())
}

impl DiskTier {
    pub fn open(cfg: &DiskConfig, label: &'static str) -> Result<Self> {
        if cfg.max_bytes == 0 {
            return Err(CacheError::InvalidOption(
                "disk max_bytes must be > 0".into(),
            ));
        }
        if cfg.max_value_bytes <= codec::HEADER_LEN {
            return Err(CacheError::InvalidOption(format!(
                "disk max_value_bytes must be > {} (the entry header)",
                codec::HEADER_LEN
            )));
        }
        if let Some(dir) = cfg.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| open_err(&cfg.path, e))?;
            }
        }
        set_aside_unfinished(&cfg.path)?;
        set_aside_if_damaged(cfg, label)?;
        // redb asserts (panics) on some damaged files, e.g. one cut short;
        // the check above keeps those out, and this catches what it could
        // not run on (no fork, a platform without it).
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::builder()
                .set_cache_size(cfg.page_cache_bytes)
                .create(&cfg.path)
        }))
        .map_err(|_| {
            open_err(
                &cfg.path,
                "damaged database file (redb panicked opening it)",
            )
        })?
        .map_err(|e| open_err(&cfg.path, e))?;
        // Create the tables and read the running totals.
        let tx = db.begin_write().map_err(|e| open_err(&cfg.path, e))?;
        let (bytes, entries) = {
            let e = tx.open_table(ENTRIES).map_err(|e| open_err(&cfg.path, e))?;
            tx.open_table(ORDER).map_err(|e| open_err(&cfg.path, e))?;
            let m = tx.open_table(META).map_err(|e| open_err(&cfg.path, e))?;
            (
                meta(&m, META_BYTES).map_err(|e| open_err(&cfg.path, e))?,
                e.len().map_err(|e| open_err(&cfg.path, e))?,
            )
        };
        tx.commit().map_err(|e| open_err(&cfg.path, e))?;
        Ok(Self {
            db,
            cfg: cfg.clone(),
            bytes: AtomicU64::new(bytes),
            entries: AtomicU64::new(entries),
            counters: Arc::new(Counters::default()),
            label,
        })
    }

    fn write_tx(&self) -> std::result::Result<redb::WriteTransaction, redb::Error> {
        let mut tx = self.db.begin_write()?;
        if !self.cfg.durable {
            tx.set_durability(Durability::None).map_err(|e| {
                redb::Error::from(redb::StorageError::Io(std::io::Error::other(e.to_string())))
            })?;
        }
        Ok(tx)
    }

    /// Looks a key up. Returns the verified, uncompressed envelope; expired
    /// entries are deleted and reported as misses, damaged or oversized ones
    /// too, counted as rejected. `Err` means the store itself failed.
    pub fn get(
        &self,
        key: &CacheKey,
        now_ms: u64,
    ) -> std::result::Result<Option<Vec<u8>>, redb::Error> {
        let verified = {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(ENTRIES)?;
            match t.get(key.as_bytes())? {
                None => return Ok(None),
                // Verified in place: nothing is copied before the size
                // checks, and only the checked envelope is.
                Some(v) => codec::verify(key, v.value().1, self.cfg.max_value_bytes),
            }
        };
        match verified {
            Ok((h, env)) if !is_expired(h.expires_at_ms, now_ms) => Ok(Some(env)),
            Ok(_) => {
                self.remove(key)?;
                Ok(None)
            }
            Err(damage) => {
                tracing::warn!(key = %key.to_hex(), ?damage, "L2 cache entry refused and dropped");
                Counters::add(&self.counters.rejected, 1);
                crate::metrics::rejected(self.label, "l2", damage.reason());
                self.remove(key)?;
                Ok(None)
            }
        }
    }

    /// Stores uncompressed envelopes in one transaction, evicting the oldest
    /// writes past the byte bound. Entries larger than the bound or than
    /// `max_value_bytes` are skipped, and an older copy under their key is
    /// dropped so that it cannot be served in their place.
    pub fn put_many(&self, items: &[(CacheKey, &[u8])]) -> std::result::Result<(), redb::Error> {
        let tx = self.write_tx()?;
        let mut evicted = 0u64;
        let (bytes, count) = {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut order = tx.open_table(ORDER)?;
            let mut m = tx.open_table(META)?;
            let mut bytes = meta(&m, META_BYTES)?;
            let mut seq = meta(&m, META_SEQ)?;
            for (key, env) in items {
                let stored = if self.cfg.compress {
                    codec::compress(key, env, self.cfg.compress_min_bytes)
                } else {
                    None
                };
                let stored: &[u8] = stored.as_deref().unwrap_or(env);
                let size = stored.len() as u64 + ENTRY_OVERHEAD;
                if let Some(old) = entries.remove(key.as_bytes())? {
                    let (old_seq, old_env) = old.value();
                    bytes = bytes.saturating_sub(old_env.len() as u64 + ENTRY_OVERHEAD);
                    drop(old);
                    order.remove(old_seq)?;
                }
                if size > self.cfg.max_bytes || env.len() > self.cfg.max_value_bytes {
                    continue;
                }
                entries.insert(key.as_bytes(), (seq, stored))?;
                order.insert(seq, key.as_bytes())?;
                seq += 1;
                bytes += size;
                while bytes > self.cfg.max_bytes {
                    let Some((_, victim)) = order.pop_first()? else {
                        break;
                    };
                    let victim = *victim.value();
                    if let Some(old) = entries.remove(&victim)? {
                        bytes = bytes.saturating_sub(old.value().1.len() as u64 + ENTRY_OVERHEAD);
                        evicted += 1;
                    }
                }
            }
            m.insert(META_BYTES, bytes)?;
            m.insert(META_SEQ, seq)?;
            (bytes, entries.len()?)
        };
        tx.commit()?;
        self.bytes.store(bytes, Relaxed);
        self.entries.store(count, Relaxed);
        Counters::add(&self.counters.evictions, evicted);
        crate::metrics::evictions(self.label, "l2", evicted);
        Counters::add(&self.counters.writes, items.len() as u64);
        Ok(())
    }

    fn remove_keys(&self, keys: &[[u8; 32]]) -> std::result::Result<u64, redb::Error> {
        let tx = self.write_tx()?;
        let mut removed = 0;
        let (bytes, count) = {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut order = tx.open_table(ORDER)?;
            let mut m = tx.open_table(META)?;
            let mut bytes = meta(&m, META_BYTES)?;
            for k in keys {
                if let Some(old) = entries.remove(k)? {
                    let (seq, env) = old.value();
                    bytes = bytes.saturating_sub(env.len() as u64 + ENTRY_OVERHEAD);
                    drop(old);
                    order.remove(seq)?;
                    removed += 1;
                }
            }
            m.insert(META_BYTES, bytes)?;
            (bytes, entries.len()?)
        };
        tx.commit()?;
        self.bytes.store(bytes, Relaxed);
        self.entries.store(count, Relaxed);
        Counters::add(&self.counters.evictions, removed);
        crate::metrics::evictions(self.label, "l2", removed);
        Ok(removed)
    }

    pub fn remove(&self, key: &CacheKey) -> std::result::Result<(), redb::Error> {
        self.remove_keys(&[*key.as_bytes()]).map(|_| ())
    }

    /// Deletes every expired or damaged entry; returns how many.
    pub fn purge_expired(&self, now_ms: u64) -> Result<u64> {
        let dead: Vec<[u8; 32]> = {
            let tx = self.db.begin_read().map_err(storage)?;
            let t = tx.open_table(ENTRIES).map_err(storage)?;
            let mut dead = Vec::new();
            for row in t.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                let (_, env) = v.value();
                match codec::header(env) {
                    Some(h) if !is_expired(h.expires_at_ms, now_ms) => {}
                    _ => dead.push(*k.value()),
                }
            }
            dead
        };
        self.remove_keys(&dead).map_err(storage)
    }

    pub fn clear(&self) -> Result<()> {
        let tx = self.write_tx().map_err(storage)?;
        {
            let mut e = tx.open_table(ENTRIES).map_err(storage)?;
            e.retain(|_, _| false).map_err(storage)?;
            let mut o = tx.open_table(ORDER).map_err(storage)?;
            o.retain(|_, _| false).map_err(storage)?;
            let mut m = tx.open_table(META).map_err(storage)?;
            m.insert(META_BYTES, 0).map_err(storage)?;
        }
        tx.commit().map_err(storage)?;
        self.bytes.store(0, Relaxed);
        self.entries.store(0, Relaxed);
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    pub fn stats(&self) -> TierStats {
        self.counters
            .snapshot(self.bytes.load(Relaxed), self.entries.load(Relaxed))
    }

    /// Test hook: stores raw bytes under a key, bypassing every check.
    #[cfg(test)]
    pub fn put_raw(&self, key: &CacheKey, raw: &[u8]) {
        let tx = self.db.begin_write().unwrap();
        {
            let mut entries = tx.open_table(ENTRIES).unwrap();
            let mut order = tx.open_table(ORDER).unwrap();
            let mut m = tx.open_table(META).unwrap();
            let seq = meta(&m, META_SEQ).unwrap();
            entries.insert(key.as_bytes(), (seq, raw)).unwrap();
            order.insert(seq, key.as_bytes()).unwrap();
            m.insert(META_SEQ, seq + 1).unwrap();
        }
        tx.commit().unwrap();
    }
}
