"""``RagjetVectorStore``: a LlamaIndex vector store on ragjet's Rust indexes."""

import asyncio
import json
import math
import os
import threading
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    DEFAULT_PERSIST_DIR,
    DEFAULT_PERSIST_FNAME,
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import (
    metadata_dict_to_node,
    node_to_metadata_dict,
)

import ragjet

__all__ = ["RagjetVectorStore", "filters_to_dict"]

#: LlamaIndex's separator between a storage namespace and the file name.
NAMESPACE_SEP = "__"
DEFAULT_NAMESPACE = "default"
#: What the manifest written by ``persist`` says it is.
MANIFEST_FORMAT = "ragjet.llama_index.RagjetVectorStore"
MANIFEST_VERSION = 1

_SCALARS = (str, int, float, bool, type(None))


def filters_to_dict(filters: Optional[MetadataFilters]) -> Optional[dict]:
    """``MetadataFilters`` (nested groups included) in the dict shape the
    Rust indexes read: ``{"filters": [...], "condition": "and"}``.

    Written by hand rather than with ``model_dump(mode="json")``, which turns
    an infinite float into ``null``.
    """
    if filters is None:
        return None
    if isinstance(filters, dict):
        return filters
    members: list[dict] = []
    for member in filters.filters:
        if isinstance(member, MetadataFilters):
            members.append(filters_to_dict(member))
        else:
            members.append(
                {
                    "key": member.key,
                    "value": member.value,
                    "operator": FilterOperator(member.operator).value,
                }
            )
    condition = FilterCondition(filters.condition or FilterCondition.AND).value
    return {"filters": members, "condition": condition}


def _and(*groups: Optional[dict]) -> Optional[dict]:
    present = [g for g in groups if g is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return {"filters": present, "condition": "and"}


def _filterable(value: Any) -> bool:
    """Whether a metadata value has a Rust ``MetadataValue`` form: a scalar or
    a list (of lists) of scalars. Dicts stay in the node (``_node_content``)
    but cannot be filtered on."""
    if isinstance(value, _SCALARS):
        return not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, list):
        return all(_filterable(v) for v in value)
    return False


def _llama_mmr(
    query: np.ndarray, vectors: np.ndarray, ids: list[str], top_k: int, threshold: float
) -> tuple:
    """llama-index-core's ``get_top_k_mmr_embeddings``, vectorised: the same
    picks and scores (cosine similarity; each step discounts only the overlap
    with the most recent pick, as the core does)."""
    norms = np.linalg.norm(vectors, axis=1)
    qn = float(np.linalg.norm(query))
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = vectors / norms[:, None]
        to_query = (vectors @ query) / (norms * qn)
    to_query = to_query.astype(np.float64)
    scores = threshold * to_query
    first = int(np.argmax(scores))
    picked_ids = [ids[first]]
    picked_scores = [float(scores[first])]
    open_ = np.ones(len(ids), dtype=bool)
    open_[first] = False
    recent = first
    for _ in range(min(top_k, len(ids)) - 1):
        overlap = unit @ unit[recent]
        scores = threshold * to_query - (1.0 - threshold) * overlap
        scores[~open_] = -np.inf
        best = int(np.argmax(scores))
        picked_ids.append(ids[best])
        picked_scores.append(float(scores[best]))
        open_[best] = False
        recent = best
    return picked_scores, picked_ids


