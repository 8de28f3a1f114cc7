//! Query/passage prompts read from `config_sentence_transformers.json` and
//! applied as sentence-transformers' `encode(prompt_name=…, prompt=…)` does:
//! the prompt is prepended to the text, so its tokens are truncated and pooled
//! with the text's.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{sentence, TinyModel};
use ragjet_inference::{EmbedCall, Embedder, EmbedderOptions, InferenceError, Prompt};

const QUERY: &str = "hello world , ";
const PASSAGE: &str = "the ";

fn write_st_config(dir: &Path, value: serde_json::Value) {
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        serde_json::to_string_pretty(&value).unwrap(),
    )
    .unwrap();
}

fn with_prompts(default: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = TinyModel::default().write(tmp.path());
    write_st_config(
        &dir,
        serde_json::json!({
            "__version__": {"sentence_transformers": "3.0.0"},
            "prompts": {"query": QUERY, "passage": PASSAGE},
            "default_prompt_name": default,
        }),
    );
    (tmp, dir)
}

fn texts() -> Vec<String> {
    (0..12).map(|i| sentence(i, 1 + i % 7)).collect()
}

fn prefixed(prefix: &str, texts: &[String]) -> Vec<String> {
    texts.iter().map(|t| format!("{prefix}{t}")).collect()
}

fn named(name: &str) -> EmbedCall<'_> {
    EmbedCall::default().prompt(Prompt::Named(name))
}

