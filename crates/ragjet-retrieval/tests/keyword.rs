use ragjet_retrieval::bm25::tokenize;
use ragjet_retrieval::{
    alpha_fusion, mmr, reciprocal_rank_fusion, Bm25Index, Bm25Params, Hit, Metric,
};

fn hit(id: &str, score: f32) -> Hit {
    Hit {
        id: id.to_string(),
        score,
    }
}

#[test]
fn tokenizer_uses_unicode_word_boundaries_and_lowercases() {
    assert_eq!(
        tokenize("Hello, WORLD! Don't stop."),
        vec!["hello", "world", "don't", "stop"]
    );
    assert_eq!(
        tokenize("Straße café—naïve"),
        vec!["straße", "café", "naïve"]
    );
    assert!(tokenize("  ... !!").is_empty());
}

#[test]
fn bm25_scores_match_hand_computation() {
    let mut idx = Bm25Index::new(Bm25Params::default()).unwrap();
    idx.upsert("a", "rust is fast").unwrap();
    idx.upsert("b", "python is slow slow slow").unwrap();
    idx.upsert("c", "rust rust memory safety").unwrap();
    let hits = idx.search("Rust", 10);
    // N = 3, df(rust) = 2, avgdl = (3 + 5 + 4) / 3 = 4.
    let idf = (1.0f32 + (3.0 - 2.0 + 0.5) / (2.0 + 0.5)).ln();
    let bm = |tf: f32, dl: f32| idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / 4.0));
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].id, "c");
    assert!((hits[0].score - bm(2.0, 4.0)).abs() < 1e-6);
    assert_eq!(hits[1].id, "a");
    assert!((hits[1].score - bm(1.0, 3.0)).abs() < 1e-6);
    // Unknown words and k = 0 give nothing.
    assert!(idx.search("haskell", 5).is_empty());
    assert!(idx.search("rust", 0).is_empty());
}

#[test]
fn bm25_upsert_replaces_and_delete_removes() {
    let mut idx = Bm25Index::new(Bm25Params { k1: 1.5, b: 0.5 }).unwrap();
    idx.upsert("a", "alpha beta").unwrap();
    idx.upsert("b", "gamma").unwrap();
    idx.upsert("a", "gamma delta").unwrap();
    assert_eq!(idx.len(), 2);
    assert!(idx.search("alpha", 5).is_empty());
    assert_eq!(idx.search("gamma", 5).len(), 2);
    assert!(idx.delete("b"));
    assert!(!idx.delete("b"));
    let ids: Vec<String> = idx.search("gamma", 5).into_iter().map(|h| h.id).collect();
    assert_eq!(ids, vec!["a"]);
    assert!(Bm25Index::new(Bm25Params { k1: -1.0, b: 0.5 }).is_err());
    assert!(Bm25Index::new(Bm25Params { k1: 1.0, b: 1.5 }).is_err());
}

#[test]
fn reciprocal_rank_fusion_rewards_agreement() {
    let v = vec![hit("a", 0.9), hit("b", 0.8), hit("c", 0.1)];
    let k = vec![hit("b", 12.0), hit("c", 3.0)];
    let fused = reciprocal_rank_fusion(&[&v, &k], 60.0, 10);
    let ids: Vec<&str> = fused.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, vec!["b", "c", "a"]);
    assert!((fused[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
    assert_eq!(reciprocal_rank_fusion(&[&v, &k], 60.0, 1).len(), 1);
}

#[test]
fn alpha_fusion_endpoints_and_midpoint() {
    let v = vec![hit("a", 0.9), hit("b", 0.5), hit("c", 0.1)];
    let k = vec![hit("d", 10.0), hit("c", 5.0), hit("b", 0.0)];
    let ids = |h: Vec<Hit>| h.into_iter().map(|h| h.id).collect::<Vec<_>>();
    assert_eq!(
        ids(alpha_fusion(&v, &k, 1.0, 10).unwrap()),
        vec!["a", "b", "c"]
    );
    assert_eq!(
        ids(alpha_fusion(&v, &k, 0.0, 10).unwrap()),
        vec!["d", "c", "b"]
    );
    let mid = alpha_fusion(&v, &k, 0.5, 10).unwrap();
    // a: 0.5*1 + 0; b: 0.5*0.5 + 0; c: 0 + 0.5*0.5; d: 0 + 0.5*1.
    let score = |id: &str| mid.iter().find(|h| h.id == id).unwrap().score;
    assert!((score("a") - 0.5).abs() < 1e-6 && (score("d") - 0.5).abs() < 1e-6);
    assert!((score("b") - 0.25).abs() < 1e-6 && (score("c") - 0.25).abs() < 1e-6);
    assert!(alpha_fusion(&v, &k, 1.5, 10).is_err());
}

#[test]
fn mmr_trades_relevance_for_diversity() {
    let q = vec![1.0, 0.0];
    let c = vec![vec![1.0, 0.0], vec![0.99, 0.01], vec![0.7, 0.7]];
    assert_eq!(mmr(&q, &c, 1.0, 3, Metric::Cosine).unwrap(), vec![0, 1, 2]);
    // After 0, candidate 1 is nearly a duplicate: 0.3*1 - 0.7*1 < 0.3*0.71 - 0.7*0.71.
    assert_eq!(mmr(&q, &c, 0.3, 2, Metric::Cosine).unwrap(), vec![0, 2]);
    assert_eq!(mmr(&q, &c, 0.5, 10, Metric::Cosine).unwrap().len(), 3);
    assert!(mmr(&q, &c, 0.5, 0, Metric::Cosine).unwrap().is_empty());
    assert!(mmr(&q, &c, 2.0, 1, Metric::Cosine).is_err());
    assert!(mmr(&q, &[vec![1.0]], 0.5, 1, Metric::Cosine).is_err());
}

#[test]
fn bm25_save_load_round_trip_and_corruption() {
    let mut idx = Bm25Index::new(Bm25Params { k1: 1.4, b: 0.6 }).unwrap();
    for (i, t) in [
        "the quick brown fox",
        "lazy dog sleeps",
        "quick quick dog",
        "brown bread",
    ]
    .iter()
    .enumerate()
    {
        idx.upsert(&format!("d{i}"), t).unwrap();
    }
    idx.delete("d1");
    let tmp = tempfile::tempdir().unwrap();
    idx.save(tmp.path()).unwrap();
    let back = Bm25Index::load(tmp.path()).unwrap();
    assert_eq!(back.len(), 3);
    for q in ["quick", "brown dog", "lazy", "bread fox"] {
        let a: Vec<(String, u32)> = idx
            .search(q, 10)
            .into_iter()
            .map(|h| (h.id, h.score.to_bits()))
            .collect();
        let b: Vec<(String, u32)> = back
            .search(q, 10)
            .into_iter()
            .map(|h| (h.id, h.score.to_bits()))
            .collect();
        let (mut a, mut b) = (a, b);
        // Slots may be renumbered on load: compare as sets of (id, score).
        a.sort();
        b.sort();
        assert_eq!(a, b, "{q}");
    }
    let gen = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    let f = gen.join("bm25.json");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 3]).unwrap();
    assert!(Bm25Index::load(tmp.path()).is_err());
}
