//! Tenant isolation as a property: for random interleavings of puts and gets
//! by many scopes on the same cache keys, every tier (L1 memory, L2 disk, L3
//! Redis, and all three stacked, also after a restart) and the semantic
//! cache return a scope only what that scope stored, never another
//! tenant's or user's value.
//!
//! Scopes are drawn from names chosen to collide under a naive key encoding
//! (`"a"`+`"b|c"` against `"a|b"`+`"c"`, no user against an empty user,
//! case and trailing-space variants, an embedded NUL), and every value
//! names the scope that wrote it, so a cross-tenant hit is seen as such.
//!
//! The L3 case follows `tests/redis.rs`: it needs `--features redis` and
//! `RAGJET_TEST_REDIS_URL` (scripts/test.sh sets both), and FAILS when the
//! variable is missing or the server does not answer, unless
//! `RAGJET_SKIP_REDIS_TESTS=1` opts out knowingly.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use ragjet_cache::{
    DiskConfig, MemoryConfig, Scope, SemanticCache, SemanticConfig, TieredCache, TieredCacheBuilder,
};

const TENANTS: &[&str] = &["acme", "acme ", "ACME", "a", "a|b", "ab", "", "a\0b"];
const USERS: &[Option<&str>] = &[None, Some(""), Some("b|c"), Some("c"), Some("u1")];
/// Few key texts, so scopes keep asking for the same ones.
const TEXTS: &[&str] = &["what is a cache?", "refund policy", "", "b|c"];

#[derive(Debug, Clone)]
enum Op {
    Put { scope: usize, text: usize, n: u32 },
    Get { scope: usize, text: usize },
}

fn scope(i: usize) -> Scope {
    let t = TENANTS[i % TENANTS.len()];
    let s = Scope::tenant(t);
    match USERS[i / TENANTS.len()] {
        Some(u) => s.with_user(u),
        None => s,
    }
}

const SCOPES: usize = 8 * 5;

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (0..SCOPES, 0..TEXTS.len(), any::<u32>()).prop_map(|(scope, text, n)| Op::Put {
            scope,
            text,
            n
        }),
        (0..SCOPES, 0..TEXTS.len()).prop_map(|(scope, text)| Op::Get { scope, text }),
    ];
    proptest::collection::vec(op, 1..120)
}

/// A value naming its writer: any mix-up shows in the assertion message.
fn value(scope: usize, text: usize, n: u32) -> String {
    format!("scope {scope} ({:?}) text {text} #{n}", self::scope(scope))
}

fn key(scope: usize, text: usize) -> ragjet_cache::CacheKey {
    self::scope(scope).key("answers").str(TEXTS[text]).finish()
}

/// Plays `ops` on `cache` against a map of what each scope last stored.
/// `exact`: every get must find what the model holds (no tier may drop an
/// entry here); otherwise a miss is allowed but a hit must still be the
/// scope's own value. Returns (gets answered, gets expected to hit).
fn play(
    cache: &TieredCache,
    ops: &[Op],
    model: &mut HashMap<(usize, usize), String>,
    exact: bool,
) -> Result<(usize, usize), TestCaseError> {
    let (mut hits, mut expected) = (0, 0);
    for op in ops {
        match *op {
            Op::Put { scope, text, n } => {
                let v = value(scope, text, n);
                cache
                    .put(&key(scope, text), &v)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.insert((scope, text), v);
            }
            Op::Get { scope, text } => {
                let got: Option<String> = cache.get(&key(scope, text));
                let want = model.get(&(scope, text));
                expected += usize::from(want.is_some());
                match (&got, want) {
                    (Some(g), Some(w)) => {
                        prop_assert_eq!(g, w, "scope {} read another entry", scope);
                        hits += 1;
                    }
                    (Some(g), None) => {
                        prop_assert!(
                            false,
                            "scope {scope} never stored text {text} but read {g:?}"
                        )
                    }
                    (None, Some(w)) if exact => {
                        prop_assert!(false, "scope {scope} lost its own {w:?}")
                    }
                    (None, _) => {}
                }
            }
        }
    }
    Ok((hits, expected))
}

