//! The tiered cache: L1 memory, L2 disk, L3 Redis, looked up in that order.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::clock::{expiry, Clock, SystemClock};
use crate::codec::{self, CacheValue, Header};
use crate::disk::{DiskConfig, DiskTier};
use crate::error::{CacheError, Result};
use crate::key::CacheKey;
use crate::memory::{MemoryConfig, MemoryTier};
use crate::metrics as m;
use crate::stats::{CacheKind, CacheStats, Counters, TierKind};

#[cfg(feature = "redis")]
use crate::redis_tier::{Fetched, RedisConfig, RedisTier};

/// Configures and opens a [`TieredCache`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{CacheKind, DiskConfig, MemoryConfig, TieredCacheBuilder};
/// use std::time::Duration;
///
/// let dir = std::env::temp_dir().join(format!("ragjet-doc-builder-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let cache = TieredCacheBuilder::new(CacheKind::Retrieval) // labels its metrics `retrieval`
///     .memory(MemoryConfig::default())
///     .disk(DiskConfig::new(dir.join("l2.redb")))
///     .default_ttl(Some(Duration::from_secs(600)))
///     .build()?;
/// assert_eq!(cache.default_ttl(), Some(Duration::from_secs(600)));
/// assert!(cache.stats().l1.is_some() && cache.stats().l2.is_some() && cache.stats().l3.is_none());
/// drop(cache);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TieredCacheBuilder {
    kind: CacheKind,
    memory: Option<MemoryConfig>,
    disk: Option<DiskConfig>,
    #[cfg(feature = "redis")]
    redis: Option<RedisConfig>,
    clock: Option<Arc<dyn Clock>>,
    default_ttl: Option<Duration>,
}

impl TieredCacheBuilder {
    /// A builder with no tiers, no TTL, the wall clock, and the metric label
    /// of `kind`.
    pub fn new(kind: CacheKind) -> Self {
        Self {
            kind,
            memory: None,
            disk: None,
            #[cfg(feature = "redis")]
            redis: None,
            clock: None,
            default_ttl: None,
        }
    }

    /// Adds the in-memory tier.
    pub fn memory(mut self, cfg: MemoryConfig) -> Self {
        self.memory = Some(cfg);
        self
    }

    /// Adds the disk tier.
    pub fn disk(mut self, cfg: DiskConfig) -> Self {
        self.disk = Some(cfg);
        self
    }

    /// Adds the Redis tier.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, cfg: RedisConfig) -> Self {
        self.redis = Some(cfg);
        self
    }

    /// Uses another clock (tests inject a [`crate::ManualClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// TTL of entries written without an explicit one (`None`: never expire).
    pub fn default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Opens the tiers.
    pub fn build(self) -> Result<TieredCache> {
        #[cfg(feature = "redis")]
        let has_l3 = self.redis.is_some();
        #[cfg(not(feature = "redis"))]
        let has_l3 = false;
        if self.memory.is_none() && self.disk.is_none() && !has_l3 {
            return Err(CacheError::InvalidOption(
                "a tiered cache needs at least one tier".into(),
            ));
        }
        if let Some(m) = &self.memory {
            if m.max_bytes == 0 {
                return Err(CacheError::InvalidOption(
                    "memory max_bytes must be > 0".into(),
                ));
            }
        }
        let label = self.kind.label();
        Ok(TieredCache {
            kind: self.kind,
            l1: self.memory.as_ref().map(|c| MemoryTier::new(c, label)),
            l2: match &self.disk {
                Some(c) => Some(DiskTier::open(c, label)?),
                None => None,
            },
            #[cfg(feature = "redis")]
            l3: match &self.redis {
                Some(c) => Some(RedisTier::new(c)?),
                None => None,
            },
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
            default_ttl: self.default_ttl,
            flights: Mutex::new(HashMap::new()),
        })
    }
}

/// Outcome of a single-flight computation, shared with the waiters.
enum Outcome {
    Pending,
    Done(Arc<[u8]>),
    Failed,
}

struct Flight {
    outcome: Mutex<Outcome>,
    cv: Condvar,
}

/// Ends a flight even when the computation returns an error or panics, so
/// waiters never hang.
struct FlightGuard<'a> {
    cache: &'a TieredCache,
    key: CacheKey,
    flight: Arc<Flight>,
    result: Option<Arc<[u8]>>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.cache
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let mut o = self
            .flight
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *o = match self.result.take() {
            Some(env) => Outcome::Done(env),
            None => Outcome::Failed,
        };
        self.flight.cv.notify_all();
    }
}

