//! The encoder against candle-transformers' stock `BertModel` on the tiny
//! test model: same weights, same tokens, same pooled vectors.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use common::{cosine, max_abs_diff, sentence, TinyModel};
use ragjet_inference::{Embedder, EmbedderOptions, Precision};

/// Mean-pooled, L2-normalised vector of `text` through the stock model.
fn stock_embedding(dir: &std::path::Path, text: &str) -> Vec<f32> {
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let device = Device::Cpu;
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).unwrap();
    let model = BertModel::load(vb, &config).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let enc = tokenizer.encode(text, true).unwrap();
    let ids = Tensor::new(enc.get_ids(), &device)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let types = ids.zeros_like().unwrap();
    let hidden = model.forward(&ids, &types, None).unwrap();
    let mean = hidden.mean(1).unwrap().squeeze(0).unwrap();
    let v: Vec<f32> = mean.to_vec1().unwrap();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

#[test]
fn encoder_matches_stock_candle_bert_for_every_activation() {
    for act in ["gelu", "gelu_new", "relu"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = TinyModel::default().write(tmp.path());
        let mut config = common::config_json();
        config["hidden_act"] = act.into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        // The stock model names the tanh approximation its own way.
        config["hidden_act"] = if act == "gelu_new" {
            "geluapproximate"
        } else {
            act
        }
        .into();
        let stock_dir = tmp.path().join("stock");
        std::fs::create_dir_all(&stock_dir).unwrap();
        for f in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(dir.join(f), stock_dir.join(f)).unwrap();
        }
        std::fs::write(stock_dir.join("config.json"), config.to_string()).unwrap();
        // Each text alone and all three packed into one batch.
        let texts: Vec<String> = [2, 9, 30].iter().map(|&n| sentence(n, n)).collect();
        let want: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| stock_embedding(&stock_dir, t))
            .collect();
        for precision in [Precision::F32, Precision::Bf16] {
            let embedder = Embedder::load_with(
                &dir,
                EmbedderOptions {
                    device: ragjet_inference::Device::Cpu,
                    precision: Some(precision),
                    ..Default::default()
                },
            )
            .unwrap();
            let batch = embedder.embed(&texts).unwrap();
            assert_eq!((batch.rows(), batch.dim()), (texts.len(), want[0].len()));
            for (i, (text, want)) in texts.iter().zip(&want).enumerate() {
                let alone = embedder.embed_one(text).unwrap();
                for (path, got) in [("batched", batch.row(i)), ("alone", &alone[..])] {
                    let what = format!("{act}, {precision}, text {i} {path}");
                    let diff = max_abs_diff(got, want);
                    if precision == Precision::F32 {
                        assert!(diff <= 1e-5, "{what}: differs by {diff}");
                    } else {
                        let cos = cosine(got, want);
                        assert!(cos >= 0.9999 && diff > 0.0, "{what}: cosine {cos}");
                    }
                }
            }
        }
    }
}
