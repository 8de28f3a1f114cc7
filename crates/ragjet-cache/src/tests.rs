//! Behaviour tests across tiers and typed caches. They use a ManualClock,
//! never sleep, and make no timing assertions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use crate::*;

const T0: u64 = 1_700_000_000_000;

fn clock() -> (ManualClock, Arc<dyn Clock>) {
    let c = ManualClock::new(T0);
    (c.clone(), Arc::new(c))
}

fn mem(max_bytes: u64) -> MemoryConfig {
    MemoryConfig {
        max_bytes,
        estimated_entries: 1000,
        max_value_bytes: 1 << 20,
    }
}

fn disk(dir: &tempfile::TempDir) -> DiskConfig {
    DiskConfig::new(dir.path().join("l2.redb"))
}

fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random()).collect()
}

fn key(scope: &Scope, s: &str) -> CacheKey {
    scope.key("test").str(s).finish()
}

#[test]
fn l1_ttl_expiry_with_manual_clock() {
    let (c, clk) = clock();
    let cache = TieredCache::builder()
        .memory(mem(1 << 20))
        .clock(clk)
        .build()
        .unwrap();
    let s = Scope::tenant("a");
    let k = key(&s, "q");
    cache
        .put_with_ttl(&k, &"v".to_string(), Some(Duration::from_secs(10)))
        .unwrap();
    c.advance(Duration::from_millis(9_999));
    assert_eq!(cache.get::<String>(&k).as_deref(), Some("v"));
    c.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<String>(&k), None);
    let st = cache.stats().l1.unwrap();
    assert_eq!((st.hits, st.misses), (1, 1));
    assert_eq!(st.evictions, 1, "expired entry is dropped");
    assert_eq!(st.entries, 0);
    // No TTL: never expires.
    cache.put_with_ttl(&k, &"w".to_string(), None).unwrap();
    c.advance(Duration::from_secs(10 * 365 * 86_400));
    assert_eq!(cache.get::<String>(&k).as_deref(), Some("w"));
}

#[test]
fn l2_ttl_expiry_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let (c, clk) = clock();
    let cache = TieredCache::builder()
        .disk(disk(&dir))
        .clock(clk)
        .default_ttl(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let s = Scope::tenant("a");
    for i in 0..10 {
        cache.put(&key(&s, &i.to_string()), &(i as u64)).unwrap();
    }
    c.advance(Duration::from_secs(30));
    cache
        .put_with_ttl(&key(&s, "long"), &99u64, Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(cache.get::<u64>(&key(&s, "3")), Some(3));
    c.advance(Duration::from_secs(31));
    assert_eq!(cache.get::<u64>(&key(&s, "3")), None);
    assert_eq!(cache.purge_expired().unwrap(), 9);
    assert_eq!(cache.stats().l2.unwrap().entries, 1);
    assert_eq!(cache.get::<u64>(&key(&s, "long")), Some(99));
}

#[test]
fn lower_tier_hits_are_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TieredCache::builder()
        .memory(mem(1 << 20))
        .disk(disk(&dir))
        .build()
        .unwrap();
    let k = key(&Scope::tenant("a"), "q");
    cache.put(&k, &vec![1.0f32, 2.0]).unwrap();
    cache.clear(TierKind::L1).unwrap();
    assert_eq!(cache.get::<Vec<f32>>(&k), Some(vec![1.0, 2.0]));
    let st = cache.stats();
    assert_eq!((st.l1.unwrap().misses, st.l2.unwrap().hits), (1, 1));
    assert_eq!(cache.get::<Vec<f32>>(&k), Some(vec![1.0, 2.0]));
    let st = cache.stats();
    assert_eq!(st.l1.unwrap().hits, 1, "second read served by L1");
    assert_eq!(st.l2.unwrap().hits, 1);
}

#[test]
fn l1_respects_its_byte_bound() {
    let cache = TieredCache::builder()
        .memory(mem(64 * 1024))
        .build()
        .unwrap();
    let s = Scope::tenant("a");
    for i in 0..200 {
        cache
            .put(&key(&s, &i.to_string()), &vec![7u8; 4000])
            .unwrap();
    }
    let st = cache.stats().l1.unwrap();
    assert!(st.bytes <= 64 * 1024, "{} bytes", st.bytes);
    assert!(st.evictions > 100, "{st:?}");
    assert!(st.entries > 0 && st.entries < 20, "{st:?}");
}

#[test]
fn l2_respects_its_byte_bound_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk(&dir);
    cfg.max_bytes = 64 * 1024;
    let cache = TieredCache::builder().disk(cfg).build().unwrap();
    let s = Scope::tenant("a");
    for i in 0..100 {
        // Random bytes do not compress, so each entry costs ~4 KB.
        cache
            .put(&key(&s, &i.to_string()), &random_bytes(4000, i))
            .unwrap();
    }
    let st = cache.stats().l2.unwrap();
    assert!(st.bytes <= 64 * 1024, "{st:?}");
    assert!(st.evictions >= 80, "{st:?}");
    assert_eq!(cache.get::<Vec<u8>>(&key(&s, "0")), None);
    assert_eq!(
        cache.get::<Vec<u8>>(&key(&s, "99")),
        Some(random_bytes(4000, 99))
    );
}