/// A cache over up to three tiers, looked up fastest first.
///
/// A hit in a lower tier is copied into the tiers above it (keeping its
/// expiry). Writes go to every tier; a value larger than
/// [`MemoryConfig::max_value_bytes`] skips L1. Tier failures never reach the
/// caller: they are counted in [`TierStats::errors`](crate::TierStats) and
/// the lookup goes on as a miss.
///
/// The API is synchronous: every call is short and bounded (Redis calls
/// have timeouts), and a synchronous API is directly usable from plain Rust
/// and from Python with the GIL released.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_cache::{DiskConfig, MemoryConfig, Scope, TierKind, TieredCache};
/// use std::time::Duration;
///
/// let dir = std::env::temp_dir().join(format!("ragjet-doc-tiered-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("cache.redb");
/// let scope = Scope::tenant("acme");
/// let key = scope.key("summaries").str("doc-1").finish();
/// {
///     let cache = TieredCache::builder()
///         .memory(MemoryConfig::default())
///         .disk(DiskConfig::new(&path))
///         .build()?;
///     let mut calls = 0;
///     for _ in 0..3 {
///         let v: Result<String, std::convert::Infallible> =
///             cache.get_or_compute(&key, || { calls += 1; Ok("a summary".into()) });
///         assert_eq!(v.unwrap(), "a summary");
///     }
///     assert_eq!(calls, 1); // computed once, then served from L1
///     cache.put_with_ttl(&scope.key("tmp").finish(), &1u64, Some(Duration::from_secs(5)))?;
///     assert_eq!(cache.stats().l1.unwrap().hits, 2);
///     assert!(cache.contains::<String>(&key));
/// }
/// // The disk tier outlives the process; a fresh cache promotes the entry back to L1.
/// let cache = TieredCache::builder().memory(MemoryConfig::default()).disk(DiskConfig::new(&path)).build()?;
/// assert_eq!(cache.get::<String>(&key).as_deref(), Some("a summary"));
/// cache.clear(TierKind::L2)?;
/// cache.remove(&key);
/// assert_eq!(cache.get::<String>(&key), None);
/// assert_eq!(cache.warm(vec![(key, "warm".to_string())])?, 1);
/// drop(cache);
/// std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
pub struct TieredCache {
    kind: CacheKind,
    l1: Option<MemoryTier>,
    l2: Option<DiskTier>,
    #[cfg(feature = "redis")]
    l3: Option<RedisTier>,
    clock: Arc<dyn Clock>,
    default_ttl: Option<Duration>,
    flights: Mutex<HashMap<CacheKey, Arc<Flight>>>,
}

impl std::fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("kind", &self.kind)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TieredCache {
    /// Starts a builder for a generic cache.
    pub fn builder() -> TieredCacheBuilder {
        TieredCacheBuilder::new(CacheKind::Generic)
    }

    /// The clock used for expiry.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// TTL used by [`Self::put`] and [`Self::get_or_compute`].
    pub fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    /// Looks a key up; `None` when absent, expired, damaged or of another type.
    pub fn get<V: CacheValue>(&self, key: &CacheKey) -> Option<V> {
        let env = self.lookup(key, V::TAG)?;
        codec::decode(&env)
    }

    /// Like [`Self::get`], also returning the entry's header.
    pub(crate) fn get_with_header<V: CacheValue>(&self, key: &CacheKey) -> Option<(V, Header)> {
        let env = self.lookup(key, V::TAG)?;
        let h = codec::header(&env)?;
        Some((codec::decode(&env)?, h))
    }

    /// Whether a live entry of type `V` exists (promotes it like a `get`).
    pub fn contains<V: CacheValue>(&self, key: &CacheKey) -> bool {
        self.lookup(key, V::TAG).is_some()
    }

    /// Stores a value with the default TTL.
    pub fn put<V: CacheValue>(&self, key: &CacheKey, value: &V) -> Result<()> {
        self.put_with_ttl(key, value, self.default_ttl)
    }

    /// Stores a value with an explicit TTL (`None`: never expires).
    pub fn put_with_ttl<V: CacheValue>(
        &self,
        key: &CacheKey,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let env = self.encode(key, value, ttl, 0)?;
        self.store(&[(*key, env)]);
        Ok(())
    }

