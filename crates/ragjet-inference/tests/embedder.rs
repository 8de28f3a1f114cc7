//! Behaviour of `Embedder` on a tiny random BERT built by the tests.

mod common;

use common::{cosine, max_abs_diff, sentence, TinyModel, HIDDEN};
use ragjet_inference::{Embedder, EmbedderOptions, InferenceError, PoolingMode};

fn tiny(model: TinyModel) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model.write(tmp.path());
    (tmp, dir)
}

fn load(dir: &std::path::Path, options: EmbedderOptions) -> Embedder {
    Embedder::load_with(dir, options).expect("tiny model loads")
}

fn mixed_texts() -> Vec<String> {
    (0..40).map(|i| sentence(i, 1 + (i * 13) % 29)).collect()
}

#[test]
fn shapes_and_settings_come_from_the_folder() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.dim(), HIDDEN);
    assert_eq!(e.max_seq_length(), 32);
    assert_eq!(e.pooling(), &[PoolingMode::Mean]);
    assert!(e.normalize());
    let out = e.embed(&mixed_texts()).unwrap();
    assert_eq!(out.rows(), 40);
    assert_eq!(out.dim(), HIDDEN);
    assert_eq!(out.as_slice().len(), 40 * HIDDEN);
    assert!(out.as_slice().iter().all(|x| x.is_finite()));
}

#[test]
fn embedding_is_deterministic() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    let texts = mixed_texts();
    assert_eq!(e.embed(&texts).unwrap(), e.embed(&texts).unwrap());
}

#[test]
fn order_is_restored_and_batch_composition_does_not_matter() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let texts = mixed_texts();
    // Reference: every text alone, on one thread.
    let alone = load(
        &dir,
        EmbedderOptions {
            num_threads: Some(1),
            ..Default::default()
        },
    );
    let singles: Vec<Vec<f32>> = texts.iter().map(|t| alone.embed_one(t).unwrap()).collect();
    for (rows, tokens, threads) in [(32, 16384, 2), (3, 64, 2), (7, 100, 1), (1, 1, 2)] {
        let e = load(
            &dir,
            EmbedderOptions {
                num_threads: Some(threads),
                max_batch_size: rows,
                max_batch_tokens: tokens,
                ..Default::default()
            },
        );
        let batched = e.embed(&texts).unwrap();
        for (i, single) in singles.iter().enumerate() {
            let diff = max_abs_diff(batched.row(i), single);
            assert!(
                diff <= 1e-5,
                "text {i} differs by {diff} (batch {rows}/{tokens}, {threads} threads)"
            );
        }
    }
}

/// The packed CPU backend splits a batch of more tokens than one forward
/// pass takes (2,048) into passes of whole texts: every row still belongs to
/// its text, whichever pass it ran in.
#[test]
fn a_batch_over_several_forward_passes_keeps_each_text_its_own() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = load(
        &dir,
        EmbedderOptions {
            max_batch_size: 256,
            ..Default::default()
        },
    );
    let texts: Vec<String> = (0..200).map(|i| sentence(i, 20 + i % 40)).collect();
    let tokens: usize = texts.iter().map(|t| e.count_tokens(t).unwrap()).sum();
    assert!(
        tokens > 3 * 2048,
        "{tokens} tokens: fewer than three passes' worth"
    );
    let batched = e.embed(&texts).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let alone = e.embed_one(text).unwrap();
        let diff = max_abs_diff(batched.row(i), &alone);
        assert!(diff <= 1e-5, "text {i} differs by {diff}");
    }
}

/// Calls from several threads share the embedder's pool: a worker waiting
/// inside one call's parallel product runs jobs of the others meanwhile.
/// The feed-forward buffer was borrowed from a thread-local across such a
/// product, so a short call (which runs its products over the pool) let
/// another call's sublayer find it borrowed: "RefCell already borrowed".
#[test]
fn concurrent_calls_on_one_embedder_agree_with_calls_alone() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = load(
        &dir,
        EmbedderOptions {
            num_threads: Some(2),
            ..Default::default()
        },
    );
    // Short batches take the column-parallel path, long ones the blocks.
    let short: Vec<String> = (0..2).map(|i| sentence(i, 5)).collect();
    let long: Vec<String> = (0..40).map(|i| sentence(i, 30)).collect();
    let (want_short, want_long) = (e.embed(&short).unwrap(), e.embed(&long).unwrap());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (e, short, long) = (&e, &short, &long);
            let (want_short, want_long) = (&want_short, &want_long);
            scope.spawn(move || {
                for round in 0..40 {
                    if (t + round) % 3 == 0 {
                        assert_eq!(&e.embed(long).unwrap(), want_long);
                    } else {
                        assert_eq!(&e.embed(short).unwrap(), want_short);
                    }
                }
            });
        }
    });
}

