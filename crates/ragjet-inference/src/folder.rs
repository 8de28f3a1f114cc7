//! Reading a sentence-transformers / Hugging Face model folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::BertConfig;
use crate::error::{invalid, InferenceError, Result};
use crate::pooling::{PoolingConfigFile, PoolingMode};

/// What a model folder says about how to embed, before any override.
#[derive(Debug, Clone)]
pub(crate) struct FolderSettings {
    pub bert: BertConfig,
    pub pooling: Vec<PoolingMode>,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub do_lower_case: bool,
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    /// Named prompts from `config_sentence_transformers.json` (empty when
    /// the file or its `prompts` is absent).
    pub prompts: BTreeMap<String, String>,
    /// The prompt sentence-transformers applies when a call names none;
    /// always a key of `prompts`.
    pub default_prompt_name: Option<String>,
    /// `include_prompt` of the Pooling module (default true). When false
    /// (INSTRUCTOR-style models) sentence-transformers leaves the prompt's
    /// tokens out of pooling, which the backends do not implement, so a
    /// prompted call is refused rather than answered differently.
    pub pooling_includes_prompt: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// The parts of `config_sentence_transformers.json` that change vectors.
/// `null` is accepted wherever sentence-transformers accepts it.
#[derive(Deserialize)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: Option<BTreeMap<String, String>>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// `include_prompt` of `1_Pooling/config.json`, read apart from the pooling
/// modes because only prompted calls need it.
#[derive(Deserialize)]
struct PoolingPromptFlag {
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

fn required(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(InferenceError::MissingFile { path })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| InferenceError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| invalid(path, e))
}

fn read_optional_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// Checks that `config.json` describes a BERT encoder that candle's
/// `BertModel` runs exactly, and parses it.
fn bert_config(path: &Path) -> Result<BertConfig> {
    let raw: serde_json::Value = read_json(path)?;
    let model_type = raw.get("model_type").and_then(|v| v.as_str());
    let architectures: Vec<&str> = raw
        .get("architectures")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let is_bert = match model_type {
        Some(t) => t == "bert",
        None => architectures.iter().any(|a| a.starts_with("Bert")),
    };
    if !is_bert {
        return Err(InferenceError::Unsupported(format!(
            "architecture {} (model_type {:?}); only BERT-family encoders (MiniLM, BGE, E5) are supported",
            architectures.join(", "),
            model_type.unwrap_or("missing")
        )));
    }
    let mut raw = raw;
    if let Some(act) = raw.get("hidden_act").and_then(|v| v.as_str()) {
        // Hugging Face's names for GELU's tanh approximation; candle's
        // config calls it `geluapproximate`.
        let canonical = match act {
            "gelu" | "relu" => act.to_owned(),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => "geluapproximate".to_owned(),
            _ => {
                return Err(InferenceError::Unsupported(format!(
                    "hidden activation {act:?}"
                )))
            }
        };
        raw["hidden_act"] = canonical.into();
    }
    if let Some(pos) = raw.get("position_embedding_type").and_then(|v| v.as_str()) {
        if pos != "absolute" {
            return Err(InferenceError::Unsupported(format!(
                "position embedding type {pos:?}"
            )));
        }
    }
    let config: BertConfig = serde_json::from_value(raw).map_err(|e| invalid(path, e))?;
    if config.hidden_size == 0
        || config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(invalid(
            path,
            "hidden_size must be a positive multiple of num_attention_heads",
        ));
    }
    Ok(config)
}

impl FolderSettings {
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(InferenceError::ModelNotFound(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        let bert = bert_config(&required(dir, "config.json")?)?;
        let weights = required(dir, "model.safetensors")?;
        let tokenizer = required(dir, "tokenizer.json")?;

        // Without modules.json the folder is a plain Hugging Face model:
        // mean pooling and no normalisation, as sentence-transformers assumes.
        let mut pooling = vec![PoolingMode::Mean];
        let mut normalize = false;
        let mut pooling_includes_prompt = true;
        let modules_path = dir.join("modules.json");
        if let Some(modules) = read_optional_json::<Vec<ModuleEntry>>(&modules_path)? {
            for module in modules {
                let kind = module.kind.rsplit('.').next().unwrap_or_default();
                match kind {
                    "Transformer" if module.path.is_empty() => {}
                    "Pooling" => {
                        let path = dir.join(&module.path).join("config.json");
                        let cfg: PoolingConfigFile = read_json(&path)?;
                        pooling = cfg.modes().map_err(InferenceError::Unsupported)?;
                        let flag: PoolingPromptFlag = read_json(&path)?;
                        pooling_includes_prompt = flag.include_prompt;
                    }
                    "Normalize" => normalize = true,
                    _ => {
                        return Err(InferenceError::Unsupported(format!(
                            "sentence-transformers module {} at {:?} in {}",
                            module.kind,
                            module.path,
                            modules_path.display()
                        )))
                    }
                }
            }
        }

        let sbert: Option<SentenceBertConfig> =
            read_optional_json(&dir.join("sentence_bert_config.json"))?;
        let (prompts, default_prompt_name) =
            read_prompts(&dir.join("config_sentence_transformers.json"))?;
        let max_positions = bert.max_position_embeddings;
        let max_seq_length = sbert
            .as_ref()
            .and_then(|s| s.max_seq_length)
            .unwrap_or(max_positions)
            .min(max_positions);
        Ok(Self {
            bert,
            pooling,
            normalize,
            max_seq_length,
            do_lower_case: sbert.is_some_and(|s| s.do_lower_case),
            weights,
            tokenizer,
            prompts,
            default_prompt_name,
            pooling_includes_prompt,
        })
    }
}

/// Reads the named prompts and the default prompt's name, as
/// sentence-transformers' `_load_sbert_model` does. A default naming no
/// prompt is refused here, where sentence-transformers' constructor refuses
/// it too, rather than on the first `embed`.
fn read_prompts(path: &Path) -> Result<(BTreeMap<String, String>, Option<String>)> {
    let Some(config) = read_optional_json::<SentenceTransformersConfig>(path)? else {
        return Ok((BTreeMap::new(), None));
    };
    let prompts = config.prompts.unwrap_or_default();
    if let Some(name) = &config.default_prompt_name {
        if !prompts.contains_key(name) {
            let names: Vec<&String> = prompts.keys().collect();
            return Err(invalid(
                path,
                format!("default_prompt_name {name:?} is not one of its prompts {names:?}"),
            ));
        }
    }
    Ok((prompts, config.default_prompt_name))
}