    /// Stores many values (one disk transaction) with the default TTL.
    pub fn put_many<V: CacheValue>(&self, items: &[(CacheKey, V)]) -> Result<()> {
        let mut envs = Vec::with_capacity(items.len());
        for (k, v) in items {
            envs.push((*k, self.encode(k, v, self.default_ttl, 0)?));
        }
        self.store(&envs);
        Ok(())
    }

    fn encode<V: CacheValue>(
        &self,
        key: &CacheKey,
        value: &V,
        ttl: Option<Duration>,
        hits: u32,
    ) -> Result<Arc<[u8]>> {
        let exp = expiry(self.clock.now_ms(), ttl);
        codec::encode(key, value, exp, hits)
            .map(Arc::from)
            .map_err(|e| CacheError::Encode(e.to_string()))
    }

    /// Re-stores an entry with a new expiry and hit count (adaptive TTL).
    pub(crate) fn restamp<V: CacheValue>(
        &self,
        key: &CacheKey,
        value: &V,
        expires_at_ms: u64,
        hits: u32,
    ) -> Result<()> {
        let env = codec::encode(key, value, expires_at_ms, hits)
            .map_err(|e| CacheError::Encode(e.to_string()))?;
        self.store(&[(*key, Arc::from(env))]);
        Ok(())
    }

    /// Returns the cached value, or runs `compute` once, stores and returns
    /// its result. Concurrent callers on the same missing key wait for one
    /// computation (single flight) instead of repeating it. When `compute`
    /// fails, its error goes to the caller that ran it and nothing is
    /// stored; each waiter then retries (one of them computes next).
    pub fn get_or_compute<V, E, F>(&self, key: &CacheKey, compute: F) -> std::result::Result<V, E>
    where
        V: CacheValue,
        F: FnOnce() -> std::result::Result<V, E>,
    {
        self.get_or_compute_with_ttl(key, self.default_ttl, compute)
    }

    /// [`Self::get_or_compute`] storing the result with an explicit TTL.
    pub fn get_or_compute_with_ttl<V, E, F>(
        &self,
        key: &CacheKey,
        ttl: Option<Duration>,
        compute: F,
    ) -> std::result::Result<V, E>
    where
        V: CacheValue,
        F: FnOnce() -> std::result::Result<V, E>,
    {
        loop {
            if let Some(v) = self.get::<V>(key) {
                return Ok(v);
            }
            let (flight, leader) = {
                let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
                match f.get(key) {
                    Some(fl) => (fl.clone(), false),
                    None => {
                        let fl = Arc::new(Flight {
                            outcome: Mutex::new(Outcome::Pending),
                            cv: Condvar::new(),
                        });
                        f.insert(*key, fl.clone());
                        (fl, true)
                    }
                }
            };
            if leader {
                let mut guard = FlightGuard {
                    cache: self,
                    key: *key,
                    flight,
                    result: None,
                };
                // A value may have landed between our miss and taking the lead.
                if let Some(v) = self.get::<V>(key) {
                    return Ok(v);
                }
                let value = {
                    let _span =
                        tracing::debug_span!("cache.compute", cache = self.kind.label()).entered();
                    compute()?
                };
                match self.encode(key, &value, ttl, 0) {
                    Ok(env) => {
                        self.store(&[(*key, env.clone())]);
                        guard.result = Some(env);
                    }
                    Err(e) => tracing::warn!(error = %e, "computed value not cached"),
                }
                return Ok(value);
            }
            let mut o = flight.outcome.lock().unwrap_or_else(|p| p.into_inner());
            while matches!(*o, Outcome::Pending) {
                o = flight.cv.wait(o).unwrap_or_else(|p| p.into_inner());
            }
            if let Outcome::Done(env) = &*o {
                if let Some(v) = codec::decode::<V>(env) {
                    return Ok(v);
                }
            }
        }
    }

    /// Stores every `(key, value)` pair; returns how many were written.
    pub fn warm<V: CacheValue>(&self, items: Vec<(CacheKey, V)>) -> Result<usize> {
        self.put_many(&items)?;
        Ok(items.len())
    }