#[test]
fn values_too_large_for_l1_go_to_l2_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = mem(1 << 20);
    m.max_value_bytes = 1000;
    let cache = TieredCache::builder()
        .memory(m)
        .disk(disk(&dir))
        .build()
        .unwrap();
    let s = Scope::tenant("a");
    let big = key(&s, "big");
    let small = key(&s, "small");
    cache.put(&big, &random_bytes(5000, 1)).unwrap();
    cache.put(&small, &random_bytes(100, 2)).unwrap();
    assert_eq!(cache.stats().l1.unwrap().entries, 1);
    assert_eq!(cache.stats().l2.unwrap().entries, 2);
    assert_eq!(cache.get::<Vec<u8>>(&big), Some(random_bytes(5000, 1)));
    assert_eq!(cache.get::<Vec<u8>>(&big), Some(random_bytes(5000, 1)));
    let st = cache.stats();
    assert_eq!(st.l2.unwrap().hits, 2, "never promoted into L1");
    assert_eq!(st.l1.unwrap().entries, 1);
}

#[test]
fn single_flight_computes_once_for_16_threads() {
    let cache = Arc::new(TieredCache::builder().memory(mem(1 << 20)).build().unwrap());
    let k = key(&Scope::tenant("a"), "slow");
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let (cache, runs, barrier) = (cache.clone(), runs.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_compute::<String, (), _>(&k, || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // Hold the flight until the 15 other callers wait on
                        // it (map + leader + 15 waiters), so a broken
                        // single-flight would run 16 computations. The bound
                        // only stops a hang if that never happens.
                        for _ in 0..2_000_000 {
                            if cache.flight_refs(&k) >= 17 {
                                break;
                            }
                            std::thread::yield_now();
                        }
                        Ok("computed".to_string())
                    })
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), "computed");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(cache.flight_refs(&k), 0, "flight removed");
}

#[test]
fn failed_computation_releases_waiters_and_caches_nothing() {
    let cache = TieredCache::builder().memory(mem(1 << 20)).build().unwrap();
    let k = key(&Scope::tenant("a"), "q");
    let r: std::result::Result<String, &str> = cache.get_or_compute(&k, || Err("boom"));
    assert_eq!(r, Err("boom"));
    assert_eq!(cache.get::<String>(&k), None);
    assert_eq!(cache.flight_refs(&k), 0);
    let r: std::result::Result<String, &str> = cache.get_or_compute(&k, || Ok("ok".into()));
    assert_eq!(r.as_deref(), Ok("ok"));
    let r: std::result::Result<String, &str> = cache.get_or_compute(&k, || Err("not called"));
    assert_eq!(r.as_deref(), Ok("ok"));
}

#[test]
fn l2_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Scope::tenant("a");
    let v: Vec<f32> = (0..384).map(|i| (i as f32).sin()).collect();
    let bytes_before;
    {
        let cache = TieredCache::builder()
            .memory(mem(1 << 20))
            .disk(disk(&dir))
            .build()
            .unwrap();
        cache.put(&key(&s, "v"), &v).unwrap();
        cache.put(&key(&s, "w"), &"text".to_string()).unwrap();
        bytes_before = cache.stats().l2.unwrap().bytes;
    }
    let cache = TieredCache::builder()
        .memory(mem(1 << 20))
        .disk(disk(&dir))
        .build()
        .unwrap();
    let st = cache.stats().l2.unwrap();
    assert_eq!((st.entries, st.bytes), (2, bytes_before));
    assert_eq!(cache.get::<Vec<f32>>(&key(&s, "v")), Some(v));
    assert_eq!(cache.get::<String>(&key(&s, "w")).as_deref(), Some("text"));
}

#[test]
fn copy_of_store_after_commit_opens_like_after_a_power_cut() {
    // What a power cut leaves is the file as of the last durable commit:
    // copying the file while the store is still open reproduces that.
    let dir = tempfile::tempdir().unwrap();
    let s = Scope::tenant("a");
    let cache = TieredCache::builder().disk(disk(&dir)).build().unwrap();
    cache.put(&key(&s, "k"), &42u64).unwrap();
    let copy = dir.path().join("copy.redb");
    std::fs::copy(dir.path().join("l2.redb"), &copy).unwrap();
    let reopened = TieredCache::builder()
        .disk(DiskConfig::new(&copy))
        .build()
        .unwrap();
    assert_eq!(reopened.get::<u64>(&key(&s, "k")), Some(42));
    drop(cache);
}

