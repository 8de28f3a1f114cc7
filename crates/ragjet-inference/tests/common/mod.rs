//! A tiny BERT sentence model written by the tests themselves: random
//! weights from a fixed seed, saved as safetensors, with a WordPiece
//! tokenizer.json and sentence-transformers config files.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::{rngs::StdRng, Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

pub const HIDDEN: usize = 32;
pub const MAX_POSITIONS: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const INTERMEDIATE: usize = 64;

pub const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "red", "blue", "green",
    "house", "tree", "river", "stone", "light", "dark", "night", "day", "sun", "moon", "star",
    "##s", "##ing", "##ed", "hello", "world", ",", ".", "!", "?",
];

/// What the test model folder contains.
pub struct TinyModel {
    pub pooling: &'static str,
    pub normalize: bool,
    pub max_seq_length: Option<usize>,
    pub with_modules: bool,
}

impl Default for TinyModel {
    fn default() -> Self {
        Self {
            pooling: "mean",
            normalize: true,
            max_seq_length: Some(32),
            with_modules: true,
        }
    }
}

fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

pub fn vocab() -> HashMap<String, u32> {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    specials
        .iter()
        .chain(WORDS)
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect()
}

pub fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": MAX_POSITIONS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "vocab_size": vocab().len(),
    })
}

fn weights(seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, kind: &str| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match kind {
            "ones" => (0..n).map(|_| 1.0 + rng.random_range(-0.1..0.1)).collect(),
            "zeros" => (0..n).map(|_| rng.random_range(-0.05..0.05)).collect(),
            _ => (0..n).map(|_| rng.random_range(-0.3..0.3)).collect(),
        };
        out.push((name, shape, data));
    };
    let v = vocab().len();
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![v, HIDDEN],
        "w",
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POSITIONS, HIDDEN],
        "w",
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
        "w",
    );
    add("embeddings.LayerNorm.weight".into(), vec![HIDDEN], "ones");
    add("embeddings.LayerNorm.bias".into(), vec![HIDDEN], "zeros");
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for name in ["query", "key", "value"] {
            add(
                format!("{p}.attention.self.{name}.weight"),
                vec![HIDDEN, HIDDEN],
                "w",
            );
            add(
                format!("{p}.attention.self.{name}.bias"),
                vec![HIDDEN],
                "zeros",
            );
        }
        add(
            format!("{p}.attention.output.dense.weight"),
            vec![HIDDEN, HIDDEN],
            "w",
        );
        add(
            format!("{p}.attention.output.dense.bias"),
            vec![HIDDEN],
            "zeros",
        );
        add(
            format!("{p}.attention.output.LayerNorm.weight"),
            vec![HIDDEN],
            "ones",
        );
        add(
            format!("{p}.attention.output.LayerNorm.bias"),
            vec![HIDDEN],
            "zeros",
        );
        add(
            format!("{p}.intermediate.dense.weight"),
            vec![INTERMEDIATE, HIDDEN],
            "w",
        );
        add(
            format!("{p}.intermediate.dense.bias"),
            vec![INTERMEDIATE],
            "zeros",
        );
        add(
            format!("{p}.output.dense.weight"),
            vec![HIDDEN, INTERMEDIATE],
            "w",
        );
        add(format!("{p}.output.dense.bias"), vec![HIDDEN], "zeros");
        add(format!("{p}.output.LayerNorm.weight"), vec![HIDDEN], "ones");
        add(format!("{p}.output.LayerNorm.bias"), vec![HIDDEN], "zeros");
    }
    out
}

pub fn write_weights(path: &Path, seed: u64) {
    write_f32_safetensors(path, &weights(seed));
}

/// Saves `(name, shape, values)` tensors as an f32 safetensors file.
pub fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