#[test]
fn short_text_among_long_ones_equals_it_alone() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    let short = "the cat sat";
    let mut texts: Vec<String> = (0..10).map(|i| sentence(i, 25)).collect();
    texts.insert(4, short.to_owned());
    let together = e.embed(&texts).unwrap();
    let alone = e.embed_one(short).unwrap();
    assert!(max_abs_diff(together.row(4), &alone) <= 1e-5);
}

#[test]
fn normalisation_follows_the_folder_and_the_override() {
    let (_tmp, dir) = tiny(TinyModel {
        normalize: false,
        ..Default::default()
    });
    let raw = Embedder::load(&dir).unwrap();
    assert!(!raw.normalize());
    let v = raw.embed_one("hello world").unwrap();
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() > 1e-3,
        "unnormalised vector has norm {norm}"
    );

    let unit = load(
        &dir,
        EmbedderOptions {
            normalize: Some(true),
            ..Default::default()
        },
    );
    let u = unit.embed_one("hello world").unwrap();
    let unorm: f32 = u.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((unorm - 1.0).abs() < 1e-5);
    assert!(cosine(&u, &v) > 0.99999);
}

#[test]
fn pooling_modes_from_folder_and_options() {
    let texts = ["the red house", "a dog ran fast on the green stone"];
    let mut per_mode = Vec::new();
    for pooling in ["cls", "max", "mean"] {
        let (_tmp, dir) = tiny(TinyModel {
            pooling,
            normalize: false,
            ..Default::default()
        });
        let e = Embedder::load(&dir).unwrap();
        let expected = match pooling {
            "cls" => PoolingMode::Cls,
            "max" => PoolingMode::Max,
            _ => PoolingMode::Mean,
        };
        assert_eq!(e.pooling(), &[expected]);
        per_mode.push(e.embed(&texts).unwrap());
    }
    assert_ne!(per_mode[0], per_mode[1]);
    assert_ne!(per_mode[1], per_mode[2]);
    // Max pooling dominates mean pooling component-wise.
    for (m, a) in per_mode[1].as_slice().iter().zip(per_mode[2].as_slice()) {
        assert!(m >= a);
    }

    // Several modes concatenate in sentence-transformers' order.
    let (_tmp, dir) = tiny(TinyModel {
        normalize: false,
        ..Default::default()
    });
    let both = load(
        &dir,
        EmbedderOptions {
            pooling: Some(vec![PoolingMode::Mean, PoolingMode::Cls]),
            ..Default::default()
        },
    );
    assert_eq!(both.dim(), 2 * HIDDEN);
    let out = both.embed(&texts).unwrap();
    for i in 0..texts.len() {
        assert!(max_abs_diff(&out.row(i)[..HIDDEN], per_mode[0].row(i)) <= 1e-5);
        assert!(max_abs_diff(&out.row(i)[HIDDEN..], per_mode[2].row(i)) <= 1e-5);
    }
}

#[test]
fn plain_hugging_face_folder_uses_mean_pooling_without_normalisation() {
    let (_tmp, dir) = tiny(TinyModel {
        with_modules: false,
        max_seq_length: None,
        ..Default::default()
    });
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.pooling(), &[PoolingMode::Mean]);
    assert!(!e.normalize());
    assert_eq!(e.max_seq_length(), common::MAX_POSITIONS);
}

#[test]
fn empty_string_embeds_as_cls_sep() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    let out = e.embed(&["", "   ", "the cat"]).unwrap();
    assert!(out.row(0).iter().all(|x| x.is_finite()));
    // Whitespace normalises to nothing: the same [CLS] [SEP] input.
    assert!(max_abs_diff(out.row(0), out.row(1)) <= 1e-6);
    assert!(max_abs_diff(out.row(0), out.row(2)) > 1e-3);
    assert_eq!(e.count_tokens("").unwrap(), 0);
}

