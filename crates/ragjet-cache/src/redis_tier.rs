//! L3: a Redis tier shared by several replicas (feature `redis`).
//!
//! Every call has a connect, read and write timeout. After a failure the
//! tier stays closed for `retry_after` so that a dead or slow server costs
//! at most one timeout per interval instead of one per request; meanwhile
//! lookups count as errors and are answered by L1/L2.
//!
//! # Connections
//!
//! A pool of blocking connections: a call takes an idle one (or opens one
//! when none is idle), runs its command without any lock held, and puts it
//! back; at most `pool_size` idle connections are kept. One connection
//! behind a mutex, as before, serialised every caller behind one round trip
//! and the lock's hand-offs: 8 threads got 15-80 % of one thread's
//! throughput, and varied run to run; with the pool they get at least one
//! thread's (figures in `docs/reliability.md`). A failed call drops its
//! connection and every idle one (after an outage they are all dead), so
//! the first call after `retry_after` reconnects.
//!
//! # Values are authenticated
//!
//! Redis is a shared network store: whoever can write to it (another
//! service, a compromised replica, an open port) must not be able to plant
//! answers for a tenant, move one tenant's entry under another's key, or
//! make every lookup allocate a gigabyte. So each stored value is
//!
//! ```text
//! 0..32  BLAKE3 keyed hash (the deployment's 32-byte `mac_key`) over
//!        "ragjet-cache/redis-value/v1", the Redis key's length and bytes
//!        (prefix included), and the envelope
//! 32..   the envelope (codec.rs), uncompressed
//! ```
//!
//! and a lookup reads at most `32 + max_value_bytes + 1` bytes (`GETRANGE`,
//! so Redis never sends more), refuses anything longer unread, checks the
//! MAC in constant time before decoding anything, and treats every refusal
//! as a miss, counted in `TierStats::rejected` and
//! `ragjet_cache_rejected_total{tier="l3",reason}`, and deletes the entry.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{CacheError, Result};
use crate::key::CacheKey;
use crate::stats::{Counters, TierStats};

/// Bytes of the MAC in front of every stored value.
const MAC_LEN: usize = 32;
/// Domain separation of the MAC input, versioned with the layout.
const MAC_DOMAIN: &[u8] = b"ragjet-cache/redis-value/v1";
/// `blake3::derive_key` context for [`RedisConfig::mac_key_from_secret`].
pub const MAC_KEY_CONTEXT: &str = "ragjet-cache 2026-01 redis value MAC key";
/// Shortest secret [`RedisConfig::mac_key_from_secret`] accepts.
const MIN_SECRET_BYTES: usize = 16;

/// Settings of the Redis tier.
///
/// `mac_key` authenticates every value (see the module docs): give all
/// replicas of a deployment the same key and keep it secret; a value written
/// under another key is a miss. Derive it from a secret string with
/// [`RedisConfig::mac_key_from_secret`] (for example a random
/// `openssl rand -hex 32` kept in your secret store), or generate 32 random
/// bytes.
///
/// # Examples
///
/// Marked `no_run`: building the cache needs a reachable Redis server.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{MemoryConfig, RedisConfig, Scope, TieredCache};
/// use std::time::Duration;
///
/// // Every replica derives the same MAC key from the deployment's secret.
/// let mac_key = RedisConfig::mac_key_from_secret("a-random-secret-from-the-vault-0123")?;
/// let redis = RedisConfig { timeout: Duration::from_millis(20), ..RedisConfig::new("redis://127.0.0.1:6379/0", mac_key) };
/// let cache = TieredCache::builder().memory(MemoryConfig::default()).redis(redis).build()?;
/// let key = Scope::tenant("acme").key("answers").str("q").finish();
/// cache.put(&key, &"shared by every replica".to_string())?;
/// // With Redis down, lookups degrade to misses (counted as errors), never failures.
/// assert!(cache.get::<String>(&key).is_some());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Connect, read and write timeout of every call.
    pub timeout: Duration,
    /// How long to stop calling Redis after a failure.
    pub retry_after: Duration,
    /// Prefix of every Redis key, so several caches can share a database.
    pub key_prefix: String,
    /// The deployment's 32-byte MAC key (must not be all zeros).
    pub mac_key: [u8; 32],
    /// Largest encoded value (header plus payload) written or read back;
    /// larger writes skip this tier, larger stored values are refused
    /// without being transferred whole.
    pub max_value_bytes: usize,
    /// Idle connections kept for reuse; more callers at once open more
    /// connections, closed when they return to a full pool. At least 1.
    pub pool_size: usize,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .field("key_prefix", &self.key_prefix)
            .field("mac_key", &"<redacted>")
            .field("max_value_bytes", &self.max_value_bytes)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl RedisConfig {
    /// Defaults for `url` with the deployment's MAC key: 50 ms timeouts,
    /// 1 s back-off, prefix `ragjet:`, values up to 4 MiB (larger ones would
    /// not cross a 1 Gbit/s link within the default timeout anyway), up to
    /// 16 idle connections.
    pub fn new(url: impl Into<String>, mac_key: [u8; 32]) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_millis(50),
            retry_after: Duration::from_secs(1),
            key_prefix: "ragjet:".into(),
            mac_key,
            max_value_bytes: 4 << 20,
            pool_size: 16,
        }
    }

    /// Derives the MAC key from a secret string with
    /// `blake3::derive_key(MAC_KEY_CONTEXT, secret)`, so every replica given
    /// the same secret gets the same key. The secret must be at least 16
    /// bytes; use a random one, not a password.
    pub fn mac_key_from_secret(secret: &str) -> Result<[u8; 32]> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(CacheError::InvalidOption(format!(
                "the redis MAC secret must be at least {MIN_SECRET_BYTES} bytes (use a random one)"
            )));
        }
        Ok(blake3::derive_key(MAC_KEY_CONTEXT, secret.as_bytes()))
    }
}

