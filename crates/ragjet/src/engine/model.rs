//! The embedding model behind the engine: loading it from the
//! configuration, naming it, and the one function every embedding goes
//! through (so the micro-batching queue sits in one place).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ragjet_inference::{Device, Embedder, EmbedderOptions, InferenceError, Precision};
use ragjet_telemetry::metrics as m;

use crate::config::{ModelConfig, QueueConfig};
use crate::error::{Error, Result};
use crate::queue::{BatchQueue, QueueOptions};

/// What identifies the vectors a model produces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ModelIdentity {
    /// Label on metrics and spans.
    pub name: String,
    /// BLAKE3 of the files that determine the vectors (weights, config,
    /// tokenizer, pooling), hex: two folders with the same files are the
    /// same model wherever they are.
    pub fingerprint: String,
    /// Vector width.
    pub dim: usize,
}

impl ModelIdentity {
    /// The embedding cache's revision: the fingerprint and the precision,
    /// since bf16 and f32 vectors of one model differ slightly.
    pub fn cache_revision(&self, precision: Precision) -> String {
        format!("{}/{precision}", self.fingerprint)
    }
}

/// Loads the model the configuration names.
pub(crate) fn load(cfg: &ModelConfig) -> Result<(Embedder, ModelIdentity)> {
    let (dir, default_model) = match &cfg.dir {
        Some(d) => (d.clone(), false),
        None => (ragjet_inference::locate_default_model()?, true),
    };
    let device: Device = cfg
        .device
        .parse()
        .map_err(|e: ragjet_inference::InferenceError| {
            Error::config("model.device", e.to_string())
        })?;
    let precision = match &cfg.precision {
        Some(p) => Some(
            p.parse::<Precision>()
                .map_err(|e| Error::config("model.precision", e.to_string()))?,
        ),
        None => None,
    };
    let options = EmbedderOptions {
        num_threads: cfg.num_threads,
        max_batch_size: cfg.max_batch_size,
        max_batch_tokens: cfg.max_batch_tokens,
        device,
        precision,
        ..EmbedderOptions::default()
    };
    let embedder = Embedder::load_with(&dir, options)?;
    let name = cfg.name.clone().unwrap_or_else(|| {
        if default_model {
            "all-MiniLM-L6-v2".to_string()
        } else {
            folder_name(&dir)
        }
    });
    let fingerprint = fingerprint(&dir, &embedder)?;
    let identity = ModelIdentity {
        name,
        fingerprint,
        dim: embedder.dim(),
    };
    Ok((embedder, identity))
}

fn folder_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "model".into())
}

/// Hashes the files that make the vectors what they are, plus the
/// embedder's resolved settings (pooling, normalisation, length limit),
/// which options can change without touching a file.
fn fingerprint(dir: &Path, embedder: &Embedder) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(b"ragjet-engine/model/v1");
    for name in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "model.safetensors",
    ] {
        let path: PathBuf = dir.join(name);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        match File::open(&path) {
            Ok(mut f) => {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf).map_err(|e| Error::storage(&path, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                h.update(b"\x01");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                h.update(b"\x00");
            }
            Err(e) => return Err(Error::storage(&path, e)),
        }
    }
    h.update(format!("{:?}", embedder.pooling()).as_bytes());
    h.update(&[embedder.normalize() as u8]);
    h.update(&(embedder.max_seq_length() as u64).to_le_bytes());
    Ok(h.finalize().to_hex()[..32].to_string())
}

/// Embeds `texts` with the engine's model and records the embedding
/// metrics (batches, batch sizes, tokens) on the calling thread (the
/// queue's worker, or the caller when there is no queue).
///
/// `progress(done, total)` is called after every forward pass.
pub(crate) fn embed(
    embedder: &Embedder,
    model: &str,
    texts: &[&str],
    progress: &(dyn Fn(usize, usize) + Sync),
) -> std::result::Result<Vec<Vec<f32>>, InferenceError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let span = ragjet_telemetry::spans::embedding(model, texts.len());
    let _entered = span.enter();
    let batches = Mutex::new(Vec::new());
    let result = embedder.embed_with_progress(texts, |p| {
        let mut b = batches.lock().unwrap_or_else(|e| e.into_inner());
        let before: usize = b.iter().sum();
        b.push(p.done - before);
        drop(b);
        progress(p.done, p.total);
    });
    let embeddings = match result {
        Ok(e) => e,
        Err(e) => {
            ragjet_telemetry::spans::record_error(
                &span,
                &ragjet_telemetry::spans::error_kind(&e),
                &e,
            );
            return Err(e);
        }
    };
    let mut tokens = 0u64;
    for t in texts {
        tokens += embedder.count_tokens(t).unwrap_or(0) as u64 + 2;
    }
    ragjet_telemetry::spans::record_input_tokens(&span, tokens);
    let batches = batches.into_inner().unwrap_or_else(|e| e.into_inner());
    let n = batches.len().max(1) as u64;
    for (i, size) in batches.iter().enumerate() {
        // Tokens per forward pass are not reported by the embedder; they are
        // spread evenly so the counter's total is exact.
        let share = tokens / n + u64::from((i as u64) < tokens % n);
        m::record_embedding_batch(model, *size, share);
    }
    Ok(embeddings.iter().map(<[f32]>::to_vec).collect())
}

/// The queue in front of the engine's model: every embedding (queries and
/// ingest) goes through it, so concurrent callers share forward passes and
/// queries overtake bulk work. A batch that fails as a whole is retried
/// text by text, so one bad text fails only its own request.
pub(crate) fn embedding_queue(
    embedder: Arc<Embedder>,
    model: String,
    cfg: &QueueConfig,
) -> Result<BatchQueue<String, Vec<f32>, InferenceError>> {
    let counter = Arc::clone(&embedder);
    let max = embedder.max_seq_length();
    let queue = BatchQueue::new(
        queue_options("embedding", cfg),
        move |texts: Vec<String>| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            match embed(&embedder, &model, &refs, &|_, _| {}) {
                Ok(vectors) => vectors.into_iter().map(Ok).collect(),
                Err(e) if refs.len() == 1 => vec![Err(e)],
                Err(_) => refs
                    .iter()
                    .map(|t| {
                        embed(&embedder, &model, &[t], &|_, _| {})
                            .and_then(|mut v| v.pop().ok_or(InferenceError::EmptyInput))
                    })
                    .collect(),
            }
        },
        move |t: &String| {
            counter
                .count_tokens(t)
                .map_or(max, |n| (n + 2).min(max))
                .max(1)
        },
    )?;
    Ok(queue)
}

/// Queue settings from the configuration.
pub(crate) fn queue_options(name: &str, cfg: &QueueConfig) -> QueueOptions {
    QueueOptions {
        name: name.to_string(),
        max_batch_cost: cfg.max_batch_tokens,
        max_batch_items: cfg.max_batch_items,
        max_wait: Duration::from_millis(cfg.max_wait_ms),
        capacity: cfg.capacity,
        timeout: cfg.timeout_ms.map(Duration::from_millis),
    }
}

/// Wakes the thread blocked in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Waits on the calling thread for a future that others complete (a queue
/// [`Ticket`](crate::queue::Ticket)): ingest submits without a deadline, as
/// tickets, and blocks here.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        // A spurious wake-up only costs another poll.
        std::thread::park();
    }
}