/// Every scope's last value is readable by it afterwards: a final sweep
/// over all (scope, text) pairs, so each case ends checking every pair.
fn sweep(
    cache: &TieredCache,
    model: &HashMap<(usize, usize), String>,
    exact: bool,
) -> Result<(usize, usize), TestCaseError> {
    let gets: Vec<Op> = (0..SCOPES)
        .flat_map(|scope| (0..TEXTS.len()).map(move |text| Op::Get { scope, text }))
        .collect();
    play(cache, &gets, &mut model.clone(), exact)
}

fn memory() -> MemoryConfig {
    MemoryConfig {
        max_bytes: 64 << 20,
        estimated_entries: 1024,
        max_value_bytes: 1 << 20,
    }
}

fn disk(dir: &std::path::Path) -> DiskConfig {
    let mut c = DiskConfig::new(dir.join("cache.redb"));
    // Commits need not reach the platter for this property; it runs many cases.
    c.durable = false;
    c.page_cache_bytes = 1 << 20;
    c
}

fn builder() -> TieredCacheBuilder {
    TieredCache::builder().default_ttl(Some(Duration::from_secs(3600)))
}

/// The scope encoding itself: no two of the test's scopes share a key.
#[test]
fn the_test_scopes_have_distinct_keys() {
    let mut seen = HashMap::new();
    for s in 0..SCOPES {
        if let Some(other) = seen.insert(key(s, 0), s) {
            panic!("{:?} and {:?} share a key", scope(s), scope(other));
        }
    }
    assert_eq!(seen.len(), SCOPES);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn memory_tier_never_serves_another_scope(ops in ops()) {
        let cache = builder().memory(memory()).build().unwrap();
        let mut model = HashMap::new();
        play(&cache, &ops, &mut model, true)?;
        sweep(&cache, &model, true)?;
    }
}

proptest! {
    // Each case opens a redb file: fewer cases, still a few thousand operations.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn disk_tier_never_serves_another_scope(ops in ops()) {
        let dir = tempfile::tempdir().unwrap();
        let cache = builder().disk(disk(dir.path())).build().unwrap();
        let mut model = HashMap::new();
        play(&cache, &ops, &mut model, true)?;
        sweep(&cache, &model, true)?;
    }

    /// Memory over disk, then a new process's view (empty L1, entries
    /// promoted from L2 as they are read).
    #[test]
    fn stacked_tiers_never_serve_another_scope_across_a_restart(ops in ops()) {
        let dir = tempfile::tempdir().unwrap();
        let mut model = HashMap::new();
        {
            let cache = builder().memory(memory()).disk(disk(dir.path())).build().unwrap();
            play(&cache, &ops, &mut model, true)?;
        }
        let reopened = builder().memory(memory()).disk(disk(dir.path())).build().unwrap();
        sweep(&reopened, &model, true)?;
        // Promoted into L1 by the sweep: read again from memory.
        sweep(&reopened, &model, true)?;
    }
}