#[test]
fn long_texts_are_truncated_like_sentence_transformers() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    let long = sentence(3, 100);
    assert_eq!(e.count_tokens(&long).unwrap(), 100);
    // 30 content tokens + [CLS] + [SEP] = max_seq_length 32.
    let head = e.truncate_to_tokens(&long, 30).unwrap();
    assert_eq!(e.count_tokens(head).unwrap(), 30);
    assert!(long.starts_with(head));
    let out = e.embed(&[long.as_str(), head]).unwrap();
    assert!(max_abs_diff(out.row(0), out.row(1)) <= 1e-5);
    // One more token changes the input the model sees.
    let longer = e.truncate_to_tokens(&long, 31).unwrap();
    assert!(max_abs_diff(&e.embed_one(head).unwrap(), &e.embed_one(longer).unwrap()) <= 1e-5);
    let shorter = e.truncate_to_tokens(&long, 29).unwrap();
    assert!(max_abs_diff(&e.embed_one(head).unwrap(), &e.embed_one(shorter).unwrap()) > 1e-4);
}

#[test]
fn token_counting_and_truncation_edges() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    let text = "the cats ran, fast!";
    // the cat ##s ran , fast !
    assert_eq!(e.count_tokens(text).unwrap(), 7);
    assert_eq!(e.truncate_to_tokens(text, 7).unwrap(), text);
    assert_eq!(e.truncate_to_tokens(text, 100).unwrap(), text);
    assert_eq!(e.truncate_to_tokens(text, 3).unwrap(), "the cats");
    assert_eq!(e.truncate_to_tokens(text, 0).unwrap(), "");
}

#[test]
fn progress_reports_every_batch() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = load(
        &dir,
        EmbedderOptions {
            max_batch_size: 8,
            ..Default::default()
        },
    );
    let mut seen = Vec::new();
    e.embed_with_progress(&mixed_texts(), |p| seen.push(p))
        .unwrap();
    assert_eq!(seen.len(), 5);
    assert!(seen.windows(2).all(|w| w[0].done < w[1].done));
    assert_eq!(seen.last().unwrap().done, 40);
    assert!(seen.iter().all(|p| p.total == 40));
}

// ---- errors -------------------------------------------------------------

#[test]
fn empty_input_list_is_an_error() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    let none: [&str; 0] = [];
    assert!(matches!(e.embed(&none), Err(InferenceError::EmptyInput)));
}

#[test]
fn missing_files_are_named() {
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let (_tmp, dir) = tiny(TinyModel::default());
        std::fs::remove_file(dir.join(file)).unwrap();
        match Embedder::load(&dir) {
            Err(InferenceError::MissingFile { path }) => assert!(path.ends_with(file)),
            other => panic!("expected MissingFile for {file}, got {other:?}"),
        }
    }
    assert!(matches!(
        Embedder::load("/nonexistent/ragjet/model"),
        Err(InferenceError::ModelNotFound(_))
    ));
}

#[test]
fn corrupt_files_are_invalid_not_panics() {
    let cases: [(&str, &[u8]); 5] = [
        ("config.json", b"{ not json"),
        (
            "model.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":",
        ),
        ("tokenizer.json", b"{\"version\": 3}"),
        ("modules.json", b"[{\"path\": 3}]"),
        (
            "1_Pooling/config.json",
            b"{\"pooling_mode_mean_tokens\": \"yes\"}",
        ),
    ];
    for (file, content) in cases {
        let (_tmp, dir) = tiny(TinyModel::default());
        std::fs::write(dir.join(file), content).unwrap();
        match Embedder::load(&dir) {
            Err(InferenceError::InvalidFile { path, .. }) => assert!(path.ends_with(file)),
            other => panic!("expected InvalidFile for {file}, got {other:?}"),
        }
    }
}

#[test]
fn truncated_weights_are_invalid() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        Embedder::load(&dir),
        Err(InferenceError::InvalidFile { .. })
    ));
}

#[test]
fn weights_missing_a_tensor_are_invalid() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let mut config = common::config_json();
    config["num_hidden_layers"] = 3.into(); // the file holds only 2 layers
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    match Embedder::load(&dir) {
        Err(InferenceError::InvalidFile { path, reason }) => {
            assert!(path.ends_with("model.safetensors"));
            assert!(reason.contains("layer.2"), "{reason}");
        }
        other => panic!("expected InvalidFile, got {other:?}"),
    }
}