#[test]
fn corrupted_l2_entry_is_a_miss_and_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TieredCache::builder().disk(disk(&dir)).build().unwrap();
    let s = Scope::tenant("a");
    let good = key(&s, "good");
    let garbage = key(&s, "garbage");
    let flipped = key(&s, "flipped");
    cache.put(&good, &"fine".to_string()).unwrap();
    let l2 = cache.l2_for_tests().unwrap();
    l2.put_raw(&garbage, b"\x00\x01not an entry at all");
    let mut env = crate::codec::encode(&flipped, &vec![3u8; 600], 0, 0).unwrap();
    let n = env.len();
    env[n - 5] ^= 0x40;
    l2.put_raw(&flipped, &env);
    // An entry copied under another key is refused too.
    let misfiled = key(&s, "misfiled");
    l2.put_raw(
        &misfiled,
        &crate::codec::encode(&good, &"fine".to_string(), 0, 0).unwrap(),
    );

    assert_eq!(cache.get::<Vec<u8>>(&garbage), None);
    assert_eq!(cache.get::<Vec<u8>>(&flipped), None);
    assert_eq!(cache.get::<String>(&misfiled), None);
    assert_eq!(cache.get::<String>(&good).as_deref(), Some("fine"));
    let st = cache.stats().l2.unwrap();
    assert_eq!(st.entries, 1, "damaged entries deleted: {st:?}");
    assert_eq!(st.rejected, 3, "refused entries are not store failures");
    assert_eq!(st.errors, 0);
    assert_eq!(st.misses, 3);
}

#[test]
fn l2_caps_value_sizes_on_write_and_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = disk(&dir);
    cfg.max_value_bytes = 2000;
    let cache = TieredCache::builder().disk(cfg).build().unwrap();
    let s = Scope::tenant("a");
    let k = key(&s, "k");

    // A write above the cap skips L2 and drops the older, smaller copy.
    cache.put(&k, &random_bytes(100, 1)).unwrap();
    cache.put(&k, &random_bytes(5000, 2)).unwrap();
    assert_eq!(cache.get::<Vec<u8>>(&k), None, "no stale value served");
    assert_eq!(cache.stats().l2.unwrap().entries, 0);

    // Stored entries above the cap are refused before being copied or
    // decompressed: one too long as stored, one whose lz4 size prefix
    // promises more than the cap (compressible data: small on disk).
    let l2 = cache.l2_for_tests().unwrap();
    let long = key(&s, "long");
    l2.put_raw(
        &long,
        &crate::codec::encode(&long, &random_bytes(5000, 3), 0, 0).unwrap(),
    );
    let zeros = key(&s, "zeros");
    let env = crate::codec::encode(&zeros, &vec![0u8; 100_000], 0, 0).unwrap();
    let packed = crate::codec::compress(&zeros, &env, 0).unwrap();
    assert!(packed.len() < 2000, "{}", packed.len());
    l2.put_raw(&zeros, &packed);
    assert_eq!(cache.get::<Vec<u8>>(&long), None);
    assert_eq!(cache.get::<Vec<u8>>(&zeros), None);
    let st = cache.stats().l2.unwrap();
    assert_eq!((st.rejected, st.misses), (2, 3), "{st:?}");
}

#[test]
fn wrong_type_or_version_is_a_miss() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct V1(String);
    impl CacheValue for V1 {
        const KIND: &'static str = "test.answer";
    }
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct V2(String);
    impl CacheValue for V2 {
        const KIND: &'static str = "test.answer";
        const VERSION: u32 = 2;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = TieredCache::builder()
        .memory(mem(1 << 20))
        .disk(disk(&dir))
        .build()
        .unwrap();
    let k = key(&Scope::tenant("a"), "q");
    cache.put(&k, &V1("x".into())).unwrap();
    assert_eq!(cache.get::<V2>(&k), None);
    assert_eq!(cache.get::<Vec<f32>>(&k), None);
    assert_eq!(cache.get::<V1>(&k), Some(V1("x".into())));
}

#[test]
fn tenants_never_see_each_other_in_l1_and_l2() {
    let dir = tempfile::tempdir().unwrap();
    for tiers in ["l1", "l2", "both"] {
        let mut b = TieredCache::builder();
        if tiers != "l2" {
            b = b.memory(mem(1 << 20));
        }
        if tiers != "l1" {
            b = b.disk(DiskConfig::new(dir.path().join(format!("{tiers}.redb"))));
        }
        let cache = b.build().unwrap();
        let a = Scope::tenant("tenant-a");
        let bb = Scope::tenant("tenant-b");
        cache
            .put(&key(&a, "same question"), &"A's answer".to_string())
            .unwrap();
        assert_eq!(
            cache.get::<String>(&key(&bb, "same question")),
            None,
            "{tiers}"
        );
        assert_eq!(
            cache.get::<String>(&key(&a.clone().with_user("u"), "same question")),
            None
        );
        assert_eq!(
            cache.get::<String>(&key(&a.clone().with_data_version(1), "same question")),
            None
        );
        assert_eq!(
            cache.get::<String>(&key(&a, "same question")).as_deref(),
            Some("A's answer")
        );
    }
}