pub fn write_tokenizer(path: &Path) {
    let mut words: Vec<(String, u32)> = vocab().into_iter().collect();
    words.sort_by_key(|(_, id)| *id);
    let vocab_txt = path.with_file_name("vocab.txt");
    let lines: Vec<String> = words.into_iter().map(|(w, _)| w).collect();
    std::fs::write(&vocab_txt, lines.join("\n") + "\n").unwrap();
    let wordpiece = WordPiece::from_file(vocab_txt.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::default()))
        .unwrap();
    tokenizer.with_pre_tokenizer(Some(BertPreTokenizer));
    tokenizer.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tokenizer.save(path, false).unwrap();
}

impl TinyModel {
    /// Writes the model folder under `root` and returns its path.
    pub fn write(&self, root: &Path) -> PathBuf {
        let dir = root.join("tiny-bert");
        std::fs::create_dir_all(&dir).unwrap();
        write_json(&dir.join("config.json"), config_json());
        write_weights(&dir.join("model.safetensors"), 20261125);
        write_tokenizer(&dir.join("tokenizer.json"));
        if self.with_modules {
            let mut modules = vec![
                serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
                serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
            ];
            if self.normalize {
                modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
            }
            write_json(&dir.join("modules.json"), serde_json::Value::Array(modules));
            write_json(
                &dir.join("1_Pooling/config.json"),
                serde_json::json!({
                    "word_embedding_dimension": HIDDEN,
                    "pooling_mode_cls_token": self.pooling == "cls",
                    "pooling_mode_mean_tokens": self.pooling == "mean",
                    "pooling_mode_max_tokens": self.pooling == "max",
                    "pooling_mode_mean_sqrt_len_tokens": false,
                }),
            );
        }
        if let Some(len) = self.max_seq_length {
            write_json(
                &dir.join("sentence_bert_config.json"),
                serde_json::json!({"max_seq_length": len, "do_lower_case": false}),
            );
        }
        dir
    }
}

/// Deterministic pseudo-sentences of `words` words each from the vocabulary.
pub fn sentence(seed: usize, words: usize) -> String {
    (0..words)
        .map(|i| WORDS[(seed * 7919 + i * 104729) % 24])
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cosine of two vectors of one length (panics otherwise: `zip` would
/// quietly compare a short output's prefix). NaN when either holds a NaN,
/// or is zero, so any `>=` bound on it fails.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// The larger of two differences, NaN if either is: `f32::max` returns
/// the other operand for a NaN, which made a NaN output look like a match.
pub fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

/// The smaller of two similarities, NaN if either is (see [`nan_max`]).
pub fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

/// Largest element-wise difference of two vectors of one length (panics
/// otherwise); NaN when either holds a NaN, so `diff <= tol` fails, and so
/// does `diff > tol`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, nan_max)
}

/// The lowest cosine between the rows of `got` and `want` (row-major,
/// `dim` wide) and its row: NaN (at the first such row) when a row's
/// cosine is NaN. Panics when the two differ in shape.
pub fn min_row_cosine(got: &[f32], want: &[f32], dim: usize) -> (f32, usize) {
    assert!(
        dim > 0 && got.len().is_multiple_of(dim),
        "{} values in rows of {dim}",
        got.len()
    );
    assert_eq!(got.len(), want.len(), "row counts differ (rows of {dim})");
    got.chunks_exact(dim)
        .zip(want.chunks_exact(dim))
        .map(|(a, b)| cosine(a, b))
        .enumerate()
        .fold((f32::INFINITY, 0), |(min, at), (i, c)| {
            if min.is_nan() {
                (min, at)
            } else if c.is_nan() || c < min {
                (c, i)
            } else {
                (min, at)
            }
        })
}

/// The repository's reference set for parity tests (`fixtures/` at the
/// root: 300 passages, 200 queries, sentence-transformers' embeddings of
/// them; see its README), or `$RAGJET_FIXTURES`, for a larger set of the
/// same layout.
pub fn fixtures() -> PathBuf {
    std::env::var_os("RAGJET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"))
}

/// The `text` of every line of a JSONL fixture.
pub fn read_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A float32 `.npy` fixture: its shape and values.
pub fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}
