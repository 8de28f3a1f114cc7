"""LlamaIndex adapters: an existing LlamaIndex pipeline runs on ragjet's Rust
hot path by swapping a few classes.

>>> from llama_index.core import Settings, StorageContext, VectorStoreIndex
>>> from ragjet.llama_index import RagjetEmbedding, RagjetVectorStore
>>> Settings.embed_model = RagjetEmbedding()        # bundled all-MiniLM-L6-v2
>>> storage = StorageContext.from_defaults(vector_store=RagjetVectorStore())
>>> index = VectorStoreIndex.from_documents(documents, storage_context=storage)

================== ================================ ==================================
ragjet class       replaces                         on
================== ================================ ==================================
RagjetEmbedding    ``HuggingFaceEmbedding``         ``ragjet.Embedder``
RagjetVectorStore  ``SimpleVectorStore`` (+ text)   ``FlatIndex`` / ``HnswIndex``
RagjetReranker     ``SentenceTransformerRerank``    ``ragjet.CrossEncoder``
CachedLLM          wraps any ``LLM``                ``ResponseCache``, ``SemanticCache``
RagjetSpanHandler  instrumentation span handler     ``ragjet.Telemetry``
RagjetEventHandler instrumentation event handler    ``ragjet.Telemetry``
================== ================================ ==================================

Needs ``llama-index-core`` 0.14 or newer (``pip install "ragjet[llama-index]"``).
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "ragjet.llama_index needs llama-index-core>=0.14: "
        "`pip install 'ragjet[llama-index]'` or `pip install llama-index-core`"
    ) from err

from ragjet.llama_index.embedding import RagjetEmbedding
from ragjet.llama_index.instrumentation import RagjetEventHandler, RagjetSpanHandler
from ragjet.llama_index.llm import CachedLLM
from ragjet.llama_index.rerank import RagjetReranker
from ragjet.llama_index.vector_store import RagjetVectorStore

__all__ = [
    "CachedLLM",
    "RagjetEmbedding",
    "RagjetEventHandler",
    "RagjetReranker",
    "RagjetSpanHandler",
    "RagjetVectorStore",
]
