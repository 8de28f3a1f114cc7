//! Dead letters: requests that failed every retry, kept on disk until an
//! operator re-drives or discards them.
//!
//! The store is one append-only log. Each record is `length (u32 LE) ·
//! CRC-32 of the body (u32 LE) · body (JSON)`, written and `fsync`ed before
//! the call returns, so a letter reported as stored survives a crash. A
//! removal (re-driven or discarded) appends a tombstone. On open the log is
//! replayed: a damaged *last* record is a write torn by a crash and is cut
//! off; damage anywhere else is an error, because dropping it would lose
//! letters silently. When tombstones outnumber live letters the log is
//! rewritten (temporary file, `fsync`, rename, `fsync` of the directory),
//! so a crash leaves either the old or the new log.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{counter, gauge};
use ragjet_telemetry::metrics::{
    labels, DEAD_LETTERS_PENDING, DEAD_LETTERS_REDRIVEN_TOTAL, DEAD_LETTERS_TOTAL,
};
use serde::{Deserialize, Serialize};

use super::{system_clock, Clock, ControlError, Result};

/// One request that failed every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique in its store, increasing with time of arrival.
    pub id: String,
    /// What was being done (`llm.complete`, `ingest.embed`).
    pub operation: String,
    /// The request, as the caller serialised it (re-driving replays it).
    pub payload: String,
    /// The last error.
    pub error: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// When it was stored, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What [`DeadLetterStore::redrive`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// Ids replayed successfully and removed.
    pub redriven: Vec<String>,
    /// Ids whose replay failed again (still stored), with the error.
    pub failed: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Add(DeadLetter),
    Remove { id: String },
}

/// Largest record accepted when reading; a longer length field is damage.
const MAX_RECORD: usize = 64 << 20;
/// Tombstones tolerated before the log is compacted.
const COMPACT_AFTER: usize = 64;

#[derive(Debug)]
struct Inner {
    file: File,
    letters: BTreeMap<u64, DeadLetter>,
    next_seq: u64,
    tombstones: usize,
}