    /// For each query whose key is not cached yet, computes and stores its
    /// value; returns how many were computed.
    pub fn warm_with<Q, V, E>(
        &self,
        queries: &[Q],
        key_of: impl Fn(&Q) -> CacheKey,
        mut compute: impl FnMut(&Q) -> std::result::Result<V, E>,
    ) -> std::result::Result<usize, E>
    where
        V: CacheValue,
    {
        let mut computed = 0;
        for q in queries {
            let key = key_of(q);
            if self.contains::<V>(&key) {
                continue;
            }
            let v = compute(q)?;
            if let Err(e) = self.put(&key, &v) {
                tracing::warn!(error = %e, "warm-up value not cached");
            }
            computed += 1;
        }
        Ok(computed)
    }

    /// Removes a key from every tier.
    pub fn remove(&self, key: &CacheKey) {
        if let Some(l1) = &self.l1 {
            l1.remove(key);
        }
        if let Some(l2) = &self.l2 {
            if l2.remove(key).is_err() {
                Counters::add(&l2.counters.errors, 1);
            }
        }
        #[cfg(feature = "redis")]
        if let Some(l3) = &self.l3 {
            if l3.remove(key).is_err() {
                Counters::add(&l3.counters.errors, 1);
            }
        }
    }

    /// Empties one tier (a tier that is not configured is a no-op).
    pub fn clear(&self, tier: TierKind) -> Result<()> {
        match tier {
            TierKind::L1 => {
                if let Some(l1) = &self.l1 {
                    l1.clear();
                }
            }
            TierKind::L2 => {
                if let Some(l2) = &self.l2 {
                    l2.clear()?;
                }
            }
            TierKind::L3 =>
            {
                #[cfg(feature = "redis")]
                if let Some(l3) = &self.l3 {
                    l3.clear()
                        .map_err(|_| CacheError::Redis("redis unavailable during clear".into()))?;
                }
            }
        }
        self.publish_bytes();
        Ok(())
    }

    /// Empties every tier.
    pub fn clear_all(&self) -> Result<()> {
        self.clear(TierKind::L1)?;
        self.clear(TierKind::L2)?;
        self.clear(TierKind::L3)
    }

    /// Drops expired entries from L1 and L2 (Redis expires its own); returns
    /// how many were dropped. Lookups drop expired entries anyway: this only
    /// reclaims space held by entries nobody asks for.
    pub fn purge_expired(&self) -> Result<u64> {
        let now = self.clock.now_ms();
        let mut n = 0;
        if let Some(l1) = &self.l1 {
            n += l1.purge_expired(now);
        }
        if let Some(l2) = &self.l2 {
            n += l2.purge_expired(now)?;
        }
        self.publish_bytes();
        Ok(n)
    }