#[test]
fn clear_one_tier_or_all_and_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let cache = TieredCache::builder()
        .memory(mem(1 << 20))
        .disk(disk(&dir))
        .build()
        .unwrap();
    let s = Scope::tenant("a");
    let items: Vec<(CacheKey, u64)> = (0..5).map(|i| (key(&s, &i.to_string()), i)).collect();
    assert_eq!(cache.warm(items).unwrap(), 5);
    let st = cache.stats();
    assert_eq!((st.l1.unwrap().entries, st.l2.unwrap().entries), (5, 5));
    cache.clear(TierKind::L2).unwrap();
    assert_eq!(cache.stats().l2.unwrap().entries, 0);
    assert_eq!(cache.get::<u64>(&key(&s, "1")), Some(1), "still in L1");
    cache.clear_all().unwrap();
    assert_eq!(cache.get::<u64>(&key(&s, "1")), None);

    cache.put(&key(&s, "q2"), &200u64).unwrap();
    let queries = ["q1", "q2", "q3"];
    let mut computed = Vec::new();
    let n = cache
        .warm_with::<_, u64, ()>(
            &queries,
            |q| key(&s, q),
            |q| {
                computed.push(q.to_string());
                Ok(q.len() as u64 * 100)
            },
        )
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(computed, vec!["q1", "q3"]);
    assert_eq!(cache.get::<u64>(&key(&s, "q3")), Some(200));
}

#[test]
fn building_without_tiers_is_an_error() {
    assert!(matches!(
        TieredCache::builder().build(),
        Err(CacheError::InvalidOption(_))
    ));
}

#[derive(Debug, PartialEq)]
enum AppError {
    Cache(String),
    Model,
}

impl From<CacheError> for AppError {
    fn from(e: CacheError) -> Self {
        AppError::Cache(e.to_string())
    }
}

fn fake_embed(t: &str) -> Vec<f32> {
    vec![t.len() as f32, t.bytes().map(|b| b as f32).sum()]
}

#[test]
fn embedding_cache_computes_only_misses_in_one_batch_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let ec = EmbeddingCache::open(dir.path().join("emb.redb"), "minilm", "rev1").unwrap();
    let s = Scope::tenant("a");
    ec.put(&s, "b", &fake_embed("b")).unwrap();
    let mut calls = Vec::new();
    let texts = ["a", "b", "c", "a", "dd"];
    let out = ec
        .get_or_compute_many::<_, AppError, _>(&s, &texts, |batch| {
            calls.push(batch.iter().map(|t| t.to_string()).collect::<Vec<_>>());
            Ok(batch.iter().map(|t| fake_embed(t)).collect())
        })
        .unwrap();
    assert_eq!(calls, vec![vec!["a", "c", "dd"]]);
    let want: Vec<Vec<f32>> = texts.iter().map(|t| fake_embed(t)).collect();
    assert_eq!(out, want);
    // Everything cached now: no call at all.
    let out2 = ec
        .get_or_compute_many::<_, AppError, _>(&s, &texts, |_| Err(AppError::Model))
        .unwrap();
    assert_eq!(out2, want);
    // Another model revision shares nothing.
    let ec2 = EmbeddingCache::with_cache(
        TieredCacheBuilder::new(CacheKind::Embedding)
            .disk(DiskConfig::new(dir.path().join("emb2.redb")))
            .build()
            .unwrap(),
        "minilm",
        "rev2",
    );
    assert_ne!(ec.key(&s, "a"), ec2.key(&s, "a"));
    // A compute function returning the wrong count is an error, not a panic.
    let bad =
        ec.get_or_compute_many::<_, AppError, _>(&s, &["new1", "new2"], |_| Ok(vec![vec![1.0]]));
    assert!(matches!(bad, Err(AppError::Cache(_))), "{bad:?}");
    // The compute error reaches the caller.
    let err = ec.get_or_compute_many::<_, AppError, _>(&s, &["new3"], |_| Err(AppError::Model));
    assert_eq!(err, Err(AppError::Model));
}

#[test]
fn retrieval_cache_index_version_and_adaptive_ttl() {
    use ragjet_retrieval::{FilterCondition, FilterOperator, MetadataFilter, MetadataFilters};
    let (c, clk) = clock();
    let rc = RetrievalCache::with_cache(
        TieredCacheBuilder::new(CacheKind::Retrieval)
            .memory(mem(1 << 20))
            .clock(clk)
            .build()
            .unwrap(),
        AdaptiveTtl {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(4 * 3600),
        },
    );
    let s = Scope::tenant("a");
    let lang = MetadataFilter::new("lang", FilterOperator::Eq, "en");
    let year = MetadataFilter::new("year", FilterOperator::Eq, 2024i64);
    let filters = MetadataFilters::new(vec![lang.clone(), year.clone()], FilterCondition::And);
    let reordered = MetadataFilters::new(vec![year, lang], FilterCondition::And);
    let q = RetrievalQuery {
        query: "rust caches",
        namespace: "default",
        filters: Some(&filters),
        top_k: 10,
        mode: "dense",
        index_version: 0,
    };
    let q_reordered = RetrievalQuery {
        filters: Some(&reordered),
        ..q
    };
    let hits: Vec<(u64, f32)> = vec![(7, 0.9), (3, 0.8)];
    rc.put(&s, &q, &hits).unwrap();
    assert_eq!(
        rc.get::<Vec<(u64, f32)>>(&s, &q_reordered),
        Some(hits.clone())
    );
    assert_eq!(
        rc.get::<Vec<(u64, f32)>>(&s, &RetrievalQuery { top_k: 5, ..q }),
        None
    );

    // Adaptive TTL: the entry was hit once at t0 → lives 2 h from t0.
    c.advance(Duration::from_secs(90 * 60));
    assert!(
        rc.get::<Vec<(u64, f32)>>(&s, &q).is_some(),
        "alive at 1h30 thanks to the hit"
    );
    // Second hit at 1h30 → 3 h from now (4h30); third at 4h → capped 4 h.
    c.advance(Duration::from_secs(150 * 60));
    assert!(rc.get::<Vec<(u64, f32)>>(&s, &q).is_some(), "alive at 4h");
    c.advance(Duration::from_secs(4 * 3600 - 1));
    assert!(
        rc.get::<Vec<(u64, f32)>>(&s, &q).is_some(),
        "alive just before the cap"
    );
    c.advance(Duration::from_secs(4 * 3600));
    assert!(rc.get::<Vec<(u64, f32)>>(&s, &q).is_none(), "cap reached");

    // A cold entry lives the base TTL only.
    let cold = RetrievalQuery { query: "cold", ..q };
    rc.put(&s, &cold, &hits).unwrap();
    c.advance(Duration::from_secs(3600));
    assert!(rc.get::<Vec<(u64, f32)>>(&s, &cold).is_none());

    // Bumping the index version invalidates.
    rc.put(&s, &q, &hits).unwrap();
    assert!(rc.get::<Vec<(u64, f32)>>(&s, &q).is_some());
    assert_eq!(rc.bump_index_version(), 1);
    assert!(rc.get::<Vec<(u64, f32)>>(&s, &q).is_none());
    let computed: std::result::Result<Vec<(u64, f32)>, ()> =
        rc.get_or_compute(&s, &q, || Ok(vec![(1, 1.0)]));
    assert_eq!(computed, Ok(vec![(1, 1.0)]));
    assert_eq!(rc.get::<Vec<(u64, f32)>>(&s, &q), Some(vec![(1, 1.0)]));
}

