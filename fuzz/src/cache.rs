//! Cache values read back from disk (redb, L2) and Redis (L3): arbitrary
//! bytes stored where a tier keeps a value, then looked up as every
//! standard value type. A lookup must answer a value or a miss; never
//! panic, hang, or allocate past the tier's `max_value_bytes`.
//!
//! Shared by the cargo-fuzz target `cache_value` and the stable replay test
//! `crates/ragjet-cache/tests/fuzz_replay.rs` (which includes this file), so
//! this file uses only `ragjet_cache`, `redb`, `blake3` and `crc32fast`
//! (`redis` with the `redis` feature).

use std::path::Path;

use ragjet_cache::{CacheKey, CacheValue, DiskConfig, Scope, TieredCache};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// The disk tier's table of entries: key → (write sequence, stored bytes),
/// as declared in `crates/ragjet-cache/src/disk.rs`.
const ENTRIES: TableDefinition<&[u8; 32], (u64, &[u8])> = TableDefinition::new("entries");
/// Envelope header fields (see `crates/ragjet-cache/src/codec.rs`).
const MAGIC: [u8; 4] = *b"RJC\x01";
const HEADER_LEN: usize = 40;
/// The cap every tier in these targets reads under: 64 KiB, so a size field
/// that is honoured instead of checked shows up as an allocation far past it.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// The key every fuzzed value is stored under.
pub fn key() -> CacheKey {
    Scope::tenant("fuzz").key("value").str("k").finish()
}

/// Turns fuzz input into the bytes a tier stores. The first byte picks the
/// shape: even = the input as is (exercises the header and checksum gate),
/// odd = a well-formed header (right magic, key check and CRC-32, one of the
/// standard type tags, lz4 flag from bit 1) around the rest, so the fuzzer
/// reaches lz4 decompression and postcard decoding behind the checks.
pub fn stored_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let tags = [
        String::TAG,
        Vec::<u8>::TAG,
        Vec::<f32>::TAG,
        Vec::<Vec<f32>>::TAG,
        Vec::<String>::TAG,
        u64::TAG,
        Vec::<(u64, f32)>::TAG,
    ];
    let tag = tags[(mode as usize >> 2) % tags.len()];
    let k = key();
    let check = u64::from_le_bytes(k.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    let mut out = Vec::with_capacity(HEADER_LEN + rest.len());
    out.extend_from_slice(&MAGIC);
    out.push((mode >> 1) & 1);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&check.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(rest).to_le_bytes());
    out.extend_from_slice(rest);
    out
}

/// Looks `key()` up as every standard value type; the answers themselves
/// are not judged (any value or a miss is acceptable), only that each
/// lookup returns.
pub fn read_all_types(cache: &TieredCache) {
    let k = key();
    let _ = cache.get::<String>(&k);
    let _ = cache.get::<Vec<u8>>(&k);
    let _ = cache.get::<Vec<f32>>(&k);
    let _ = cache.get::<Vec<Vec<f32>>>(&k);
    let _ = cache.get::<Vec<String>>(&k);
    let _ = cache.get::<u64>(&k);
    let _ = cache.get::<Vec<(u64, f32)>>(&k);
}

fn disk_cfg(path: &Path) -> DiskConfig {
    let mut cfg = DiskConfig::new(path);
    cfg.durable = false;
    cfg.page_cache_bytes = 1 << 20;
    cfg.max_value_bytes = MAX_VALUE_BYTES;
    cfg
}

/// L2: a real entry is written through the cache (so the file's tables and
/// totals are consistent), its stored bytes are replaced by
/// `stored_bytes(data)` with redb directly, and the store is reopened and
/// read. `dir` is a scratch directory; the file is recreated every call.
pub fn disk_value(dir: &Path, data: &[u8]) {
    let path = dir.join("fuzz-cache.redb");
    let _ = std::fs::remove_file(&path);
    {
        let cache = TieredCache::builder()
            .disk(disk_cfg(&path))
            .build()
            .expect("a fresh disk tier opens");
        cache
            .put(&key(), &"a genuine value".to_string())
            .expect("a fresh disk tier takes a write");
    }
    {
        let db = Database::create(&path).expect("the file just written reopens");
        let mut tx = db.begin_write().expect("write transaction");
        tx.set_durability(Durability::None)
            .expect("durability none is allowed");
        {
            let mut t = tx.open_table(ENTRIES).expect("the entries table exists");
            let seq = t
                .get(key().as_bytes())
                .expect("read")
                .map(|v| v.value().0)
                .unwrap_or(0);
            let stored = stored_bytes(data);
            t.insert(key().as_bytes(), (seq, stored.as_slice()))
                .expect("insert");
        }
        tx.commit().expect("commit");
        // A read transaction after the commit, so the file is complete.
        drop(db.begin_read().expect("read transaction"));
    }
    let cache = TieredCache::builder()
        .disk(disk_cfg(&path))
        .build()
        .expect("a store with one odd value still opens");
    read_all_types(&cache);
    // The refused entry is gone (or was a valid value): a second pass must
    // agree with itself and not fail either.
    read_all_types(&cache);
    let _ = cache.purge_expired();
}

/// The harness's own Redis calls, retried: libFuzzer's `-timeout` timer
/// (SIGALRM) can interrupt a blocking connect or read (EINTR), which is not
/// a finding. (The tier under test just counts such a failure as an error.)
#[cfg(feature = "redis")]
fn retry<T>(what: &str, mut call: impl FnMut() -> redis::RedisResult<T>) -> T {
    let mut last = None;
    for _ in 0..5 {
        match call() {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
    }
    panic!("{what}: {}", last.expect("tried"))
}

/// L3: `stored_bytes(data)` stored under the tier's Redis key, once as is
/// (a value planted without the MAC key) and once behind a correct MAC (a
/// writer holding the key: the bytes then reach the envelope checks and
/// decoding). `url` names a live server; `prefix` isolates this run.
#[cfg(feature = "redis")]
pub fn redis_value(url: &str, prefix: &str, data: &[u8]) {
    use ragjet_cache::RedisConfig;
    let mac_key = RedisConfig::mac_key_from_secret("ragjet fuzzing: not a real secret")
        .expect("a long enough secret");
    let mut cfg = RedisConfig::new(url, mac_key);
    cfg.key_prefix = prefix.to_string();
    cfg.timeout = std::time::Duration::from_secs(2);
    cfg.max_value_bytes = MAX_VALUE_BYTES;
    let cache = TieredCache::builder()
        .redis(cfg)
        .build()
        .expect("a redis tier builds");
    let redis_key = format!("{prefix}{}", key().to_hex());
    let mut con = retry("the fuzzing redis server is reachable", || {
        redis::Client::open(url).and_then(|c| c.get_connection())
    });
    let envelope = stored_bytes(data);
    let mut mac = blake3::Hasher::new_keyed(&mac_key);
    mac.update(b"ragjet-cache/redis-value/v1");
    mac.update(&(redis_key.len() as u64).to_le_bytes());
    mac.update(redis_key.as_bytes());
    mac.update(&envelope);
    let mut signed = mac.finalize().as_bytes().to_vec();
    signed.extend_from_slice(&envelope);
    for value in [envelope, signed] {
        retry("SET on the fuzzing server", || {
            redis::cmd("SET")
                .arg(&redis_key)
                .arg(&value)
                .query::<()>(&mut con)
        });
        read_all_types(&cache);
    }
    let _ = redis::cmd("DEL").arg(&redis_key).query::<()>(&mut con);
}