    /// Per-tier statistics.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            l1: self.l1.as_ref().map(|t| t.stats()),
            l2: self.l2.as_ref().map(|t| t.stats()),
            #[cfg(feature = "redis")]
            l3: self.l3.as_ref().map(|t| t.stats()),
            #[cfg(not(feature = "redis"))]
            l3: None,
        }
    }

    fn publish_bytes(&self) {
        let label = self.kind.label();
        if let Some(l1) = &self.l1 {
            m::bytes(label, "l1", l1.bytes());
        }
        if let Some(l2) = &self.l2 {
            m::bytes(label, "l2", l2.bytes());
        }
    }

    fn count(&self, c: &Counters, tier: TierKind, result: &'static str) {
        let field = match result {
            m::RESULT_HIT => &c.hits,
            m::RESULT_MISS => &c.misses,
            _ => &c.errors,
        };
        Counters::add(field, 1);
        m::request(self.kind.label(), tier.label(), result);
    }

    /// Finds a live entry with type tag `tag`, promoting it upwards.
    fn lookup(&self, key: &CacheKey, tag: u64) -> Option<Arc<[u8]>> {
        let _span = tracing::trace_span!("cache.get", cache = self.kind.label()).entered();
        let now = self.clock.now_ms();
        let tag_ok = |env: &[u8]| codec::header(env).is_some_and(|h| h.tag == tag);
        if let Some(l1) = &self.l1 {
            match l1.get(key, now) {
                Some(env) if tag_ok(&env) => {
                    self.count(&l1.counters, TierKind::L1, m::RESULT_HIT);
                    return Some(env);
                }
                _ => self.count(&l1.counters, TierKind::L1, m::RESULT_MISS),
            }
        }
        if let Some(l2) = &self.l2 {
            match l2.get(key, now) {
                Ok(Some(env)) if tag_ok(&env) => {
                    self.count(&l2.counters, TierKind::L2, m::RESULT_HIT);
                    let env: Arc<[u8]> = Arc::from(env);
                    if let Some(l1) = &self.l1 {
                        let exp = codec::header(&env).map_or(0, |h| h.expires_at_ms);
                        l1.put(*key, env.clone(), exp);
                    }
                    return Some(env);
                }
                Ok(_) => self.count(&l2.counters, TierKind::L2, m::RESULT_MISS),
                Err(e) => {
                    tracing::warn!(error = %e, "disk cache read failed");
                    self.count(&l2.counters, TierKind::L2, m::RESULT_ERROR);
                }
            }
        }
        #[cfg(feature = "redis")]
        if let Some(l3) = &self.l3 {
            let reject = |reason| {
                Counters::add(&l3.counters.rejected, 1);
                m::rejected(self.kind.label(), "l3", reason);
                self.count(&l3.counters, TierKind::L3, m::RESULT_MISS);
            };
            match l3.get(key) {
                // Authenticated, so written by this deployment; still
                // checked for type, expiry and (defensively) damage.
                Ok(Fetched::Value(raw)) => match codec::verify(key, &raw, l3.max_value_bytes()) {
                    Ok((h, env))
                        if h.tag == tag && !crate::clock::is_expired(h.expires_at_ms, now) =>
                    {
                        self.count(&l3.counters, TierKind::L3, m::RESULT_HIT);
                        let env: Arc<[u8]> = Arc::from(env);
                        self.store_upper(key, &env, h.expires_at_ms);
                        return Some(env);
                    }
                    Ok(_) => self.count(&l3.counters, TierKind::L3, m::RESULT_MISS),
                    Err(damage) => {
                        // Drop it so it stops costing lookups.
                        let _ = l3.remove(key);
                        reject(damage.reason());
                    }
                },
                Ok(Fetched::Rejected(reason)) => reject(reason),
                Ok(Fetched::Absent) => self.count(&l3.counters, TierKind::L3, m::RESULT_MISS),
                Err(_) => self.count(&l3.counters, TierKind::L3, m::RESULT_ERROR),
            }
        }
        None
    }

    /// Promotion from L3: copy into L2 and L1.
    #[cfg(feature = "redis")]
    fn store_upper(&self, key: &CacheKey, env: &Arc<[u8]>, exp: u64) {
        if let Some(l1) = &self.l1 {
            l1.put(*key, env.clone(), exp);
        }
        if let Some(l2) = &self.l2 {
            if l2.put_many(&[(*key, &env[..])]).is_err() {
                Counters::add(&l2.counters.errors, 1);
            }
        }
    }

    /// Writes envelopes to every tier; failures are counted, not returned.
    fn store(&self, items: &[(CacheKey, Arc<[u8]>)]) {
        if let Some(l1) = &self.l1 {
            for (k, env) in items {
                let exp = codec::header(env).map_or(0, |h| h.expires_at_ms);
                if !l1.put(*k, env.clone(), exp) {
                    // Too large for L1: make sure no stale smaller copy stays.
                    l1.remove(k);
                }
            }
        }
        if let Some(l2) = &self.l2 {
            let refs: Vec<(CacheKey, &[u8])> = items.iter().map(|(k, e)| (*k, &e[..])).collect();
            if let Err(e) = l2.put_many(&refs) {
                tracing::warn!(error = %e, "disk cache write failed");
                Counters::add(&l2.counters.errors, 1);
                m::request(self.kind.label(), "l2", m::RESULT_ERROR);
            }
        }
        #[cfg(feature = "redis")]
        if let Some(l3) = &self.l3 {
            let now = self.clock.now_ms();
            for (k, env) in items {
                let exp = codec::header(env).map_or(0, |h| h.expires_at_ms);
                if l3.put(k, env, exp, now).is_err() {
                    Counters::add(&l3.counters.errors, 1);
                    m::request(self.kind.label(), "l3", m::RESULT_ERROR);
                }
            }
        }
        self.publish_bytes();
    }

    /// Test hook: how many callers hold the flight of `key` (map entry,
    /// leader guard and every waiter).
    #[cfg(test)]
    pub(crate) fn flight_refs(&self, key: &CacheKey) -> usize {
        self.flights
            .lock()
            .unwrap()
            .get(key)
            .map_or(0, Arc::strong_count)
    }

    #[cfg(test)]
    pub(crate) fn l2_for_tests(&self) -> Option<&DiskTier> {
        self.l2.as_ref()
    }
}
