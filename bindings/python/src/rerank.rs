//! `CrossEncoder`: (query, passage) relevance scores for reranking, as
//! sentence-transformers' `CrossEncoder.predict` computes them.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use ragjet::inference::{self, CrossEncoderOptions, ScoreActivation};

use crate::convert::{count, describe, guard, inference_err, invalid, positive, str_list};

/// A BERT cross-encoder reranker (such as
/// `cross-encoder/ms-marco-MiniLM-L-6-v2`) loaded from a Hugging Face /
/// sentence-transformers folder; scores equal sentence-transformers'
/// `CrossEncoder.predict`.
///
/// `activation=None` takes the folder's (sigmoid for a one-label model
/// unless `config.json` names another); `"sigmoid"` or `"identity"`
/// (raw logits) override it. The GIL is released while scoring; a
/// `CrossEncoder` may be shared between threads.
#[pyclass(frozen, module = "ragjet")]
pub(crate) struct CrossEncoder {
    inner: Arc<inference::CrossEncoder>,
}

fn pair_of(item: &Bound<'_, PyAny>, i: usize) -> PyResult<(String, String)> {
    let bad = || {
        invalid(format!(
            "pairs[{i}] is {}, not a (query, passage) pair of str",
            describe(item)
        ))
    };
    if item.is_instance_of::<PyString>() {
        return Err(bad());
    }
    let parts: Vec<Bound<'_, PyAny>> = item
        .try_iter()
        .map_err(|_| bad())?
        .collect::<PyResult<_>>()?;
    if parts.len() != 2 {
        return Err(bad());
    }
    let text = |obj: &Bound<'_, PyAny>, side: &str| -> PyResult<String> {
        obj.cast::<PyString>()
            .map_err(|_| {
                invalid(format!(
                    "pairs[{i}]'s {side} is {}, not a str",
                    describe(obj)
                ))
            })?
            .to_cow()
            .map(|c| c.into_owned())
            .map_err(|e| invalid(format!("pairs[{i}]'s {side} is not valid Unicode: {e}")))
    };
    Ok((text(&parts[0], "query")?, text(&parts[1], "passage")?))
}

#[pymethods]
impl CrossEncoder {
    /// Loads the model in `model_dir`. `batch_size`: most pairs per
    /// forward pass; `max_length`: token limit per pair (default: the
    /// folder's); `device`: "auto" | "cpu" | "cuda" | "cuda:N"; `precision`:
    /// "f32" | "f16" | "bf16" | "int8" (default as for `Embedder`).
    #[new]
    #[pyo3(signature = (model_dir, batch_size=32, activation=None, *, max_length=None, num_threads=None, device="auto", precision=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_dir: PathBuf,
        batch_size: i64,
        activation: Option<&str>,
        max_length: Option<i64>,
        num_threads: Option<i64>,
        device: &str,
        precision: Option<&str>,
    ) -> PyResult<Self> {
        guard(|| {
            let activation = match activation.map(str::to_ascii_lowercase).as_deref() {
                None => None,
                Some("sigmoid") => Some(ScoreActivation::Sigmoid),
                Some("identity") | Some("none") => Some(ScoreActivation::Identity),
                Some(other) => {
                    return Err(invalid(format!(
                        "activation must be None, \"sigmoid\" or \"identity\", not {other:?}"
                    )))
                }
            };
            let options = CrossEncoderOptions {
                num_threads: positive("num_threads", num_threads)?,
                max_batch_size: count("batch_size", batch_size)?,
                max_length: positive("max_length", max_length)?,
                activation,
                device: device.parse().map_err(inference_err)?,
                precision: precision
                    .map(str::parse::<inference::Precision>)
                    .transpose()
                    .map_err(inference_err)?,
                ..Default::default()
            };
            let inner = py
                .detach(|| inference::CrossEncoder::load_with(&model_dir, options))
                .map_err(inference_err)?;
            Ok(Self {
                inner: Arc::new(inner),
            })
        })
    }

    /// One score per (query, passage) pair, as a float32 array of shape
    /// (len(pairs),); an empty list gives an empty array. The GIL is
    /// released while scoring.
    fn predict(&self, py: Python<'_>, pairs: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let one_pair = pairs
                .cast::<PyTuple>()
                .is_ok_and(|t| t.len() == 2 && t.iter().all(|x| x.is_instance_of::<PyString>()));
            if pairs.is_instance_of::<PyString>() || one_pair {
                return Err(invalid(
                    "pairs must be a list of (query, passage) pairs; wrap one pair in a list",
                ));
            }
            let iter = pairs.try_iter().map_err(|_| {
                invalid(format!(
                    "pairs must be a list of (query, passage) pairs, not {}",
                    describe(pairs)
                ))
            })?;
            let pairs: Vec<(String, String)> = iter
                .enumerate()
                .map(|(i, item)| pair_of(&item?, i))
                .collect::<PyResult<_>>()?;
            let inner = &*self.inner;
            let scores = py.detach(|| inner.predict(&pairs)).map_err(inference_err)?;
            Ok(PyArray1::from_vec(py, scores).into_any().unbind())
        })
    }

    /// Scores `query` against every passage and returns the best `top_n`
    /// (all with None) as `(index into passages, score)`, highest first
    /// (equal scores in input order).
    #[pyo3(signature = (query, passages, top_n=None))]
    fn rerank(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        passages: &Bound<'_, PyAny>,
        top_n: Option<i64>,
    ) -> PyResult<Vec<(usize, f32)>> {
        guard(|| {
            let query = query
                .cast::<PyString>()
                .map_err(|_| invalid(format!("query must be a str, not {}", describe(query))))?
                .to_cow()?
                .into_owned();
            let passages = str_list("passages", passages)?;
            let top_n = positive("top_n", top_n)?.unwrap_or(passages.len());
            let inner = &*self.inner;
            py.detach(|| inner.rerank(&query, &passages, top_n))
                .map_err(inference_err)
        })
    }

    /// The folder the model was loaded from.
    #[getter]
    fn model_dir(&self) -> PathBuf {
        self.inner.model_dir().to_owned()
    }

    /// Token limit per pair, special tokens included.
    #[getter]
    fn max_length(&self) -> usize {
        self.inner.max_length()
    }

    /// What turns logits into scores: "sigmoid" or "identity".
    #[getter]
    fn activation(&self) -> &'static str {
        match self.inner.activation() {
            ScoreActivation::Sigmoid => "sigmoid",
            ScoreActivation::Identity => "identity",
        }
    }

    /// The classifier's label names.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.inner.labels().to_vec()
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

    fn __repr__(&self) -> String {
        format!(
            "CrossEncoder(model_dir={:?}, max_length={}, activation={:?}, device={:?})",
            self.inner.model_dir(),
            self.inner.max_length(),
            self.activation(),
            self.inner.device_name()
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CrossEncoder>()
}
