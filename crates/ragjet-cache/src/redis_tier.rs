//! L3: a Redis tier shared by several replicas (feature `redis`).
//!
//! Every call has a connect, read and write timeout. After a failure the
//! tier stays closed for `retry_after` so that a dead or slow server costs
//! at most one timeout per interval instead of one per request; meanwhile
//! lookups count as errors and are answered by L1/L2.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{CacheError, Result};
use crate::key::CacheKey;
use crate::stats::{Counters, TierStats};

/// Settings of the Redis tier.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Server URL, e.g. `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// Connect, read and write timeout of every call.
    pub timeout: Duration,
    /// How long to stop calling Redis after a failure.
    pub retry_after: Duration,
    /// Prefix of every Redis key, so several caches can share a database.
    pub key_prefix: String,
}

impl RedisConfig {
    /// Defaults for `url`: 50 ms timeouts, 1 s back-off, prefix `ragjet:`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_millis(50),
            retry_after: Duration::from_secs(1),
            key_prefix: "ragjet:".into(),
        }
    }
}

struct State {
    conn: Option<redis::Connection>,
    down_until: Option<Instant>,
}

pub(crate) struct RedisTier {
    client: redis::Client,
    cfg: RedisConfig,
    state: Mutex<State>,
    pub counters: Arc<Counters>,
}

/// A call that was not made or failed; the caller degrades.
#[derive(Debug)]
pub(crate) struct Unavailable;

impl RedisTier {
    pub fn new(cfg: &RedisConfig) -> Result<Self> {
        if cfg.timeout.is_zero() {
            return Err(CacheError::InvalidOption(
                "redis timeout must be > 0".into(),
            ));
        }
        let client =
            redis::Client::open(cfg.url.as_str()).map_err(|e| CacheError::Redis(e.to_string()))?;
        Ok(Self {
            client,
            cfg: cfg.clone(),
            state: Mutex::new(State {
                conn: None,
                down_until: None,
            }),
            counters: Arc::new(Counters::default()),
        })
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.cfg.key_prefix, key.to_hex())
    }

    /// Runs one command on the shared connection, (re)connecting when needed.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> std::result::Result<T, Unavailable> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = st.down_until {
            if Instant::now() < t {
                return Err(Unavailable);
            }
            st.down_until = None;
        }
        if st.conn.is_none() {
            match self.connect() {
                Ok(c) => st.conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "redis cache tier unreachable");
                    st.down_until = Some(Instant::now() + self.cfg.retry_after);
                    return Err(Unavailable);
                }
            }
        }
        let Some(conn) = st.conn.as_mut() else {
            return Err(Unavailable);
        };
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                tracing::warn!(error = %e, "redis cache call failed");
                st.conn = None;
                st.down_until = Some(Instant::now() + self.cfg.retry_after);
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

    pub fn get(&self, key: &CacheKey) -> std::result::Result<Option<Vec<u8>>, Unavailable> {
        let k = self.redis_key(key);
        self.with_conn(|c| redis::cmd("GET").arg(&k).query::<Option<Vec<u8>>>(c))
    }

    /// Stores an envelope with Redis-side expiry matching the entry's.
    pub fn put(
        &self,
        key: &CacheKey,
        env: &[u8],
        expires_at_ms: u64,
        now_ms: u64,
    ) -> std::result::Result<(), Unavailable> {
        let k = self.redis_key(key);
        let r = self.with_conn(|c| {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&k).arg(env);
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