#[test]
fn unsupported_models_are_refused() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let mut config = common::config_json();
    config["model_type"] = "xlm-roberta".into();
    config["architectures"] = serde_json::json!(["XLMRobertaModel"]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    assert!(matches!(
        Embedder::load(&dir),
        Err(InferenceError::Unsupported(_))
    ));

    let (_tmp, dir) = tiny(TinyModel::default());
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_weightedmean_tokens": true}"#,
    )
    .unwrap();
    assert!(matches!(
        Embedder::load(&dir),
        Err(InferenceError::Unsupported(_))
    ));

    let (_tmp, dir) = tiny(TinyModel::default());
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]"#,
    )
    .unwrap();
    assert!(matches!(
        Embedder::load(&dir),
        Err(InferenceError::Unsupported(_))
    ));
}

#[test]
fn bad_options_are_rejected() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let bad = [
        EmbedderOptions {
            num_threads: Some(0),
            ..Default::default()
        },
        EmbedderOptions {
            max_batch_size: 0,
            ..Default::default()
        },
        EmbedderOptions {
            max_seq_length: Some(common::MAX_POSITIONS + 1),
            ..Default::default()
        },
        EmbedderOptions {
            pooling: Some(vec![]),
            ..Default::default()
        },
    ];
    for options in bad {
        assert!(matches!(
            Embedder::load_with(&dir, options),
            Err(InferenceError::InvalidOption(_))
        ));
    }
}

// ---- devices, precisions, backends, out-of-memory back-off (issue 9) ----

use ragjet_inference::{BackendKind, Device, Precision};

fn min_row_cosine(a: &ragjet_inference::Embeddings, b: &ragjet_inference::Embeddings) -> f32 {
    assert_eq!((a.rows(), a.dim()), (b.rows(), b.dim()));
    common::min_row_cosine(a.as_slice(), b.as_slice(), a.dim()).0
}

fn on_cpu(precision: Option<Precision>, backend: Option<BackendKind>) -> EmbedderOptions {
    EmbedderOptions {
        num_threads: Some(2),
        device: Device::Cpu,
        precision,
        backend,
        ..Default::default()
    }
}

fn f32_on_cpu(backend: Option<BackendKind>) -> EmbedderOptions {
    on_cpu(Some(Precision::F32), backend)
}

#[test]
fn cpu_defaults_to_the_packed_backend() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = Embedder::load(&dir).unwrap();
    // Auto on a machine without a GPU (or a build without `cuda`) is the CPU.
    assert_eq!(e.device_name(), "cpu");
    assert_eq!(e.precision(), Precision::cpu_default());
    assert_eq!(e.backend(), BackendKind::Packed);
    assert_eq!(e.batch_token_limit(), 16384);
    assert_ne!(e.precision(), Precision::Int8, "int8 is opt-in only");
    for precision in [Precision::F32, Precision::Bf16, Precision::Int8] {
        let e = load(&dir, on_cpu(Some(precision), None));
        assert_eq!(
            (e.precision(), e.backend()),
            (precision, BackendKind::Packed)
        );
    }
    let half = load(&dir, on_cpu(Some(Precision::F16), None));
    assert_eq!(half.backend(), BackendKind::Padded);
    assert_eq!(half.precision(), Precision::F16);
}

