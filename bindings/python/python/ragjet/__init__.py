"""ragjet: the Rust hot path for retrieval-augmented generation.

>>> import ragjet
>>> embedder = ragjet.Embedder()          # bundled all-MiniLM-L6-v2
>>> vectors = embedder.embed(["a passage", "another one"])
>>> vectors.shape
(2, 384)
>>> index = ragjet.FlatIndex(dim=384)
>>> index.add(["a", "b"], vectors, metadata=[{"year": 2023}, {"year": 2024}])
>>> [hit.id for hit in index.search(embedder.embed("a passage"), k=1)]
['a']

``Embedder.encode`` takes sentence-transformers' argument names, so an
``Embedder`` stands in for a ``SentenceTransformer`` in code that only
encodes. Vectors go in and out as numpy float32 arrays, read in place when
C-contiguous; every heavy call releases the GIL, and the ``a``-prefixed
methods (``aembed``, ``Engine.aquery``, ``Engine.aingest``) run the call on
a worker thread so an event loop keeps serving. Errors derive from
:class:`RagjetError` (see ``ragjet._errors``).
"""

from ragjet._errors import (
    CircuitOpenError,
    DeadlineExceededError,
    DeviceError,
    InvalidInput,
    InvalidInputError,
    ModelLoadError,
    OutOfMemoryError,
    Overloaded,
    OverloadedError,
    QueueFullError,
    RagjetError,
    RateLimitedError,
    StorageError,
)
from ragjet._locate import default_model_dir
from ragjet._ragjet import (
    AdviceServer,
    Bm25Index,
    BreakerPermit,
    CircuitBreaker,
    CrossEncoder,
    DeadLetterStore,
    Embedder,
    EmbeddingCache,
    Engine,
    Experiment,
    FlatIndex,
    Hit,
    HnswIndex,
    ManualClock,
    ModelPool,
    PooledModel,
    RateLimiter,
    ResponseCache,
    RetrievalCache,
    RetryPolicy,
    Router,
    SemanticCache,
    Telemetry,
    __version__,
    advise_scale,
    alpha_fusion,
    build_features,
    cuda_available,
    is_transient_status,
    metric_catalogue,
    mmr,
)

__all__ = [
    "AdviceServer",
    "DeadlineExceededError",
    "OverloadedError",
    "QueueFullError",
    "Bm25Index",
    "BreakerPermit",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeadLetterStore",
    "Experiment",
    "ManualClock",
    "ModelPool",
    "PooledModel",
    "RateLimitedError",
    "RateLimiter",
    "RetryPolicy",
    "Router",
    "advise_scale",
    "is_transient_status",
    "CrossEncoder",
    "DeviceError",
    "Embedder",
    "EmbeddingCache",
    "Engine",
    "FlatIndex",
    "Hit",
    "HnswIndex",
    "InvalidInput",
    "InvalidInputError",
    "ModelLoadError",
    "OutOfMemoryError",
    "Overloaded",
    "RagjetError",
    "ResponseCache",
    "RetrievalCache",
    "SemanticCache",
    "StorageError",
    "Telemetry",
    "__version__",
    "alpha_fusion",
    "build_features",
    "cuda_available",
    "default_model_dir",
    "metric_catalogue",
    "mmr",
]