/// Idle connections and the back-off, under one short-held lock: no
/// command runs while it is held.
struct Pool {
    idle: Vec<redis::Connection>,
    down_until: Option<Instant>,
}

pub(crate) struct RedisTier {
    client: redis::Client,
    cfg: RedisConfig,
    pool: Mutex<Pool>,
    pub counters: Arc<Counters>,
}

/// A call that was not made or failed; the caller degrades.
#[derive(Debug)]
pub(crate) struct Unavailable;

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetched {
    /// No value under the key.
    Absent,
    /// An authenticated envelope, at most `max_value_bytes` long (still to
    /// be checked by `codec::verify` for type, expiry and key).
    Value(Vec<u8>),
    /// A value that must not be used; the `reason` label. Already deleted.
    Rejected(&'static str),
}

impl RedisTier {
    pub fn new(cfg: &RedisConfig) -> Result<Self> {
        if cfg.timeout.is_zero() {
            return Err(CacheError::InvalidOption(
                "redis timeout must be > 0".into(),
            ));
        }
        if cfg.mac_key == [0u8; 32] {
            return Err(CacheError::InvalidOption(
                "redis mac_key is all zeros: set the deployment's key (RedisConfig::mac_key_from_secret)"
                    .into(),
            ));
        }
        if cfg.pool_size == 0 {
            return Err(CacheError::InvalidOption(
                "redis pool_size must be >= 1".into(),
            ));
        }
        if cfg.max_value_bytes <= crate::codec::HEADER_LEN {
            return Err(CacheError::InvalidOption(format!(
                "redis max_value_bytes must be > {} (the entry header)",
                crate::codec::HEADER_LEN
            )));
        }
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| CacheError::Redis(e.to_string()))?;
        Ok(Self {
            client,
            cfg: cfg.clone(),
            pool: Mutex::new(Pool {
                idle: Vec::with_capacity(cfg.pool_size),
                down_until: None,
            }),
            counters: Arc::new(Counters::default()),
        })
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.cfg.key_prefix, key.to_hex())
    }

    /// The MAC of `envelope` stored under `redis_key`: binding the key means
    /// a value copied to another key (another tenant's) fails the check.
    fn mac(&self, redis_key: &str, envelope: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.cfg.mac_key);
        h.update(MAC_DOMAIN);
        h.update(&(redis_key.len() as u64).to_le_bytes());
        h.update(redis_key.as_bytes());
        h.update(envelope);
        h.finalize()
    }

    /// The largest envelope this tier writes or reads.
    pub fn max_value_bytes(&self) -> usize {
        self.cfg.max_value_bytes
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        // The pool holds no invariant a panic could break half-way.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the tier for `retry_after` and drops every idle connection.
    fn mark_down(&self) {
        let dead = {
            let mut p = self.pool();
            p.down_until = Some(Instant::now() + self.cfg.retry_after);
            std::mem::take(&mut p.idle)
        };
        // Closed outside the lock.
        drop(dead);
    }

    /// Runs one command on a pooled connection, opening one when none is
    /// idle. The pool's lock is held only to take and return connections.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Unavailable> {
        let pooled = {
            let mut p = self.pool();
            if let Some(t) = p.down_until {
                if Instant::now() < t {
                    return Err(Unavailable);
                }
                p.down_until = None;
            }
            p.idle.pop()
        };
        let mut conn = match pooled {
            Some(c) => c,
            None => match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "redis cache tier unreachable");
                    self.mark_down();
                    return Err(Unavailable);
                }
            },
        };
        match f(&mut conn) {
            Ok(v) => {
                let mut p = self.pool();
                // A connection opened before an outage that began meanwhile
                // is not returned: the pool was emptied for a reason.
                if p.idle.len() < self.cfg.pool_size && p.down_until.is_none() {
                    p.idle.push(conn);
                }
                Ok(v)
            }
            Err(e) => {
                tracing::warn!(error = %e, "redis cache call failed");
                drop(conn);
                self.mark_down();
                Err(Unavailable)
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let c = self.client.get_connection_with_timeout(self.cfg.timeout)?;
        c.set_read_timeout(Some(self.cfg.timeout))?;
        c.set_write_timeout(Some(self.cfg.timeout))?;
        Ok(c)
    }

    /// Reads the value under `key`: at most one byte more than the cap is
    /// transferred, and only a value whose MAC verifies is returned.
    pub fn get(&self, key: &CacheKey) -> std::result::Result<Fetched, Unavailable> {
        let k = self.redis_key(key);
        let limit = MAC_LEN + self.cfg.max_value_bytes;
        // GETRANGE's end is inclusive: `limit + 1` bytes tell "too long"
        // apart from "exactly at the cap". A missing key reads as "".
        let read = self.with_conn(|c| {
            match redis::cmd("GETRANGE")
                .arg(&k)
                .arg(0)
                .arg(limit)
                .query::<Vec<u8>>(c)
            {
                Ok(v) => Ok(Some(v)),
                // Something other than a string under our key: the
                // connection is fine, the entry is not ours.
                Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let reason = match read {
            Some(v) if v.is_empty() => return Ok(Fetched::Absent),
            None => crate::metrics::REASON_CORRUPT,
            Some(v) if v.len() > limit => crate::metrics::REASON_OVERSIZE,
            Some(v) if v.len() < MAC_LEN => crate::metrics::REASON_CORRUPT,
            Some(mut v) => {
                let envelope = v.split_off(MAC_LEN);
                // blake3::Hash compares in constant time.
                if blake3::Hash::from_slice(&v).is_ok_and(|tag| tag == self.mac(&k, &envelope)) {
                    return Ok(Fetched::Value(envelope));
                }
                crate::metrics::REASON_AUTH
            }
        };
        tracing::warn!(key = %k, reason, "L3 cache entry refused and dropped");
        // Best effort: a failed delete only means the next lookup refuses
        // it again.
        let _ = self.remove(key);
        Ok(Fetched::Rejected(reason))
    }

    /// Stores an envelope, behind its MAC, with Redis-side expiry matching
    /// the entry's. An envelope above `max_value_bytes` is not written (and
    /// an older copy under its key is deleted, so it cannot be served in
    /// its place).
    pub fn put(
        &self,
        key: &CacheKey,
        env: &[u8],
        expires_at_ms: u64,
        now_ms: u64,
    ) -> std::result::Result<(), Unavailable> {
        if env.len() > self.cfg.max_value_bytes {
            return self.remove(key);
        }
        let k = self.redis_key(key);
        let mut value = Vec::with_capacity(MAC_LEN + env.len());
        value.extend_from_slice(self.mac(&k, env).as_bytes());
        value.extend_from_slice(env);
        let r = self.with_conn(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&k).arg(&value);
            if expires_at_ms != 0 {
                cmd.arg("PX")
                    .arg(expires_at_ms.saturating_sub(now_ms).max(1));
            }
            cmd.query::<()>(c)
        });
        if r.is_ok() {
            Counters::add(&self.counters.writes, 1);
        }
        r
    }

    pub fn remove(&self, key: &CacheKey) -> std::result::Result<(), Unavailable> {
        let k = self.redis_key(key);
        self.with_conn(|c| redis::cmd("DEL").arg(&k).query::<()>(c))
    }

    /// Deletes every key under this tier's prefix (SCAN + DEL, never KEYS or
    /// FLUSHDB, which would block or wipe other users of the server).
    pub fn clear(&self) -> std::result::Result<u64, Unavailable> {
        let pattern = format!("{}*", self.cfg.key_prefix);
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self.with_conn(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            if !keys.is_empty() {
                removed += self.with_conn(|c| redis::cmd("DEL").arg(&keys).query::<u64>(c))?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    pub fn stats(&self) -> TierStats {
        self.counters.snapshot(0, 0)
    }
}