#[test]
fn padded_backend_matches_the_packed_encoder_for_every_pooling() {
    for pooling in ["mean", "cls", "max"] {
        let (_tmp, dir) = tiny(TinyModel {
            pooling,
            ..Default::default()
        });
        let texts = mixed_texts();
        let packed = load(&dir, f32_on_cpu(None)).embed(&texts).unwrap();
        let padded = load(&dir, f32_on_cpu(Some(BackendKind::Padded)));
        assert_eq!(padded.backend(), BackendKind::Padded);
        let padded = padded.embed(&texts).unwrap();
        let min = min_row_cosine(&packed, &padded);
        assert!(min >= 0.99999, "{pooling}: min cosine {min}");
        let diff = max_abs_diff(packed.as_slice(), padded.as_slice());
        println!("padded f32 vs packed, {pooling}: min cosine {min:.8}, max diff {diff:.2e}");
        assert!(diff <= 1e-4, "{pooling}: max diff {diff}");
    }
    // All four modes at once, concatenated, without normalisation.
    let (_tmp, dir) = tiny(TinyModel::default());
    let all = || EmbedderOptions {
        pooling: Some(vec![
            PoolingMode::MeanSqrtLen,
            PoolingMode::Max,
            PoolingMode::Cls,
            PoolingMode::Mean,
        ]),
        normalize: Some(false),
        ..f32_on_cpu(None)
    };
    let texts = mixed_texts();
    let packed = load(&dir, all()).embed(&texts).unwrap();
    let padded = load(
        &dir,
        EmbedderOptions {
            backend: Some(BackendKind::Padded),
            ..all()
        },
    )
    .embed(&texts)
    .unwrap();
    assert_eq!(padded.dim(), 4 * HIDDEN);
    let diff = max_abs_diff(packed.as_slice(), padded.as_slice());
    assert!(diff <= 1e-4, "all modes: max diff {diff}");
}

#[test]
fn half_precisions_stay_close_to_f32() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let texts = mixed_texts();
    let reference = load(&dir, f32_on_cpu(None)).embed(&texts).unwrap();
    for (precision, floor) in [(Precision::F16, 0.999), (Precision::Bf16, 0.999)] {
        let e = load(&dir, on_cpu(Some(precision), None));
        let got = e.embed(&texts).unwrap();
        assert!(got.as_slice().iter().all(|x| x.is_finite()), "{precision}");
        let min = min_row_cosine(&reference, &got);
        println!("{precision} vs f32: min cosine {min:.6}");
        assert!(min >= floor, "{precision}: min cosine {min} < {floor}");
        // Not bit-identical: the forward pass really ran in `precision`.
        assert!(max_abs_diff(reference.as_slice(), got.as_slice()) > 0.0);
    }
}

#[test]
fn packed_backend_refuses_f16() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let err = Embedder::load_with(
        &dir,
        on_cpu(Some(Precision::F16), Some(BackendKind::Packed)),
    )
    .unwrap_err();
    assert!(matches!(err, InferenceError::InvalidOption(_)), "{err}");
}

/// Int8 products exist on the packed CPU encoder only: asking the padded
/// backend for them is an option error, not a panic or a silent f32 run.
#[test]
fn padded_backend_refuses_int8() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let err = Embedder::load_with(
        &dir,
        on_cpu(Some(Precision::Int8), Some(BackendKind::Padded)),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InferenceError::InvalidOption(m) if m.contains("int8")),
        "{err}"
    );
}

/// With the `cuda` feature, one outcome per state of the driver probe:
/// no driver library → the specific "no NVIDIA driver" error; a driver →
/// GPU 0 opens and agrees with the CPU (a broken GPU host fails here
/// rather than passing through an error branch).
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_the_cpu_where_the_probe_finds_a_driver() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let on = |device, precision| EmbedderOptions {
        device,
        precision: Some(precision),
        ..Default::default()
    };
    if !ragjet_inference::cuda_driver_available() {
        eprintln!("no NVIDIA driver library: checking the error, not the GPU");
        let err = Embedder::load_with(&dir, on(Device::Cuda(0), Precision::F32)).unwrap_err();
        assert!(matches!(err, InferenceError::DeviceUnavailable(_)), "{err}");
        assert!(err.to_string().contains("no NVIDIA driver"), "{err}");
        assert_eq!(Embedder::load(&dir).unwrap().device_name(), "cpu");
        return;
    }
    let texts = mixed_texts();
    let cpu = load(&dir, f32_on_cpu(None)).embed(&texts).unwrap();
    let gpu = load(&dir, on(Device::Cuda(0), Precision::F32));
    assert_eq!(gpu.device_name(), "cuda:0");
    let min = min_row_cosine(&cpu, &gpu.embed(&texts).unwrap());
    assert!(min >= 0.99999, "cuda f32 vs cpu: min cosine {min}");
    assert_eq!(Embedder::load(&dir).unwrap().device_name(), "cuda:0");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_a_clean_error() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let err = Embedder::load_with(
        &dir,
        EmbedderOptions {
            device: Device::Cuda(0),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, InferenceError::DeviceUnavailable(_)), "{err}");
    assert!(err.to_string().contains("cuda"), "{err}");
}