/// Query embeddings: one axis per key text, so every scope that stores a
/// text inserts the very same vector (similarity 1 across scopes).
fn direction(text: usize, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|d| if d == text { 1.0 } else { 0.0 })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Exact partitions and, past `exact_max_entries`, HNSW ones: a lookup
    /// only ever returns an entry its own scope inserted for that text.
    #[test]
    fn semantic_cache_never_serves_another_scope(
        ops in ops(),
        exact_max in prop_oneof![Just(2usize), Just(10_000usize)],
    ) {
        const DIM: usize = 8;
        let mut cfg = SemanticConfig::new(DIM);
        cfg.exact_max_entries = exact_max;
        // HNSW may lose a hit (never return a wrong one); an exact scan may not.
        let exact = exact_max > 1000;
        let cache: SemanticCache<String> = SemanticCache::new(cfg).unwrap();
        // Every value each (scope, text) inserted: the cache keeps them all.
        let mut model: HashMap<(usize, usize), Vec<String>> = HashMap::new();
        let check = |scope: usize, text: usize, model: &HashMap<(usize, usize), Vec<String>>| {
            let hit = cache.lookup(&self::scope(scope), &direction(text, DIM)).unwrap();
            let own = model.get(&(scope, text));
            match (hit, own) {
                (Some(h), own) => prop_assert!(
                    own.is_some_and(|o| o.contains(&h.value)),
                    "scope {scope} text {text} got {:?}", h.value
                ),
                (None, Some(o)) if exact => prop_assert!(false, "scope {scope} lost {o:?}"),
                (None, _) => {}
            }
            Ok(())
        };
        for op in &ops {
            match *op {
                Op::Put { scope, text, n } => {
                    let v = value(scope, text, n);
                    cache.insert(&self::scope(scope), &direction(text, DIM), v.clone()).unwrap();
                    model.entry((scope, text)).or_default().push(v);
                }
                Op::Get { scope, text } => check(scope, text, &model)?,
            }
        }
        for scope in 0..SCOPES {
            for text in 0..TEXTS.len() {
                check(scope, text, &model)?;
            }
        }
    }
}

#[cfg(feature = "redis")]
mod l3 {
    use super::*;
    use ragjet_cache::RedisConfig;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// The server named by `RAGJET_TEST_REDIS_URL`, checked to answer; a
    /// panic (test failure) when it is unset or unusable, unless the
    /// developer opted out with `RAGJET_SKIP_REDIS_TESTS=1`.
    fn server() -> Option<String> {
        if std::env::var("RAGJET_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1") {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: tenant isolation on the Redis tier (RAGJET_SKIP_REDIS_TESTS=1); \
                 the L3 tier is NOT tested ***"
            );
            return None;
        }
        let url = std::env::var("RAGJET_TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect(
                "RAGJET_TEST_REDIS_URL is not set: scripts/test.sh starts a server, or set \
             RAGJET_SKIP_REDIS_TESTS=1 to skip the Redis tests knowingly",
            );
        let pong: String = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut c| redis::cmd("PING").query(&mut c))
            .unwrap_or_else(|e| panic!("RAGJET_TEST_REDIS_URL={url} is set but unusable: {e}"));
        assert_eq!(pong, "PONG");
        Some(url)
    }

    fn redis(url: &str, case: u64) -> RedisConfig {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut c = RedisConfig::new(
            url,
            RedisConfig::mac_key_from_secret("ragjet tenant tests: not a real secret").unwrap(),
        );
        c.key_prefix = format!("ragjet-test:tenant:{}:{nanos}:{case}:", std::process::id());
        c.timeout = Duration::from_millis(500);
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Redis alone, then memory + disk + Redis with a second replica
        /// (its own L1 and L2, the same Redis) reading everything back.
        #[test]
        fn redis_tier_never_serves_another_scope(ops in ops(), case in any::<u64>()) {
            let Some(url) = server() else { return Ok(()) };
            let l3 = redis(&url, case);
            let cache = builder().redis(l3.clone()).build().unwrap();
            let mut model = HashMap::new();
            // A Redis call that times out is a miss, never a wrong value:
            // hits are checked exactly, misses counted.
            let (hits, expected) = play(&cache, &ops, &mut model, false)?;
            let (h2, e2) = sweep(&cache, &model, false)?;
            prop_assert!(
                (hits + h2) * 10 >= (expected + e2) * 9,
                "Redis answered only {} of {} reads", hits + h2, expected + e2
            );

            let dir = tempfile::tempdir().unwrap();
            let replica = builder()
                .memory(memory())
                .disk(disk(dir.path()))
                .redis(l3)
                .build()
                .unwrap();
            let (h3, e3) = sweep(&replica, &model, false)?;
            prop_assert!(h3 * 10 >= e3 * 9, "replica read only {h3} of {e3}");
        }
    }
}