#[test]
fn adaptive_ttl_formula() {
    let t = AdaptiveTtl::default();
    assert_eq!(t.ttl_after(0), Duration::from_secs(3600));
    assert_eq!(t.ttl_after(2), Duration::from_secs(3 * 3600));
    assert_eq!(t.ttl_after(1000), Duration::from_secs(6 * 3600));
}

#[test]
fn response_cache_is_user_scoped() {
    let rc = ResponseCache::new().unwrap();
    let p = SamplingParams::default();
    let tenant = Scope::tenant("a");
    assert!(matches!(
        rc.put(&tenant, "hi", "m", &p, "x"),
        Err(CacheError::UserRequired)
    ));
    assert!(matches!(
        rc.get(&tenant, "hi", "m", &p),
        Err(CacheError::UserRequired)
    ));
    let alice = tenant.clone().with_user("alice");
    let bob = tenant.with_user("bob");
    rc.put(&alice, "hi", "m", &p, "hello alice").unwrap();
    assert_eq!(
        rc.get(&alice, "hi", "m", &p).unwrap().as_deref(),
        Some("hello alice")
    );
    assert_eq!(rc.get(&bob, "hi", "m", &p).unwrap(), None);
    let hot = SamplingParams {
        temperature: 0.7,
        ..p.clone()
    };
    assert_eq!(rc.get(&alice, "hi", "m", &hot).unwrap(), None);
    assert_eq!(rc.get(&alice, "hi", "other-model", &p).unwrap(), None);
    let r: std::result::Result<String, AppError> =
        rc.get_or_compute(&bob, "hi", "m", &p, || Ok("hello bob".into()));
    assert_eq!(r.as_deref(), Ok("hello bob"));
    assert_eq!(rc.cache().default_ttl(), Some(Duration::from_secs(1800)));
}

/// A unit vector at angle `theta` from e0 in the (e0, e1) plane, padded to `dim`.
fn at_angle(theta: f32, dim: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[0] = theta.cos();
    v[1] = theta.sin();
    v
}

#[test]
fn semantic_threshold_best_match_and_stats() {
    let sc: SemanticCache<String> = SemanticCache::new(SemanticConfig::new(8)).unwrap();
    let s = Scope::tenant("a");
    // cos(0.2) = 0.980, cos(0.3) = 0.955, cos(0.4) = 0.921
    sc.insert(&s, &at_angle(0.2, 8), "near".into()).unwrap();
    sc.insert(&s, &at_angle(-0.3, 8), "farther".into()).unwrap();
    let hit = sc.lookup(&s, &at_angle(0.0, 8)).unwrap().unwrap();
    assert_eq!(hit.value, "near");
    assert!((hit.similarity - 0.2f32.cos()).abs() < 1e-5);
    // Scaling the query does not change cosine.
    let scaled: Vec<f32> = at_angle(0.0, 8).iter().map(|x| x * 7.0).collect();
    assert_eq!(sc.lookup(&s, &scaled).unwrap().unwrap().value, "near");
    // 0.6 rad from "near" (cos 0.825) and 0.1 from "farther"... query at -0.4:
    let q = at_angle(-0.4, 8);
    let hit = sc.lookup(&s, &q).unwrap().unwrap();
    assert_eq!(hit.value, "farther");
    // Just below the threshold: 0.32 rad from the nearest → cos 0.949 < 0.95.
    assert_eq!(sc.lookup(&s, &at_angle(0.52, 8)).unwrap(), None);
    // Just above: 0.31 rad → cos 0.952.
    assert!(sc.lookup(&s, &at_angle(0.51, 8)).unwrap().is_some());
    let st = sc.stats();
    assert_eq!((st.hits, st.misses, st.entries), (4, 1, 2));
    assert!(
        st.mean_hit_similarity > 0.95 && st.mean_hit_similarity < 1.0,
        "{st:?}"
    );
}