#[test]
fn out_of_memory_halves_the_batch_and_keeps_every_text() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let texts = mixed_texts();
    let longest = texts
        .iter()
        .map(|t| 2 + t.split(' ').count())
        .max()
        .unwrap();
    for backend in [BackendKind::Packed, BackendKind::Padded] {
        let free = load(&dir, on_cpu(None, Some(backend)));
        let want = free.embed(&texts).unwrap();
        // Any pass over 2.5 × the longest text's tokens "runs out of memory".
        let threshold = longest * 5 / 2;
        let tight = load(
            &dir,
            EmbedderOptions {
                simulate_oom_above_tokens: Some(threshold),
                max_batch_tokens: 4096,
                ..on_cpu(None, Some(backend))
            },
        );
        assert_eq!(tight.batch_token_limit(), 4096);
        let mut seen = 0;
        let got = tight
            .embed_with_progress(&texts, |p| seen = p.done)
            .unwrap();
        assert_eq!(seen, texts.len(), "{backend}: every text came back");
        assert_eq!(got.rows(), texts.len());
        let diff = max_abs_diff(want.as_slice(), got.as_slice());
        assert!(diff <= 1e-5, "{backend}: outputs differ by {diff}");
        // The budget dropped to half of each failed batch until passes fit,
        // and the next call starts from there (CPU budgets never grow).
        let limit = tight.batch_token_limit();
        assert!(limit <= threshold * 2, "{backend}: {limit} vs {threshold}");
        let again = tight.embed(&texts).unwrap();
        assert!(tight.batch_token_limit() <= limit, "{backend}: remembered");
        assert!(max_abs_diff(want.as_slice(), again.as_slice()) <= 1e-5);
    }
}

#[test]
fn a_single_text_out_of_memory_is_an_error() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let e = load(
        &dir,
        EmbedderOptions {
            simulate_oom_above_tokens: Some(5),
            ..on_cpu(None, None)
        },
    );
    // Three tokens fit; a long text cannot be split further.
    assert_eq!(e.embed(&["cat"]).unwrap().rows(), 1);
    let err = e.embed(&["cat", &sentence(1, 20)]).unwrap_err();
    match err {
        InferenceError::OutOfMemory {
            tokens, ref device, ..
        } => {
            assert_eq!(tokens, 22);
            assert_eq!(device, "cpu");
        }
        other => panic!("expected OutOfMemory, got {other}"),
    }
}

#[test]
fn token_spans_quote_the_original_text_whatever_lowercasing_does() {
    for lower_here in [false, true] {
        let (_tmp, dir) = tiny(TinyModel::default());
        // `do_lower_case` lowercases before the tokenizer, which changes
        // byte lengths ("İ" 2 bytes, "i̇" 3); otherwise the tokenizer's own
        // normaliser lowercases and keeps its alignments.
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            format!(r#"{{"max_seq_length": 32, "do_lower_case": {lower_here}}}"#),
        )
        .unwrap();
        let e = Embedder::load(&dir).unwrap();
        let quoted = |text: &str| -> Vec<String> {
            let spans = e.token_spans(text).unwrap();
            assert_eq!(spans.len(), e.count_tokens(text).unwrap(), "{text:?}");
            assert!(
                spans.windows(2).all(|w| w[0].end <= w[1].start),
                "{spans:?}"
            );
            spans.into_iter().map(|s| text[s].to_string()).collect()
        };
        // Out-of-vocabulary words are one [UNK] each, spanning the word.
        assert_eq!(
            quoted("İstanbul İzmir"),
            ["İstanbul", "İzmir"],
            "{lower_here}"
        );
        assert_eq!(quoted("Aİb İİ x"), ["Aİb", "İİ", "x"], "{lower_here}");
        // CJK characters are tokens of their own; the emoji is one [UNK].
        assert_eq!(
            quoted("東京 is 🙂 fun, İ."),
            ["東", "京", "is", "🙂", "fun", ",", "İ", "."],
            "{lower_here}"
        );
        assert_eq!(
            quoted("The CATS ran, fast!"),
            ["The", "CAT", "S", "ran", ",", "fast", "!"],
            "{lower_here}"
        );
        assert!(quoted(" \n ").is_empty());
        assert!(quoted("").is_empty());
    }
}

// ---- input that used to panic or fail (issue 15) -------------------------