/// A crash-safe dead-letter store; `Send + Sync`.
///
/// ```
/// use ragjet::control::{ControlError, DeadLetterStore};
///
/// # fn main() -> Result<(), ControlError> {
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("dead-letters.log");
/// let store = DeadLetterStore::open("llm", &path)?;
/// store.push("llm.complete", r#"{"prompt":"hi"}"#, "HTTP 503", 3)?;
/// drop(store);
/// // On disk: a reopened store (a restarted process) still has it.
/// let store = DeadLetterStore::open("llm", &path)?;
/// assert_eq!(store.len(), 1);
/// let report = store.redrive(|letter| {
///     assert_eq!(letter.operation, "llm.complete");
///     Ok(()) // sent again successfully
/// })?;
/// assert_eq!((report.redriven.len(), store.len()), (1, 0));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeadLetterStore {
    name: String,
    path: PathBuf,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(record)
        .map_err(|e| ControlError::InvalidInput(format!("dead letter not serialisable: {e}")))?;
    if body.len() > MAX_RECORD {
        return Err(ControlError::InvalidInput(format!(
            "dead letter of {} bytes exceeds the {MAX_RECORD}-byte limit",
            body.len()
        )));
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn seq_of(id: &str) -> Option<u64> {
    id.rsplit('-').next()?.parse().ok()
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

impl DeadLetterStore {
    /// Opens (or creates) the log at `path`; `name` labels its metrics.
    pub fn open(name: impl Into<String>, path: impl AsRef<Path>) -> Result<Self> {
        let name = name.into();
        let path = path.as_ref().to_path_buf();
        let err = |e: std::io::Error| ControlError::storage(&path, e);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let existed = path.exists();
        let bytes = if existed {
            std::fs::read(&path).map_err(err)?
        } else {
            Vec::new()
        };
        let (letters, tombstones, good) = replay(&path, &bytes)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        if good < bytes.len() {
            tracing::warn!(path = %path.display(), cut = bytes.len() - good,
                "dead-letter log: cutting a record torn by a crash");
            file.set_len(good as u64).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        if !existed {
            file.sync_all().map_err(err)?;
            sync_dir(&path).map_err(err)?;
        }
        let next_seq = letters.keys().next_back().map_or(1, |s| s + 1);
        let store = Self {
            name,
            path,
            clock: system_clock(),
            inner: Mutex::new(Inner {
                file,
                letters,
                next_seq,
                tombstones,
            }),
        };
        store.publish(&store.lock());
        Ok(store)
    }

    /// Stamps letters with `clock`'s time.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, inner: &Inner) {
        gauge!(DEAD_LETTERS_PENDING, labels::STORE => self.name.clone())
            .set(inner.letters.len() as f64);
    }

    fn append(&self, inner: &mut Inner, record: &Record) -> Result<()> {
        let bytes = encode(record)?;
        let err = |e: std::io::Error| ControlError::storage(&self.path, e);
        inner.file.write_all(&bytes).map_err(err)?;
        inner.file.sync_data().map_err(err)
    }

    /// Stores a failed request; returns it with its id once it is on disk.
    pub fn push(
        &self,
        operation: impl Into<String>,
        payload: impl Into<String>,
        error: impl Into<String>,
        attempts: u32,
    ) -> Result<DeadLetter> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let at_ms = self.clock.now().as_millis() as u64;
        let letter = DeadLetter {
            id: format!("{at_ms}-{seq}"),
            operation: operation.into(),
            payload: payload.into(),
            error: error.into(),
            attempts,
            at_ms,
        };
        self.append(&mut inner, &Record::Add(letter.clone()))?;
        inner.next_seq += 1;
        inner.letters.insert(seq, letter.clone());
        counter!(DEAD_LETTERS_TOTAL, labels::STORE => self.name.clone()).increment(1);
        self.publish(&inner);
        Ok(letter)
    }

    /// Every stored letter, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.lock().letters.values().cloned().collect()
    }

    /// Letters stored.
    pub fn len(&self) -> usize {
        self.lock().letters.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The letter `id`, if stored.
    pub fn get(&self, id: &str) -> Option<DeadLetter> {
        let seq = seq_of(id)?;
        self.lock()
            .letters
            .get(&seq)
            .filter(|l| l.id == id)
            .cloned()
    }

    /// Removes `id` for good; false when it is not stored.
    pub fn discard(&self, id: &str) -> Result<bool> {
        let mut inner = self.lock();
        self.remove(&mut inner, id)
    }

    fn remove(&self, inner: &mut Inner, id: &str) -> Result<bool> {
        let Some(seq) = seq_of(id).filter(|s| inner.letters.get(s).is_some_and(|l| l.id == id))
        else {
            return Ok(false);
        };
        self.append(inner, &Record::Remove { id: id.to_owned() })?;
        inner.letters.remove(&seq);
        inner.tombstones += 1;
        self.publish(inner);
        if inner.tombstones > COMPACT_AFTER && inner.tombstones > inner.letters.len() {
            self.compact(inner)?;
        }
        Ok(true)
    }

    /// Rewrites the log with the live letters only.
    fn compact(&self, inner: &mut Inner) -> Result<()> {
        let err = |e: std::io::Error| ControlError::storage(&self.path, e);
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut f = File::create(&tmp).map_err(err)?;
            for letter in inner.letters.values() {
                f.write_all(&encode(&Record::Add(letter.clone()))?)
                    .map_err(err)?;
            }
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        sync_dir(&self.path).map_err(err)?;
        inner.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        inner.tombstones = 0;
        Ok(())
    }

    /// Replays every stored letter through `f`, oldest first; those `f`
    /// accepts are removed, the others stay with their original record.
    /// `f` runs without the store's lock, so it may push new letters.
    pub fn redrive(
        &self,
        mut f: impl FnMut(&DeadLetter) -> std::result::Result<(), String>,
    ) -> Result<RedriveReport> {
        let mut report = RedriveReport::default();
        for letter in self.list() {
            match f(&letter) {
                Ok(()) => {
                    let mut inner = self.lock();
                    if self.remove(&mut inner, &letter.id)? {
                        counter!(DEAD_LETTERS_REDRIVEN_TOTAL, labels::STORE => self.name.clone())
                            .increment(1);
                        report.redriven.push(letter.id);
                    }
                }
                Err(e) => report.failed.push((letter.id, e)),
            }
        }
        Ok(report)
    }
}

/// Replays `bytes`: live letters, tombstones seen, and the length of the
/// intact prefix.
fn replay(path: &Path, bytes: &[u8]) -> Result<(BTreeMap<u64, DeadLetter>, usize, usize)> {
    let mut letters = BTreeMap::new();
    let mut tombstones = 0;
    let mut at = 0;
    while at < bytes.len() {
        let damaged = |why: &str| -> Result<(BTreeMap<u64, DeadLetter>, usize, usize)> {
            Err(ControlError::storage(
                path,
                format!("damaged dead-letter record at byte {at}: {why}; the rest of the log would be lost, so it is not opened"),
            ))
        };
        if bytes.len() - at < 8 {
            break; // torn header at the end
        }
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let end = at + 8 + len;
        if len > MAX_RECORD {
            return damaged("impossible length");
        }
        if end > bytes.len() {
            break; // torn body at the end
        }
        let body = &bytes[at + 8..end];
        if crc32fast::hash(body) != crc {
            if end == bytes.len() {
                break;
            }
            return damaged("checksum mismatch");
        }
        match serde_json::from_slice::<Record>(body) {
            Ok(Record::Add(letter)) => match seq_of(&letter.id) {
                Some(seq) => {
                    letters.insert(seq, letter);
                }
                None => return damaged("letter id without a sequence number"),
            },
            Ok(Record::Remove { id }) => {
                if let Some(seq) = seq_of(&id) {
                    letters.remove(&seq);
                }
                tombstones += 1;
            }
            Err(e) => return damaged(&e.to_string()),
        }
        at = end;
    }
    Ok((letters, tombstones, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ManualClock;
    use std::time::Duration;

    fn store(path: &Path) -> DeadLetterStore {
        DeadLetterStore::open("test", path)
            .unwrap()
            .with_clock(Arc::new(ManualClock::new(Duration::from_secs(
                1_700_000_000,
            ))))
    }

    #[test]
    fn letters_survive_reopening_and_redrive_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl/letters.log");
        let s = store(&path);
        let a = s
            .push("llm.complete", "{\"prompt\":\"a\"}", "timeout", 3)
            .unwrap();
        let b = s
            .push("llm.complete", "{\"prompt\":\"b\"}", "503", 3)
            .unwrap();
        assert_ne!(a.id, b.id);
        drop(s);
        let s = store(&path);
        assert_eq!(s.list(), vec![a.clone(), b.clone()]);
        assert_eq!(s.get(&a.id), Some(a.clone()));
        let report = s
            .redrive(|l| {
                if l.payload.contains("\"a\"") {
                    Ok(())
                } else {
                    Err("still down".into())
                }
            })
            .unwrap();
        assert_eq!(report.redriven, vec![a.id.clone()]);
        assert_eq!(report.failed, vec![(b.id.clone(), "still down".into())]);
        drop(s);
        let s = store(&path);
        assert_eq!(s.list(), vec![b.clone()]);
        assert!(s.discard(&b.id).unwrap());
        assert!(!s.discard(&b.id).unwrap());
        assert!(s.is_empty());
        // New ids never reuse an old one.
        let c = s.push("x", "", "e", 1).unwrap();
        assert_ne!(c.id, a.id);
    }

    #[test]
    fn a_torn_last_record_is_cut_and_earlier_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("letters.log");
        let s = store(&path);
        let a = s.push("op", "p1", "e", 1).unwrap();
        s.push("op", "p2", "e", 1).unwrap();
        drop(s);
        let full = std::fs::read(&path).unwrap();
        // Every cut inside the second record: the first letter survives.
        let first_end = 8 + u32::from_le_bytes(full[..4].try_into().unwrap()) as usize;
        for cut in first_end + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let s = store(&path);
            assert_eq!(s.list(), vec![a.clone()], "cut at {cut}");
            drop(s);
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, first_end);
        }
        // A flipped byte inside the first record with another after it.
        let mut bad = full.clone();
        bad[10] ^= 0x40;
        std::fs::write(&path, &bad).unwrap();
        let err = DeadLetterStore::open("test", &path).unwrap_err();
        assert!(matches!(err, ControlError::Storage { .. }), "{err}");
    }

    #[test]
    fn many_removals_compact_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("letters.log");
        let s = store(&path);
        let keep = s.push("op", "keep", "e", 1).unwrap();
        for i in 0..200 {
            let l = s.push("op", format!("p{i}"), "e", 1).unwrap();
            s.discard(&l.id).unwrap();
        }
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200 * 60, "compacted: {size} bytes");
        drop(s);
        let s = store(&path);
        assert_eq!(s.list(), vec![keep]);
        assert!(!dir.path().join("letters.log.tmp").exists());
    }

    #[test]
    fn counted_in_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let (recorder, handle) = ragjet_telemetry::build_recorder().unwrap();
        metrics::with_local_recorder(&recorder, || {
            let s = store(&dir.path().join("l.log"));
            s.push("op", "a", "e", 1).unwrap();
            s.push("op", "b", "e", 1).unwrap();
            s.redrive(|l| {
                if l.payload == "a" {
                    Ok(())
                } else {
                    Err("no".into())
                }
            })
            .unwrap();
        });
        let text = handle.render();
        assert!(
            text.contains("ragjet_dead_letters_total{store=\"test\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("ragjet_dead_letters_pending{store=\"test\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ragjet_dead_letters_redriven_total{store=\"test\"} 1"),
            "{text}"
        );
    }
}