#[test]
fn semantic_ttl_cleanup_capacity_and_bad_vectors() {
    let (c, clk) = clock();
    let mut cfg = SemanticConfig::new(4);
    cfg.ttl = Some(Duration::from_secs(60));
    cfg.max_entries_per_scope = 3;
    let sc: SemanticCache<u64> = SemanticCache::with_clock(cfg, clk).unwrap();
    let s = Scope::tenant("a");
    sc.insert(&s, &[1.0, 0.0, 0.0, 0.0], 1).unwrap();
    c.advance(Duration::from_secs(30));
    sc.insert(&s, &[0.0, 1.0, 0.0, 0.0], 2).unwrap();
    c.advance(Duration::from_secs(31));
    // Entry 1 expired: its lookup misses and drops it.
    assert_eq!(sc.lookup(&s, &[1.0, 0.0, 0.0, 0.0]).unwrap(), None);
    assert_eq!(sc.stats().entries, 1);
    assert_eq!(
        sc.lookup(&s, &[0.0, 1.0, 0.0, 0.0]).unwrap().unwrap().value,
        2
    );
    c.advance(Duration::from_secs(30));
    assert_eq!(sc.cleanup(), 1);
    assert_eq!(sc.stats().entries, 0);
    // Capacity: the oldest goes first.
    for i in 0..4u64 {
        let mut v = [0.0; 4];
        v[i as usize] = 1.0;
        sc.insert(&s, &v, i).unwrap();
    }
    assert_eq!(sc.stats().entries, 3);
    assert_eq!(sc.lookup(&s, &[1.0, 0.0, 0.0, 0.0]).unwrap(), None);
    assert_eq!(
        sc.lookup(&s, &[0.0, 0.0, 0.0, 1.0]).unwrap().unwrap().value,
        3
    );
    // Bad input is an error, never a panic.
    assert!(matches!(
        sc.insert(&s, &[1.0, 0.0], 9),
        Err(CacheError::InvalidVector(_))
    ));
    assert!(matches!(
        sc.lookup(&s, &[0.0; 4]),
        Err(CacheError::InvalidVector(_))
    ));
    assert!(matches!(
        sc.lookup(&s, &[f32::NAN, 0.0, 0.0, 0.0]),
        Err(CacheError::InvalidVector(_))
    ));
    let mut bad = SemanticConfig::new(4);
    bad.threshold = 1.5;
    assert!(SemanticCache::<u64>::new(bad).is_err());
}

#[test]
fn semantic_cache_isolates_tenants() {
    let sc: SemanticCache<String> = SemanticCache::new(SemanticConfig::new(4)).unwrap();
    let a = Scope::tenant("a");
    let b = Scope::tenant("b");
    sc.insert(&a, &[1.0, 0.0, 0.0, 0.0], "secret of a".into())
        .unwrap();
    assert_eq!(sc.lookup(&b, &[1.0, 0.0, 0.0, 0.0]).unwrap(), None);
    assert_eq!(
        sc.lookup(&a.clone().with_user("u"), &[1.0, 0.0, 0.0, 0.0])
            .unwrap(),
        None
    );
    assert!(sc.lookup(&a, &[1.0, 0.0, 0.0, 0.0]).unwrap().is_some());
    sc.clear_scope(&a);
    assert_eq!(sc.lookup(&a, &[1.0, 0.0, 0.0, 0.0]).unwrap(), None);
}

/// A config whose partitions move to HNSW beyond `exact` entries.
fn hnsw_cfg(dim: usize, exact: usize, max: usize) -> SemanticConfig {
    let mut cfg = SemanticConfig::new(dim);
    cfg.exact_max_entries = exact;
    cfg.max_entries_per_scope = max;
    cfg
}

/// `n` random vectors with zeros on e0 and e1, so they are orthogonal to
/// every `at_angle` vector and never compete with them.
fn fillers(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut v: Vec<f32> = (0..dim).map(|_| r.random::<f32>() - 0.5).collect();
            v[0] = 0.0;
            v[1] = 0.0;
            v
        })
        .collect()
}