/// A tokenizer that adds no special tokens turns "" into no tokens at all:
/// such a text gets a zero vector (sentence-transformers' mean pooling
/// gives one) on both backends, and the others are unaffected. It used to
/// reach a softmax over no columns and panic.
#[test]
fn texts_of_no_tokens_embed_as_zero_vectors() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let path = dir.join("tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["post_processor"] = serde_json::Value::Null;
    std::fs::write(&path, tokenizer.to_string()).unwrap();
    for backend in [BackendKind::Packed, BackendKind::Padded] {
        let e = load(&dir, f32_on_cpu(Some(backend)));
        let texts = ["", "the cat sat", "  ", "a dog"];
        let out = e.embed(&texts).unwrap();
        assert_eq!(out.rows(), 4);
        for empty in [0, 2] {
            assert!(
                out.row(empty).iter().all(|&x| x == 0.0),
                "{backend}: row {empty} {:?}",
                &out.row(empty)[..4]
            );
        }
        for full in [1, 3] {
            let alone = e.embed_one(texts[full]).unwrap();
            assert!(max_abs_diff(out.row(full), &alone) <= 1e-5, "{backend}");
            let norm = out.row(full).iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{backend}: norm {norm}");
        }
        // Only empty texts: no forward pass at all.
        let none = e.embed(&[""]).unwrap();
        assert!(none.as_slice().iter().all(|&x| x == 0.0), "{backend}");
    }
}

/// `intermediate_size: 0` (with weights of that shape, so the file and the
/// config agree) is refused at load with a message naming the field, in
/// every precision. On a CPU with AVX-512 BF16 it used to panic packing the
/// bf16 weights.
#[test]
fn a_zero_intermediate_size_is_refused_at_load() {
    let (_tmp, dir) = tiny(TinyModel::default());
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut shape = view.shape().to_vec();
            let mut data = view.data().to_vec();
            if name.contains("intermediate.dense") {
                shape[0] = 0;
                data.clear();
            } else if name.ends_with(".output.dense.weight") && !name.contains("attention") {
                shape[1] = 0;
                data.clear();
            }
            (name, shape, data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let mut config = common::config_json();
    config["intermediate_size"] = 0.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for precision in [Precision::Bf16, Precision::F32, Precision::F16] {
        match Embedder::load_with(&dir, on_cpu(Some(precision), None)) {
            Err(InferenceError::InvalidFile { path, reason }) => {
                assert!(path.ends_with("config.json"), "{}", path.display());
                assert!(reason.contains("intermediate_size"), "{reason}");
            }
            other => panic!("{precision}: expected InvalidFile, got {other:?}"),
        }
    }
}

/// Truncation where lowercasing changes byte lengths: "İ" is 2 bytes and
/// lowercases to "i̇", 3 bytes. With `do_lower_case` (the embedder
/// lowercases before the tokenizer) token offsets point into the longer
/// lowercase text; they used to be refused with an error. Without it the
/// tokenizer's normaliser lowercases and keeps its own alignments.
#[test]
fn truncation_maps_offsets_back_when_lowercasing_changes_lengths() {
    for lower_here in [true, false] {
        let (_tmp, dir) = tiny(TinyModel::default());
        std::fs::write(
            dir.join("sentence_bert_config.json"),
            format!(r#"{{"max_seq_length": 32, "do_lower_case": {lower_here}}}"#),
        )
        .unwrap();
        let e = Embedder::load(&dir).unwrap();
        let text = "İstanbul the cat sat on the İİ mat";
        // [UNK] the cat sat on the [UNK] mat
        assert_eq!(e.count_tokens(text).unwrap(), 8, "{lower_here}");
        for (max, want) in [
            (1, "İstanbul"),
            (3, "İstanbul the cat"),
            (7, "İstanbul the cat sat on the İİ"),
            (8, text),
            (0, ""),
        ] {
            let got = e.truncate_to_tokens(text, max).unwrap();
            assert_eq!(got, want, "do_lower_case {lower_here}, {max} tokens");
            assert!(e.count_tokens(got).unwrap() <= max);
        }
        // The truncated text is what the model sees when it keeps that many.
        let cut = e.truncate_to_tokens(text, 3).unwrap();
        let whole = e.embed_one(text).unwrap();
        assert!(max_abs_diff(&e.embed_one(cut).unwrap(), &whole) > 1e-4);
    }
}