#[test]
fn prompts_come_from_the_folder() {
    let (_tmp, dir) = with_prompts(None);
    let embedder = Embedder::load(&dir).unwrap();
    let expected: BTreeMap<String, String> = [("passage", PASSAGE), ("query", QUERY)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(embedder.prompts(), &expected);
    assert_eq!(embedder.default_prompt_name(), None);
    assert_eq!(
        embedder.resolve_prompt(Prompt::Named("query")).unwrap(),
        Some(QUERY)
    );
    assert_eq!(embedder.resolve_prompt(Prompt::Default).unwrap(), None);
}

#[test]
fn a_named_prompt_embeds_as_the_prompt_plus_the_text() {
    let (_tmp, dir) = with_prompts(None);
    let embedder = Embedder::load(&dir).unwrap();
    let texts = texts();
    let query = embedder.embed_with(&texts, &named("query")).unwrap();
    assert_eq!(query, embedder.embed(&prefixed(QUERY, &texts)).unwrap());
    let passage = embedder.embed_with(&texts, &named("passage")).unwrap();
    assert_eq!(passage, embedder.embed(&prefixed(PASSAGE, &texts)).unwrap());
    let literal = EmbedCall::default().prompt(Prompt::Text(QUERY));
    assert_eq!(embedder.embed_with(&texts, &literal).unwrap(), query);
    // The prompt changes the vectors: its tokens are pooled with the text's.
    assert_ne!(query, embedder.embed(&texts).unwrap());
}

#[test]
fn the_default_prompt_applies_unless_a_call_says_otherwise() {
    let (_tmp, dir) = with_prompts(Some("query"));
    let embedder = Embedder::load(&dir).unwrap();
    assert_eq!(embedder.default_prompt_name(), Some("query"));
    let texts = texts();
    let none = EmbedCall::default().prompt(Prompt::None);
    let plain = embedder.embed_with(&texts, &none).unwrap();
    assert_eq!(
        embedder.embed(&texts).unwrap(),
        embedder
            .embed_with(&prefixed(QUERY, &texts), &none)
            .unwrap()
    );
    assert_ne!(embedder.embed(&texts).unwrap(), plain);
    assert_eq!(
        embedder.embed_with(&texts, &named("passage")).unwrap(),
        embedder
            .embed_with(&prefixed(PASSAGE, &texts), &none)
            .unwrap()
    );
    // An empty prompt is no prompt, as sentence-transformers' `prompt=""`.
    let empty = EmbedCall::default().prompt(Prompt::Text(""));
    assert_eq!(embedder.embed_with(&texts, &empty).unwrap(), plain);
}

#[test]
fn options_replace_the_folders_prompts() {
    let (_tmp, dir) = with_prompts(Some("query"));
    let prompts: BTreeMap<String, String> = [("search_query".to_owned(), "a ".to_owned())].into();
    let embedder = Embedder::load_with(
        &dir,
        EmbedderOptions {
            prompts: Some(prompts.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(embedder.prompts(), &prompts);
    assert_eq!(embedder.default_prompt_name(), None);
    let err = Embedder::load_with(
        &dir,
        EmbedderOptions {
            prompts: Some(prompts),
            default_prompt_name: Some("query".into()),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, InferenceError::InvalidOption(_)), "{err}");
}

#[test]
fn an_unknown_prompt_name_is_an_error_naming_the_known_ones() {
    let (_tmp, dir) = with_prompts(None);
    let embedder = Embedder::load(&dir).unwrap();
    let err = embedder
        .embed_with(&texts(), &named("document"))
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, InferenceError::InvalidOption(_)), "{message}");
    assert!(
        message.contains("\"document\"") && message.contains("\"query\""),
        "{message}"
    );
}

#[test]
fn a_call_can_set_its_own_batch_size() {
    let (_tmp, dir) = with_prompts(None);
    let embedder = Embedder::load(&dir).unwrap();
    let texts = texts();
    let mut batches = 0;
    embedder
        .embed_with_progress(&texts, |_| batches += 1)
        .unwrap();
    assert_eq!(
        batches, 1,
        "the default of 32 rows takes all 12 texts at once"
    );
    let small = EmbedCall::default().max_batch_size(5);
    let got = embedder.embed_with(&texts, &small).unwrap();
    let whole = embedder.embed(&texts).unwrap();
    for (a, b) in got.iter().zip(whole.iter()) {
        assert!(common::max_abs_diff(a, b) < 1e-5);
    }
    let zero = EmbedCall::default().max_batch_size(0);
    assert!(matches!(
        embedder.embed_with(&texts, &zero),
        Err(InferenceError::InvalidOption(_))
    ));
}

#[test]
fn malformed_prompt_configs_are_invalid_files() {
    let (_tmp, dir) = with_prompts(None);
    let bad = [
        serde_json::json!({"prompts": {"query": 3}}),
        serde_json::json!({"prompts": ["query: "]}),
        serde_json::json!({"prompts": {"query": "query: "}, "default_prompt_name": "passage"}),
    ];
    for value in bad {
        write_st_config(&dir, value.clone());
        let err = Embedder::load(&dir).unwrap_err();
        assert!(
            matches!(err, InferenceError::InvalidFile { .. }),
            "{value}: {err}"
        );
    }
    // `null` where sentence-transformers writes it, and no prompts at all, are fine.
    write_st_config(
        &dir,
        serde_json::json!({"prompts": null, "default_prompt_name": null}),
    );
    assert!(Embedder::load(&dir).unwrap().prompts().is_empty());
    std::fs::remove_file(dir.join("config_sentence_transformers.json")).unwrap();
    assert!(Embedder::load(&dir).unwrap().prompts().is_empty());
}

#[test]
fn pooling_that_excludes_the_prompt_is_refused_for_prompted_calls() {
    let (_tmp, dir) = with_prompts(None);
    let pooling = dir.join("1_Pooling/config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pooling).unwrap()).unwrap();
    config["include_prompt"] = false.into();
    std::fs::write(&pooling, config.to_string()).unwrap();
    let embedder = Embedder::load(&dir).unwrap();
    let texts = texts();
    embedder.embed(&texts).unwrap();
    let err = embedder.embed_with(&texts, &named("query")).unwrap_err();
    assert!(matches!(err, InferenceError::Unsupported(_)), "{err}");

    write_st_config(
        &dir,
        serde_json::json!({"prompts": {"query": QUERY}, "default_prompt_name": "query"}),
    );
    let err = Embedder::load(&dir).unwrap_err();
    assert!(matches!(err, InferenceError::Unsupported(_)), "{err}");
}
