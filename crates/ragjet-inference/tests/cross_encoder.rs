//! `CrossEncoder` against a tiny random `BertForSequenceClassification`
//! and the scores Hugging Face transformers computed with it
//! (`tests/fixtures/tiny-cross-encoder`, made by
//! `scripts/make_tiny_cross_encoder.py`).

mod common;

use std::path::{Path, PathBuf};

use ragjet_inference::{
    BackendKind, CrossEncoder, CrossEncoderOptions, Device, InferenceError, Precision,
    ScoreActivation,
};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;

use common::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cross-encoder")
}

struct Reference {
    max_length: Option<usize>,
    pairs: Vec<(String, String)>,
    tokens: Vec<usize>,
    logits: Vec<f32>,
    sigmoids: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let rows = r["pairs"].as_array().unwrap();
            let f = |row: &Value, key: &str| row[key].as_f64().unwrap() as f32;
            Reference {
                max_length: r["max_length"].as_u64().map(|n| n as usize),
                pairs: rows
                    .iter()
                    .map(|p| {
                        (
                            p["query"].as_str().unwrap().to_owned(),
                            p["passage"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect(),
                tokens: rows
                    .iter()
                    .map(|p| p["input_ids"].as_array().unwrap().len())
                    .collect(),
                logits: rows.iter().map(|p| f(p, "logit")).collect(),
                sigmoids: rows.iter().map(|p| f(p, "sigmoid")).collect(),
            }
        })
        .collect()
}

fn f32_options() -> CrossEncoderOptions {
    CrossEncoderOptions {
        device: Device::Cpu,
        precision: Some(Precision::F32),
        ..Default::default()
    }
}

fn load(dir: &Path, options: CrossEncoderOptions) -> CrossEncoder {
    CrossEncoder::load_with(dir, options).expect("tiny cross-encoder loads")
}

/// A copy of the fixture in a temporary folder, for tests that alter it.
fn copy_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

/// Rewrites the weights: every tensor goes through `edit(name, shape, values)`,
/// which returns the new name, shape and values (or `None` to drop it).
fn edit_weights(
    dir: &Path,
    edit: impl Fn(&str, &[usize], Vec<f32>) -> Option<(String, Vec<usize>, Vec<f32>)>,
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(t) = edit(&name, view.shape(), values) {
            tensors.push(t);
        }
    }
    common::write_f32_safetensors(&path, &tensors);
}

#[test]
fn the_fixture_can_tell_right_from_wrong() {
    // Scores that barely vary, or no truncated pair, would let a broken
    // encoder or tokeniser pass the comparisons below.
    let refs = references();
    assert_eq!(refs.len(), 2);
    for r in &refs {
        let mean = r.logits.iter().sum::<f32>() / r.logits.len() as f32;
        let var = r.logits.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / r.logits.len() as f32;
        assert!(var.sqrt() > 0.3, "logit spread {}", var.sqrt());
        assert!(r.pairs.len() >= 20);
    }
    assert_eq!(refs[0].max_length, None);
    assert_eq!(refs[1].max_length, Some(20));
    assert!(refs[0].tokens.iter().filter(|&&n| n == 64).count() >= 3);
    assert!(refs[1].tokens.iter().filter(|&&n| n == 20).count() >= 5);
    assert!(
        std::fs::metadata(fixture().join("model.safetensors"))
            .unwrap()
            .len()
            < 1 << 20
    );
}

#[test]
fn scores_match_transformers_in_f32_on_both_backends() {
    for backend in [BackendKind::Packed, BackendKind::Padded] {
        for r in references() {
            let options = CrossEncoderOptions {
                max_length: r.max_length,
                backend: Some(backend),
                ..f32_options()
            };
            let sigmoid = load(&fixture(), options.clone());
            assert_eq!(sigmoid.activation(), ScoreActivation::Sigmoid);
            assert_eq!(sigmoid.max_length(), r.max_length.unwrap_or(64));
            let scores = sigmoid.predict(&r.pairs).unwrap();
            let d = max_abs_diff(&scores, &r.sigmoids);
            assert!(
                d <= TOLERANCE,
                "{backend} sigmoid, max_length {:?}: {d}",
                r.max_length
            );

            let raw = load(
                &fixture(),
                CrossEncoderOptions {
                    activation: Some(ScoreActivation::Identity),
                    ..options
                },
            );
            let logits = raw.predict(&r.pairs).unwrap();
            let d = max_abs_diff(&logits, &r.logits);
            eprintln!(
                "{backend}, max_length {:?}: logits within {d}",
                r.max_length
            );
            assert!(
                d <= TOLERANCE,
                "{backend} logits, max_length {:?}: {d}",
                r.max_length
            );
        }
    }
}

#[test]
fn batch_composition_does_not_change_scores() {
    let r = &references()[0];
    let whole = load(&fixture(), f32_options()).predict(&r.pairs).unwrap();
    for (rows, tokens, threads) in [(1, 16384, 2), (3, 40, 1), (32, 64, 2)] {
        let e = load(
            &fixture(),
            CrossEncoderOptions {
                max_batch_size: rows,
                max_batch_tokens: tokens,
                num_threads: Some(threads),
                ..f32_options()
            },
        );
        let d = max_abs_diff(&e.predict(&r.pairs).unwrap(), &whole);
        assert!(d <= 1e-5, "rows {rows} tokens {tokens}: {d}");
    }
}

#[test]
fn default_precision_stays_close_to_f32() {
    // bf16 products where the CPU has them: close to, not equal to, f32.
    let r = &references()[0];
    let e = load(
        &fixture(),
        CrossEncoderOptions {
            device: Device::Cpu,
            activation: Some(ScoreActivation::Identity),
            ..Default::default()
        },
    );
    assert_eq!(e.precision(), Precision::cpu_default());
    let d = max_abs_diff(&e.predict(&r.pairs).unwrap(), &r.logits);
    eprintln!("{}: logits within {d} of transformers", e.precision());
    assert!(d <= 0.1, "{} logits differ by {d}", e.precision());
}

#[test]
fn rerank_sorts_by_score_and_keeps_top_n() {
    let e = load(&fixture(), f32_options());
    let query = "what is the capital of france";
    let passages = [
        "the cat sat on the mat",
        "paris is the capital of france",
        "berlin is the capital of germany",
        "",
        "the cat sat on the mat",
    ];
    let pairs: Vec<(&str, &str)> = passages.iter().map(|p| (query, *p)).collect();
    let scores = e.predict(&pairs).unwrap();
    let all = e.rerank(query, &passages, 10).unwrap();
    assert_eq!(all.len(), passages.len());
    for w in all.windows(2) {
        assert!(w[0].1 >= w[1].1);
        if w[0].1 == w[1].1 {
            assert!(w[0].0 < w[1].0, "ties keep input order");
        }
    }
    for &(i, s) in &all {
        assert_eq!(s, scores[i]);
    }
    // Identical passages score identically and keep their order.
    let first = all.iter().position(|&(i, _)| i == 0).unwrap();
    let second = all.iter().position(|&(i, _)| i == 4).unwrap();
    assert!(first < second);
    assert_eq!(e.rerank(query, &passages, 2).unwrap(), all[..2].to_vec());
    assert!(e.rerank(query, &passages, 0).unwrap().is_empty());
    assert!(e.rerank(query, &[] as &[&str], 5).unwrap().is_empty());
    assert!(e.predict(&[] as &[(&str, &str)]).unwrap().is_empty());
}

#[test]
fn query_and_passage_are_different_segments() {
    // Swapping the two sides changes the segment ids every token gets.
    let e = load(&fixture(), f32_options());
    let a = e
        .predict(&[("red green blue", "red, green and blue light")])
        .unwrap();
    let b = e
        .predict(&[("red, green and blue light", "red green blue")])
        .unwrap();
    assert!((a[0] - b[0]).abs() > 1e-3, "{a:?} {b:?}");
}

#[test]
fn weights_without_the_bert_prefix_load_the_same() {
    let (_tmp, dir) = copy_fixture();
    edit_weights(&dir, |name, shape, values| {
        Some((
            name.strip_prefix("bert.").unwrap_or(name).to_owned(),
            shape.to_vec(),
            values,
        ))
    });
    let r = &references()[0];
    let scores = load(&dir, f32_options()).predict(&r.pairs).unwrap();
    assert!(max_abs_diff(&scores, &r.sigmoids) <= TOLERANCE);
}

#[test]
fn several_labels_give_one_score_each() {
    // Label rows w, 2w, -w (biases likewise) must give logits s, 2s, -s
    // for the fixture's one-label logit s.
    let (_tmp, dir) = copy_fixture();
    edit_weights(&dir, |name, shape, values| match name {
        "classifier.weight" | "classifier.bias" => {
            let mut out = values.clone();
            out.extend(values.iter().map(|x| 2.0 * x));
            out.extend(values.iter().map(|x| -x));
            let mut shape = shape.to_vec();
            shape[0] = 3;
            Some((name.to_owned(), shape, out))
        }
        _ => Some((name.to_owned(), shape.to_vec(), values)),
    });
    edit_config(&dir, |c| {
        c["id2label"] = serde_json::json!({"0": "relevant", "1": "double", "2": "negated"});
        c["label2id"] = serde_json::json!({"relevant": 0, "double": 1, "negated": 2});
    });
    let e = load(&dir, f32_options());
    assert_eq!(e.num_labels(), 3);
    assert_eq!(e.labels(), ["relevant", "double", "negated"]);
    assert_eq!(e.activation(), ScoreActivation::Identity);
    let r = &references()[0];
    let rows = e.predict_labels(&r.pairs).unwrap();
    for (row, &s) in rows.iter().zip(&r.logits) {
        assert_eq!(row.len(), 3);
        assert!((row[0] - s).abs() <= TOLERANCE);
        assert!((row[1] - 2.0 * s).abs() <= 2.0 * TOLERANCE);
        assert!((row[2] + s).abs() <= TOLERANCE);
    }
    assert!(matches!(
        e.predict(&r.pairs),
        Err(InferenceError::InvalidOption(_))
    ));
    assert!(e.rerank("q", &["p"], 1).is_err());
}

#[test]
fn activation_named_by_the_folder_is_used() {
    let (_tmp, dir) = copy_fixture();
    edit_config(&dir, |c| {
        c["sentence_transformers"] =
            serde_json::json!({"activation_fn": "torch.nn.modules.linear.Identity"});
    });
    let e = load(&dir, f32_options());
    assert_eq!(e.activation(), ScoreActivation::Identity);
    let r = &references()[0];
    assert!(max_abs_diff(&e.predict(&r.pairs).unwrap(), &r.logits) <= TOLERANCE);

    edit_config(&dir, |c| {
        c.as_object_mut().unwrap().remove("sentence_transformers");
        c["sbert_ce_default_activation_function"] = "torch.nn.modules.activation.Tanh".into();
    });
    let err = CrossEncoder::load_with(&dir, f32_options()).unwrap_err();
    assert!(
        matches!(err, InferenceError::Unsupported(ref m) if m.contains("Tanh")),
        "{err}"
    );
    // An explicit option wins over the folder.
    let e = load(
        &dir,
        CrossEncoderOptions {
            activation: Some(ScoreActivation::Sigmoid),
            ..f32_options()
        },
    );
    assert_eq!(e.activation(), ScoreActivation::Sigmoid);
}

#[test]
fn roberta_rerankers_are_refused_clearly() {
    let (_tmp, dir) = copy_fixture();
    edit_config(&dir, |c| {
        c["model_type"] = "xlm-roberta".into();
        c["architectures"] = serde_json::json!(["XLMRobertaForSequenceClassification"]);
    });
    let err = CrossEncoder::load(&dir).unwrap_err();
    assert!(
        matches!(err, InferenceError::Unsupported(ref m) if m.contains("bge-reranker")),
        "{err}"
    );
}

#[test]
fn broken_folders_are_errors_not_panics() {
    // No classifier: an embedding model, not a cross-encoder.
    let (_tmp, dir) = copy_fixture();
    edit_weights(&dir, |name, shape, values| {
        (!name.starts_with("classifier")).then(|| (name.to_owned(), shape.to_vec(), values))
    });
    let err = CrossEncoder::load(&dir).unwrap_err();
    assert!(
        matches!(err, InferenceError::InvalidFile { ref reason, .. } if reason.contains("classifier")),
        "{err}"
    );

    // No pooler.
    let (_tmp, dir) = copy_fixture();
    edit_weights(&dir, |name, shape, values| {
        (!name.contains("pooler")).then(|| (name.to_owned(), shape.to_vec(), values))
    });
    let err = CrossEncoder::load(&dir).unwrap_err();
    assert!(
        matches!(err, InferenceError::InvalidFile { ref reason, .. } if reason.contains("pooler")),
        "{err}"
    );

    // config.json disagrees with the classifier's shape.
    let (_tmp, dir) = copy_fixture();
    edit_config(&dir, |c| c["num_labels"] = 2.into());
    let err = CrossEncoder::load(&dir).unwrap_err();
    assert!(matches!(err, InferenceError::InvalidFile { .. }), "{err}");

    // Missing tokenizer.
    let (_tmp, dir) = copy_fixture();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    assert!(matches!(
        CrossEncoder::load(&dir).unwrap_err(),
        InferenceError::MissingFile { .. }
    ));

    assert!(matches!(
        CrossEncoder::load(fixture().join("absent")).unwrap_err(),
        InferenceError::ModelNotFound(_)
    ));
}

#[test]
fn max_length_is_checked() {
    for bad in [2, 65] {
        let err = CrossEncoder::load_with(
            fixture(),
            CrossEncoderOptions {
                max_length: Some(bad),
                ..f32_options()
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, InferenceError::InvalidOption(_)),
            "{bad}: {err}"
        );
    }
    // The smallest length that holds a pair: both sides cut to nothing
    // or to one token, never a panic.
    let e = load(
        &fixture(),
        CrossEncoderOptions {
            max_length: Some(4),
            ..f32_options()
        },
    );
    let long = "the capital city of the country ".repeat(50);
    let out = e.predict(&[(long.as_str(), long.as_str())]);
    match out {
        Ok(s) => assert!(s[0].is_finite()),
        Err(e) => assert!(matches!(e, InferenceError::Tokenizer(_)), "{e}"),
    }
}