#[test]
fn semantic_hnsw_partition_threshold_and_switch() {
    let sc: SemanticCache<String> = SemanticCache::new(hnsw_cfg(8, 16, 1000)).unwrap();
    let s = Scope::tenant("a");
    sc.insert(&s, &at_angle(0.2, 8), "near".into()).unwrap();
    sc.insert(&s, &at_angle(-0.3, 8), "farther".into()).unwrap();
    assert_eq!(sc.stats().hnsw_partitions, 0);
    let items = fillers(200, 8, 11)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (v, format!("filler {i}")))
        .collect();
    sc.insert_many(&s, items).unwrap();
    let st = sc.stats();
    assert_eq!((st.entries, st.hnsw_partitions), (202, 1));
    // The same answers as the exact scan (see the exact-path test).
    let hit = sc.lookup(&s, &at_angle(0.0, 8)).unwrap().unwrap();
    assert_eq!(hit.value, "near");
    assert!((hit.similarity - 0.2f32.cos()).abs() < 1e-4, "{hit:?}");
    assert_eq!(
        sc.lookup(&s, &at_angle(-0.4, 8)).unwrap().unwrap().value,
        "farther"
    );
    assert_eq!(sc.lookup(&s, &at_angle(0.52, 8)).unwrap(), None);
    assert_eq!(
        sc.lookup(&s, &at_angle(0.51, 8)).unwrap().unwrap().value,
        "near"
    );
    // Fillers are found by their own vectors.
    let f = fillers(200, 8, 11);
    for i in [0usize, 57, 199] {
        let hit = sc.lookup(&s, &f[i]).unwrap().unwrap();
        assert_eq!(hit.value, format!("filler {i}"));
        assert!(hit.similarity > 0.999);
    }
    // Inserts after the switch go to the graph too.
    sc.insert(&s, &at_angle(1.5, 8), "late".into()).unwrap();
    assert_eq!(
        sc.lookup(&s, &at_angle(1.5, 8)).unwrap().unwrap().value,
        "late"
    );
    assert_eq!(sc.stats().entries, 203);
}

#[test]
fn semantic_hnsw_isolates_tenants() {
    let sc: SemanticCache<String> = SemanticCache::new(hnsw_cfg(8, 8, 1000)).unwrap();
    let a = Scope::tenant("a");
    let b = Scope::tenant("b");
    for (scope, name, seed) in [(&a, "a", 1u64), (&b, "b", 2)] {
        let items = fillers(100, 8, seed)
            .into_iter()
            .map(|v| (v, format!("{name} filler")))
            .collect();
        sc.insert_many(scope, items).unwrap();
    }
    sc.insert(&a, &at_angle(0.0, 8), "secret of a".into())
        .unwrap();
    assert_eq!(sc.stats().hnsw_partitions, 2);
    // b's graph holds no vector near a's secret: b misses, never sees it.
    assert_eq!(sc.lookup(&b, &at_angle(0.0, 8)).unwrap(), None);
    // Nor does a scope of the same tenant with a user, or another version.
    assert_eq!(
        sc.lookup(&a.clone().with_user("u"), &at_angle(0.0, 8))
            .unwrap(),
        None
    );
    assert_eq!(
        sc.lookup(&a.clone().with_data_version(2), &at_angle(0.0, 8))
            .unwrap(),
        None
    );
    // b's own entries are b's, even when queried with a's vectors.
    for v in fillers(100, 8, 1).iter().take(10) {
        if let Some(h) = sc.lookup(&b, v).unwrap() {
            assert_eq!(h.value, "b filler");
        }
    }
    assert_eq!(
        sc.lookup(&a, &at_angle(0.0, 8)).unwrap().unwrap().value,
        "secret of a"
    );
    sc.clear_scope(&a);
    assert_eq!(sc.lookup(&a, &at_angle(0.0, 8)).unwrap(), None);
    assert_eq!(sc.stats().hnsw_partitions, 1);
}

#[test]
fn semantic_hnsw_ttl_and_cleanup() {
    let (c, clk) = clock();
    let mut cfg = hnsw_cfg(8, 8, 1000);
    cfg.ttl = Some(Duration::from_secs(60));
    let sc: SemanticCache<String> = SemanticCache::with_clock(cfg, clk).unwrap();
    let s = Scope::tenant("a");
    let items = fillers(100, 8, 5)
        .into_iter()
        .map(|v| (v, "old".to_string()))
        .collect();
    sc.insert_many(&s, items).unwrap();
    sc.insert(&s, &at_angle(0.0, 8), "early".into()).unwrap();
    c.advance(Duration::from_secs(40));
    sc.insert(&s, &at_angle(0.1, 8), "later".into()).unwrap();
    assert_eq!(
        sc.lookup(&s, &at_angle(0.0, 8)).unwrap().unwrap().value,
        "early"
    );
    c.advance(Duration::from_secs(30));
    // "early" expired: the lookup skips it, finds "later" (cos 0.995) and
    // drops the expired candidate it met.
    let hit = sc.lookup(&s, &at_angle(0.0, 8)).unwrap().unwrap();
    assert_eq!(hit.value, "later");
    assert!(sc.stats().entries <= 101);
    // Cleanup removes the remaining expired fillers, not "later".
    let left_before = sc.stats().entries;
    let removed = sc.cleanup();
    assert_eq!(removed as u64, left_before - 1);
    assert_eq!(sc.stats().entries, 1);
    assert_eq!(
        sc.lookup(&s, &at_angle(0.0, 8)).unwrap().unwrap().value,
        "later"
    );
    c.advance(Duration::from_secs(60));
    assert_eq!(sc.cleanup(), 1);
    let st = sc.stats();
    assert_eq!((st.entries, st.hnsw_partitions), (0, 0));
}