class RagjetVectorStore(BasePydanticVectorStore):
    """An in-process vector store on ragjet's Rust indexes.

    ``RagjetVectorStore()`` searches exactly (``FlatIndex``, cosine);
    ``index="hnsw"`` uses an HNSW graph (``m``, ``ef_construction``,
    ``ef_search``) for large collections. The vector width is taken from the
    first nodes added unless ``dim`` is given.

    The store keeps each node's text and metadata (``stores_text = True``):
    a ``VectorStoreIndex`` over it needs no docstore, ``query`` returns the
    nodes with their similarities, and ``delete(ref_doc_id)`` (what
    ``VectorStoreIndex.delete_ref_doc`` calls) finds a document's nodes by
    itself. Re-adding a node id replaces the node.

    Query modes: ``DEFAULT`` (vector), ``SPARSE`` / ``TEXT_SEARCH`` (BM25 over
    the node text with its embed-mode metadata), ``HYBRID`` (both, fused by
    ``ragjet.alpha_fusion`` with ``alpha``: 1 is vector only, 0 keyword only;
    0.5 when unset), ``MMR`` (``mmr_threshold``, from the query or from
    ``vector_store_kwargs={"mmr_threshold": ...}``; the candidates are every
    node passing the filters, or the ``mmr_prefetch_k`` nearest). SPARSE and
    HYBRID need ``enable_hybrid=True`` (the default), which keeps a BM25 index
    beside the vectors.

    ``filters`` take every ``FilterOperator`` and ``FilterCondition`` with
    the semantics of llama-index-core's own ``SimpleVectorStore``, plus
    nested ``MetadataFilters``; they are evaluated in Rust. Where the core
    raises ``TypeError`` on a node (ordering a str against a number), that
    node is left out rather than failing the query. ``doc_ids`` and
    ``node_ids`` restrict a query further.

    Persistence: ``StorageContext.persist(persist_dir=...)`` (or
    ``persist(path)``) writes ``{namespace}__vector_store.json`` (a small
    manifest) beside the Rust index files; ``from_persist_dir(persist_dir)``
    reads them back. ``RagjetVectorStore(persist_dir=...)`` loads the store
    found there, if any, and ``persist()`` then writes back to it.

    Every method is safe to call from several threads; the async methods run
    the Rust call on a worker thread, off the event loop.
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False

    index: str = Field(default="flat", description='"flat" (exact) or "hnsw".')
    metric: str = Field(default="cosine", description='"cosine", "ip" or "l2".')
    dim: Optional[int] = Field(default=None, description="Vector width; None: from the data.")
    namespace: str = Field(
        default=DEFAULT_NAMESPACE, description="Name in metrics and in persisted file names."
    )
    persist_dir: Optional[str] = Field(default=None, description="Where persist() writes.")
    enable_hybrid: bool = Field(default=True, description="Keep a BM25 index for SPARSE/HYBRID.")
    storage: str = Field(
        default="f32",
        description='Element type: "f32", "f16" (flat only), "int8" or "binary" '
        "(compressed scan or graph walk, exact rescore of the best candidates from f32 rows).",
    )
    m: int = Field(default=16, description="HNSW links per node.")
    ef_construction: int = Field(default=200, description="HNSW build beam width.")
    ef_search: int = Field(default=64, description="HNSW search beam width.")
    bm25_k1: float = Field(default=1.2, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(default=0.75, description="BM25 length normalisation.")

    _index: Any = PrivateAttr(default=None)
    _bm25: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr()
    _dim_given: bool = PrivateAttr(default=False)

    def __init__(
        self,
        index: str = "flat",
        *,
        dim: Optional[int] = None,
        metric: str = "cosine",
        namespace: Optional[str] = None,
        persist_dir: Optional[str] = None,
        enable_hybrid: bool = True,
        storage: str = "f32",
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 64,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        **kwargs: Any,
    ) -> None:
        """Creates an empty store, or loads the one persisted in
        ``persist_dir`` (its settings then win over the arguments).

        Raises:
            ValueError: an unknown ``index`` or ``metric``, or ``storage="f16"``
                with ``index="hnsw"``.
            ragjet.StorageError: the persisted files are unreadable.
        """
        if index not in ("flat", "hnsw"):
            raise ValueError(f'index must be "flat" or "hnsw", not {index!r}')
        if index == "hnsw" and storage in ("f16", "float16"):
            # Refused here, not at the first add (the index is created then).
            raise ValueError('storage="f16" is for index="flat"; HNSW takes f32, int8 or binary')
        if metric not in ("cosine", "ip", "l2"):
            raise ValueError(f'metric must be "cosine", "ip" or "l2", not {metric!r}')
        super().__init__(
            index=index,
            dim=dim,
            metric=metric,
            namespace=namespace or DEFAULT_NAMESPACE,
            persist_dir=None if persist_dir is None else str(persist_dir),
            enable_hybrid=enable_hybrid,
            storage=storage,
            m=m,
            ef_construction=ef_construction,
            ef_search=ef_search,
            bm25_k1=bm25_k1,
            bm25_b=bm25_b,
            **kwargs,
        )
        self._lock = threading.RLock()
        self._dim_given = dim is not None
        if dim is not None:
            self._index = self._new_index(dim)
        if enable_hybrid:
            self._bm25 = ragjet.Bm25Index(k1=bm25_k1, b=bm25_b)
        if self.persist_dir is not None:
            manifest = self._default_persist_path()
            if os.path.exists(manifest):
                self._load_files(manifest)

    @classmethod
    def class_name(cls) -> str:
        return "RagjetVectorStore"

    @property
    def client(self) -> Any:
        """The Rust index (``ragjet.FlatIndex`` / ``ragjet.HnswIndex``), or
        ``None`` before the first add when ``dim`` was not given."""
        return self._index

    def __len__(self) -> int:
        index = self._index
        return 0 if index is None else len(index)

    def __getstate__(self) -> dict:
        # BaseComponent would drop the unpicklable Rust index and unpickle an
        # empty store; refusing is better than losing the data silently.
        raise TypeError(
            "a RagjetVectorStore cannot be pickled (its Rust index would not come along): "
            "persist() it and load it with RagjetVectorStore.from_persist_dir()"
        )

    def __bool__(self) -> bool:
        # LlamaIndex tests stores with `if vector_store:`; an empty store is
        # still a store.
        return True

    # -- building -----------------------------------------------------------

    def _new_index(self, dim: int) -> Any:
        if self.index == "hnsw":
            return ragjet.HnswIndex(
                dim,
                metric=self.metric,
                m=self.m,
                ef_construction=self.ef_construction,
                ef_search=self.ef_search,
                storage=self.storage,
            )
        return ragjet.FlatIndex(dim, metric=self.metric, storage=self.storage)

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Adds nodes with their embeddings (a node id already present is
        replaced); returns the node ids.

        Raises:
            ValueError: a node has no embedding, or embeddings of different widths.
            ragjet.InvalidInputError: a width other than the store's, or NaN.
        """
        if not nodes:
            return []
        latest: dict[str, BaseNode] = {}
        for node in nodes:  # a repeated id: the last one wins, as in SimpleVectorStore
            latest.pop(node.node_id, None)
            latest[node.node_id] = node
        ids: list[str] = []
        rows: list[list[float]] = []
        metadata: list[dict] = []
        texts: list[str] = []
        refs: list[Optional[str]] = []
        keyword_texts: list[str] = []
        for node_id, node in latest.items():
            if node.embedding is None:
                raise ValueError(f"node {node_id} has no embedding; embed it before adding")
            meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
            ids.append(node_id)
            rows.append(node.embedding)
            metadata.append({k: v for k, v in meta.items() if _filterable(v)})
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
            refs.append(node.ref_doc_id)
            if self._bm25 is not None:
                keyword_texts.append(node.get_content(metadata_mode=MetadataMode.EMBED))
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except ValueError as err:
            raise ValueError(f"the nodes' embeddings differ in width: {err}") from None
        with self._lock:
            width = vectors.shape[1]
            index = self._index
            if index is None or (not self._dim_given and len(index) == 0 and index.dim != width):
                # The width comes from the data: the first add, or the first
                # after clear() with vectors of another width.
                self._index = self._new_index(width)
                self.dim = width
            self._index.add(ids, vectors, metadata=metadata, texts=texts, ref_doc_ids=refs)
            if self._bm25 is not None:
                self._bm25.add(ids, keyword_texts)
        return [node.node_id for node in nodes]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    # -- removing -----------------------------------------------------------

    def _remove(self, ids: list[str]) -> None:
        if not ids:
            return
        self._index.delete(ids)
        if self._bm25 is not None:
            self._bm25.delete(ids)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes every node of the source document ``ref_doc_id``."""
        with self._lock:
            if self._index is None:
                return
            by_doc = {"filters": [{"key": "ref_doc_id", "value": ref_doc_id, "operator": "=="}]}
            self._remove(list(self._index.ids(by_doc)))

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    def _select(
        self, node_ids: Optional[list[str]], filters: Optional[MetadataFilters]
    ) -> list[str]:
        """Ids passing ``filters`` and, when given, among ``node_ids``
        (then in ``node_ids``' order), as ``SimpleVectorStore.delete_nodes``
        selects them."""
        if self._index is None:
            return []
        passing = self._index.ids(filters_to_dict(filters))
        if node_ids is None:
            return list(passing)
        passing = set(passing)
        return [i for i in dict.fromkeys(node_ids) if i in passing]

    def delete_nodes(
        self,
        node_ids: Optional[list[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Deletes the nodes among ``node_ids`` (all when ``None``) that pass
        ``filters`` (all when ``None``): with neither, every node."""
        with self._lock:
            self._remove(self._select(node_ids, filters))

    async def adelete_nodes(
        self,
        node_ids: Optional[list[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    def clear(self) -> None:
        """Removes every node. Unless ``dim`` was given, the next add may
        bring vectors of another width."""
        with self._lock:
            if self._index is not None:
                self._index.clear()
            if self._bm25 is not None:
                self._bm25.clear()

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    # -- reading ------------------------------------------------------------

    def _node_of(self, hit: Any) -> BaseNode:
        metadata = hit.metadata
        if "_node_content" not in metadata:
            # Hits of the keyword index and of fusion may carry only the id.
            full = self._index.get(hit.id)
            if full is None:
                raise KeyError(f"node {hit.id} vanished from the store during the query")
            hit = full
            metadata = hit.metadata
        return metadata_dict_to_node(metadata, text=hit.text)

    def get_nodes(
        self,
        node_ids: Optional[list[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> list[BaseNode]:
        """The stored nodes, with their embeddings: those among ``node_ids``
        (in that order; unknown ids are skipped) passing ``filters``."""
        index = self._index
        if index is None:
            return []
        ids = self._select(node_ids, filters)
        nodes = []
        kept = []
        for node_id in ids:
            hit = index.get(node_id)
            if hit is not None:  # deleted meanwhile by another thread
                nodes.append(metadata_dict_to_node(hit.metadata, text=hit.text))
                kept.append(node_id)
        if kept:
            for node, vector in zip(nodes, index.get_vectors(kept)):
                node.embedding = vector.tolist()
        return nodes

    async def aget_nodes(
        self,
        node_ids: Optional[list[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    def _result(
        self, hits: list[Any], scores: Optional[list[float]] = None
    ) -> VectorStoreQueryResult:
        nodes = [self._node_of(h) for h in hits]
        sims = [float(h.score) for h in hits] if scores is None else scores
        return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=[h.id for h in hits])

    def _dense(self, query: np.ndarray, k: int, where: Optional[dict], node_ids) -> list[Any]:
        index = self._index
        if node_ids is None:
            return index.search(query, k=k, filters=where)
        # Scores of a node_ids-restricted query come from a throwaway exact
        # index over those nodes, so they are computed as the main index does.
        passing = set(index.ids(where))
        chosen = [i for i in dict.fromkeys(node_ids) if i in passing]
        if not chosen:
            return []
        sub = ragjet.FlatIndex(index.dim, metric=self.metric)
        sub.add(chosen, np.ascontiguousarray(index.get_vectors(chosen), dtype=np.float32))
        return sub.search(query, k=k)  # id and score; _node_of fetches the rest

    def _keyword(self, text: str, k: int, where: Optional[dict], node_ids) -> list[Any]:
        bm25 = self._bm25
        if bm25 is None:
            raise ValueError(
                "SPARSE and HYBRID queries need the keyword index: "
                "create the store with enable_hybrid=True"
            )
        if not text:
            raise ValueError("a SPARSE or HYBRID query needs query_str")
        if where is None and node_ids is None:
            return bm25.search(text, k=k)
        passing = set(self._index.ids(where))
        if node_ids is not None:
            passing &= set(node_ids)
        if not passing:
            return []
        ranked = bm25.search(text, k=max(len(bm25), 1))
        return [h for h in ranked if h.id in passing][:k]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Runs a LlamaIndex query (see the class doc for modes and filters).

        Raises:
            ValueError: an unsupported mode, a vector mode without
                ``query_embedding``, a keyword mode without ``query_str`` or
                without the keyword index.
            ragjet.InvalidInputError: a malformed filter,
                ``similarity_top_k`` <= 0, a query vector of the wrong width.

        Where llama-index-core would raise ``TypeError`` on a node (a filter
        ordering a stored str against a number, say), the node is left out
        instead of failing the query.
        """
        if self._index is None or len(self._index) == 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        where = _and(
            filters_to_dict(query.filters),
            None
            if query.doc_ids is None
            else {"key": "ref_doc_id", "value": list(query.doc_ids), "operator": "in"},
        )
        if where is not None and "filters" not in where:
            where = {"filters": [where], "condition": "and"}
        mode = VectorStoreQueryMode(query.mode)
        k = query.similarity_top_k
        # An empty node_ids means no restriction, as in the Qdrant and Chroma
        # stores: VectorStoreIndex.as_retriever passes the ids its index
        # struct holds, none when the store keeps the nodes.
        node_ids = query.node_ids or None
        if mode in (VectorStoreQueryMode.SPARSE, VectorStoreQueryMode.TEXT_SEARCH):
            return self._result(
                self._keyword(query.query_str, query.sparse_top_k or k, where, node_ids)
            )
        if mode not in (
            VectorStoreQueryMode.DEFAULT,
            VectorStoreQueryMode.HYBRID,
            VectorStoreQueryMode.MMR,
        ):
            raise ValueError(
                f"RagjetVectorStore does not support query mode {mode.value!r}; "
                "it supports default, sparse, text_search, hybrid and mmr"
            )
        if query.query_embedding is None:
            raise ValueError(f"a {mode.value} query needs query_embedding")
        vector = np.asarray(query.query_embedding, dtype=np.float32)
        if mode == VectorStoreQueryMode.MMR:
            return self._mmr(
                vector, query.similarity_top_k, query.mmr_threshold, where, node_ids, kwargs
            )
        dense = self._dense(vector, k, where, node_ids)
        if mode == VectorStoreQueryMode.DEFAULT:
            return self._result(dense)
        keyword = self._keyword(query.query_str, query.sparse_top_k or k, where, node_ids)
        alpha = 0.5 if query.alpha is None else float(query.alpha)
        fused = ragjet.alpha_fusion(dense, keyword, alpha, query.hybrid_top_k or k)
        return self._result(fused)

    def _mmr(
        self,
        vector: np.ndarray,
        k: int,
        threshold: Optional[float],
        where: Optional[dict],
        node_ids: Optional[list[str]],
        kwargs: dict,
    ) -> VectorStoreQueryResult:
        if k <= 0:
            raise ragjet.InvalidInputError(f"similarity_top_k must be positive, not {k}")
        threshold = kwargs.get("mmr_threshold", threshold)
        threshold = 0.5 if threshold is None else float(threshold)
        prefetch = kwargs.get("mmr_prefetch_k")
        index = self._index
        if prefetch is not None:
            ids = [h.id for h in self._dense(vector, int(prefetch), where, node_ids)]
        else:
            ids = list(index.ids(where))
            if node_ids is not None:
                allowed = set(node_ids)
                ids = [i for i in ids if i in allowed]
        if not ids:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        vectors = np.asarray(index.get_vectors(ids), dtype=np.float64)
        scores, picked = _llama_mmr(vector.astype(np.float64), vectors, ids, k, threshold)
        hits = [index.get(i) for i in picked]
        return self._result(hits, scores)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)

    # -- persistence --------------------------------------------------------

    def _default_persist_path(self) -> str:
        directory = self.persist_dir or DEFAULT_PERSIST_DIR
        return os.path.join(directory, f"{self.namespace}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}")

    def persist(self, persist_path: Optional[str] = None, fs: Optional[Any] = None) -> None:
        """Writes the store: ``persist_path`` (``StorageContext.persist``
        passes ``<dir>/<namespace>__vector_store.json``) gets a JSON manifest,
        and the Rust indexes go beside it (``….index``, ``….bm25``). Each
        file is replaced atomically.

        Raises:
            NotImplementedError: ``fs`` is not the local file system.
            ragjet.StorageError: a file cannot be written.
        """
        _check_local(fs)
        path = os.fspath(persist_path) if persist_path is not None else self._default_persist_path()
        base = path[: -len(".json")] if path.endswith(".json") else path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        files: dict[str, Optional[str]] = {"index": None, "bm25": None}
        with self._lock:
            if self._index is not None:
                files["index"] = os.path.basename(base) + ".index"
                self._index.save(os.path.join(directory, files["index"]))
            if self._bm25 is not None:
                files["bm25"] = os.path.basename(base) + ".bm25"
                self._bm25.save(os.path.join(directory, files["bm25"]))
            manifest = {
                "format": MANIFEST_FORMAT,
                "version": MANIFEST_VERSION,
                "settings": self._settings(),
                "files": files,
            }
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _settings(self) -> dict:
        return {
            "index": self.index,
            "metric": self.metric,
            "dim": self.dim,
            "dim_given": self._dim_given,
            "namespace": self.namespace,
            "enable_hybrid": self.enable_hybrid,
            "storage": self.storage,
            "m": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "bm25_k1": self.bm25_k1,
            "bm25_b": self.bm25_b,
        }

    def _load_files(self, manifest_path: str) -> None:
        manifest = _read_manifest(manifest_path)
        settings = manifest["settings"]
        for name in (
            "index",
            "metric",
            "dim",
            "namespace",
            "enable_hybrid",
            "storage",
            "m",
            "ef_construction",
            "ef_search",
            "bm25_k1",
            "bm25_b",
        ):
            setattr(self, name, settings[name])
        self._dim_given = bool(settings.get("dim_given"))
        directory = os.path.dirname(os.path.abspath(manifest_path))
        files = manifest["files"]
        cls = ragjet.HnswIndex if self.index == "hnsw" else ragjet.FlatIndex
        self._index = (
            cls.load(os.path.join(directory, files["index"])) if files.get("index") else None
        )
        if self._index is not None and self.index == "hnsw":
            self._index.ef_search = self.ef_search
        if self.enable_hybrid:
            self._bm25 = (
                ragjet.Bm25Index.load(os.path.join(directory, files["bm25"]))
                if files.get("bm25")
                else ragjet.Bm25Index(k1=self.bm25_k1, b=self.bm25_b)
            )
        else:
            self._bm25 = None

    @classmethod
    def from_persist_path(cls, persist_path: str, fs: Optional[Any] = None) -> "RagjetVectorStore":
        """Loads a store from the manifest ``persist`` wrote.

        Raises:
            ValueError: no manifest there, or not one of ``RagjetVectorStore``.
            ragjet.StorageError: an index file is missing or corrupt.
        """
        _check_local(fs)
        persist_path = os.fspath(persist_path)
        if not os.path.exists(persist_path):
            raise ValueError(f"no RagjetVectorStore persisted at {persist_path}")
        settings = _read_manifest(persist_path)["settings"]
        store = cls(
            index=settings["index"],
            metric=settings["metric"],
            namespace=settings["namespace"],
            enable_hybrid=settings["enable_hybrid"],
        )
        store._load_files(persist_path)
        store.persist_dir = os.path.dirname(os.path.abspath(persist_path))
        name = os.path.basename(persist_path)
        suffix = NAMESPACE_SEP + DEFAULT_PERSIST_FNAME
        if name.endswith(suffix) and len(name) > len(suffix):
            store.namespace = name[: -len(suffix)]  # persist() then writes back here
        return store

    @classmethod
    def from_persist_dir(
        cls,
        persist_dir: str = DEFAULT_PERSIST_DIR,
        namespace: str = DEFAULT_NAMESPACE,
        fs: Optional[Any] = None,
    ) -> "RagjetVectorStore":
        """Loads the store ``StorageContext.persist(persist_dir=...)`` wrote
        for the storage namespace ``namespace`` (``"default"`` unless the
        storage context was given ``vector_stores={name: store}``)."""
        path = os.path.join(
            os.fspath(persist_dir), f"{namespace}{NAMESPACE_SEP}{DEFAULT_PERSIST_FNAME}"
        )
        return cls.from_persist_path(path, fs=fs)


def _read_manifest(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a RagjetVectorStore manifest: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(
            f"{path} was not written by RagjetVectorStore.persist "
            "(a SimpleVectorStore file? load it with SimpleVectorStore)"
        )
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(
            f"{path} has manifest version {manifest.get('version')}; "
            f"this ragjet reads version {MANIFEST_VERSION}"
        )
    return manifest


def _check_local(fs: Optional[Any]) -> None:
    if fs is None:
        return
    protocol = getattr(fs, "protocol", "file")
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    if not set(protocols) & {"file", "local"}:
        raise NotImplementedError(
            f"RagjetVectorStore persists to the local file system only, not {protocols}"
        )
