//! `config.json` of a BERT checkpoint: the fields the forward passes use.
//!
//! Read here rather than through candle-transformers' `bert::Config`, so that
//! an 83k-line crate is not a dependency for nine numbers. The fields, their
//! names and their (absent) defaults are those of `bert::Config` (which the
//! reference test still loads as the stock model's config); fields the
//! forward pass does not read (dropout, initializer range, pad id) are
//! ignored.
//!
//! Sizes are checked at parse time: a zero or absurd size in a damaged or
//! hostile file would otherwise reach the kernels (an `intermediate_size`
//! of 0 made the bf16 packing split rows of width 0, a panic) or overflow
//! the shape arithmetic before any weight is read.

use serde::Deserialize;

/// The feed-forward activation, under the names `bert::Config` accepts and
/// Hugging Face's names for GELU's tanh approximation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum HiddenAct {
    /// Exact GELU (erf).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU's tanh approximation.
    #[serde(
        rename = "geluapproximate",
        alias = "gelu_new",
        alias = "gelu_pytorch_tanh",
        alias = "gelu_fast"
    )]
    GeluApproximate,
    /// `max(x, 0)`.
    #[serde(rename = "relu")]
    Relu,
}

/// What the forward passes need from `config.json`, validated.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

/// The file as written, before the checks.
#[derive(Deserialize)]
struct RawConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: HiddenAct,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
}

/// Upper bounds far above any BERT-family checkpoint (the largest have a
/// hidden size of 1,024–4,096, an intermediate size of 16k, vocabularies of
/// 250k), low enough that no shape product overflows.
const MAX_VOCAB: usize = 1 << 24;
const MAX_WIDTH: usize = 1 << 16;
const MAX_INTERMEDIATE: usize = 1 << 20;
const MAX_POSITIONS: usize = 1 << 20;
const MAX_COUNT: usize = 1 << 10;

impl TryFrom<RawConfig> for BertConfig {
    type Error = String;

    fn try_from(r: RawConfig) -> Result<Self, String> {
        #[rustfmt::skip]
        let checks = [
            ("vocab_size", r.vocab_size, 1, MAX_VOCAB),
            ("hidden_size", r.hidden_size, 1, MAX_WIDTH),
            ("num_hidden_layers", r.num_hidden_layers, 1, MAX_COUNT),
            ("num_attention_heads", r.num_attention_heads, 1, MAX_COUNT),
            ("intermediate_size", r.intermediate_size, 1, MAX_INTERMEDIATE),
            // Two at least: `[CLS]` and `[SEP]`.
            ("max_position_embeddings", r.max_position_embeddings, 2, MAX_POSITIONS),
            ("type_vocab_size", r.type_vocab_size, 1, MAX_COUNT),
        ];
        for (name, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(format!("{name} is {value}; it must be in {min}..={max}"));
            }
        }
        if !r.hidden_size.is_multiple_of(r.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                r.hidden_size, r.num_attention_heads
            ));
        }
        if !(r.layer_norm_eps.is_finite() && r.layer_norm_eps >= 0.0) {
            return Err(format!(
                "layer_norm_eps is {}; it must be a finite number ≥ 0",
                r.layer_norm_eps
            ));
        }
        Ok(Self {
            vocab_size: r.vocab_size,
            hidden_size: r.hidden_size,
            num_hidden_layers: r.num_hidden_layers,
            num_attention_heads: r.num_attention_heads,
            intermediate_size: r.intermediate_size,
            hidden_act: r.hidden_act,
            max_position_embeddings: r.max_position_embeddings,
            type_vocab_size: r.type_vocab_size,
            layer_norm_eps: r.layer_norm_eps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> serde_json::Value {
        serde_json::json!({
            "architectures": ["BertModel"],
            "attention_probs_dropout_prob": 0.1,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": 384,
            "initializer_range": 0.02,
            "intermediate_size": 1536,
            "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512,
            "model_type": "bert",
            "num_attention_heads": 12,
            "num_hidden_layers": 6,
            "pad_token_id": 0,
            "position_embedding_type": "absolute",
            "type_vocab_size": 2,
            "vocab_size": 30522
        })
    }

    fn parse(v: serde_json::Value) -> Result<BertConfig, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn a_real_config_parses() {
        let c = parse(minilm()).unwrap();
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (384, 1536, 6)
        );
        assert_eq!(c.hidden_act, HiddenAct::Gelu);
        for (name, act) in [
            ("relu", HiddenAct::Relu),
            ("geluapproximate", HiddenAct::GeluApproximate),
            ("gelu_new", HiddenAct::GeluApproximate),
        ] {
            let mut v = minilm();
            v["hidden_act"] = name.into();
            assert_eq!(parse(v).unwrap().hidden_act, act, "{name}");
        }
    }

    #[test]
    fn zero_absurd_and_missing_sizes_are_refused_by_name() {
        for (field, value) in [
            ("intermediate_size", serde_json::json!(0)),
            ("hidden_size", serde_json::json!(0)),
            ("num_attention_heads", serde_json::json!(0)),
            ("num_hidden_layers", serde_json::json!(0)),
            ("vocab_size", serde_json::json!(0)),
            ("type_vocab_size", serde_json::json!(0)),
            ("max_position_embeddings", serde_json::json!(1)),
            ("hidden_size", serde_json::json!(1u64 << 40)),
            ("vocab_size", serde_json::json!(u64::MAX)),
            ("intermediate_size", serde_json::json!(1u64 << 30)),
            ("num_attention_heads", serde_json::json!(5)),
            ("layer_norm_eps", serde_json::json!(-1.0)),
            ("hidden_act", serde_json::json!("swish")),
        ] {
            let mut v = minilm();
            v[field] = value.clone();
            let err = parse(v).expect_err(&format!("{field} = {value} parsed"));
            assert!(
                err.contains(field) || err.contains("swish"),
                "{field}: {err}"
            );
        }
        let mut v = minilm();
        v.as_object_mut().unwrap().remove("intermediate_size");
        assert!(parse(v).unwrap_err().contains("intermediate_size"));
    }
}