#[test]
fn semantic_hnsw_capacity_deletes_and_compaction() {
    let dim = 16;
    let sc: SemanticCache<u64> = SemanticCache::new(hnsw_cfg(dim, 8, 50)).unwrap();
    let s = Scope::tenant("a");
    let mut r = rand::rngs::StdRng::seed_from_u64(9);
    let vs: Vec<Vec<f32>> = (0..300)
        .map(|_| (0..dim).map(|_| r.random::<f32>() - 0.5).collect())
        .collect();
    // One at a time: every insert past 50 evicts (deletes) the oldest, so
    // tombstones pile up and the graph is compacted along the way.
    for (i, v) in vs.iter().enumerate() {
        sc.insert(&s, v, i as u64).unwrap();
    }
    let st = sc.stats();
    assert_eq!((st.entries, st.evictions, st.hnsw_partitions), (50, 250, 1));
    for (i, v) in vs.iter().enumerate() {
        let hit = sc.lookup(&s, v).unwrap();
        if i >= 250 {
            assert_eq!(hit.map(|h| h.value), Some(i as u64), "live entry {i}");
        } else if let Some(h) = hit {
            assert_ne!(h.value, i as u64, "evicted entry {i} came back");
        }
    }
    // insert_many with more than the capacity keeps only the last ones.
    let items: Vec<(Vec<f32>, u64)> = vs
        .iter()
        .take(120)
        .enumerate()
        .map(|(i, v)| (v.clone(), 1000 + i as u64))
        .collect();
    sc.insert_many(&s, items).unwrap();
    assert_eq!(sc.stats().entries, 50);
    assert_eq!(sc.lookup(&s, &vs[119]).unwrap().unwrap().value, 1119);
    if let Some(h) = sc.lookup(&s, &vs[0]).unwrap() {
        assert_ne!(h.value, 1000, "dropped batch item came back");
    }
    // A bad vector anywhere in a batch stores nothing.
    let bad = vec![(vs[0].clone(), 1u64), (vec![0.0; dim], 2)];
    assert!(matches!(
        sc.insert_many(&s, bad),
        Err(CacheError::InvalidVector(_))
    ));
    assert_eq!(sc.stats().entries, 50);
}

/// A minimal in-test recorder: counters and gauges by "name{sorted labels}".
#[derive(Default)]
struct TestRecorder {
    counters:
        std::sync::Mutex<std::collections::HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    gauges: std::sync::Mutex<std::collections::HashMap<String, Arc<::metrics::atomics::AtomicU64>>>,
}

fn render(key: &::metrics::Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl ::metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: ::metrics::KeyName,
        _: Option<::metrics::Unit>,
        _: ::metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: ::metrics::KeyName,
        _: Option<::metrics::Unit>,
        _: ::metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: ::metrics::KeyName,
        _: Option<::metrics::Unit>,
        _: ::metrics::SharedString,
    ) {
    }
    fn register_counter(
        &self,
        key: &::metrics::Key,
        _: &::metrics::Metadata<'_>,
    ) -> ::metrics::Counter {
        let c = self
            .counters
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        ::metrics::Counter::from_arc(c)
    }
    fn register_gauge(
        &self,
        key: &::metrics::Key,
        _: &::metrics::Metadata<'_>,
    ) -> ::metrics::Gauge {
        let g = self
            .gauges
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        ::metrics::Gauge::from_arc(g)
    }
    fn register_histogram(
        &self,
        _: &::metrics::Key,
        _: &::metrics::Metadata<'_>,
    ) -> ::metrics::Histogram {
        ::metrics::Histogram::noop()
    }
}

#[test]
fn metrics_use_the_agreed_names_and_labels() {
    let recorder = TestRecorder::default();
    let dir = tempfile::tempdir().unwrap();
    ::metrics::with_local_recorder(&recorder, || {
        let on_disk = TieredCacheBuilder::new(CacheKind::Embedding)
            .disk(disk(&dir))
            .build()
            .unwrap();
        let damaged = key(&Scope::tenant("a"), "damaged");
        on_disk
            .l2_for_tests()
            .unwrap()
            .put_raw(&damaged, b"not an entry");
        assert_eq!(on_disk.get::<String>(&damaged), None);

        let cache = TieredCacheBuilder::new(CacheKind::Response)
            .memory(mem(1 << 20))
            .build()
            .unwrap();
        let k = key(&Scope::tenant("a"), "q");
        assert_eq!(cache.get::<String>(&k), None);
        cache.put(&k, &"v".to_string()).unwrap();
        assert!(cache.get::<String>(&k).is_some());
        assert!(cache.get::<String>(&k).is_some());
    });
    let counters: std::collections::HashMap<String, u64> = recorder
        .counters
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.load(Ordering::SeqCst)))
        .collect();
    assert_eq!(
        counters.get("ragjet_cache_requests_total{cache=response,result=hit,tier=l1}"),
        Some(&2),
        "{counters:?}"
    );
    assert_eq!(
        counters.get("ragjet_cache_requests_total{cache=response,result=miss,tier=l1}"),
        Some(&1)
    );
    assert_eq!(
        counters.get("ragjet_cache_rejected_total{cache=embedding,reason=corrupt,tier=l2}"),
        Some(&1),
        "{counters:?}"
    );
    assert!(recorder
        .gauges
        .lock()
        .unwrap()
        .contains_key("ragjet_cache_bytes{cache=response,tier=l1}"));
}
