"""Scale-out on Ray: bulk embedding with Ray Data, sharded indexes written
to a shared path, and one search over all the shards.

>>> import ray, ragjet.ray
>>> ds = ray.data.read_json("corpus.jsonl")               # {"id", "text"}
>>> ds = ragjet.ray.embed(ds, column="text", concurrency=4)  # + "embedding"
>>> ragjet.ray.build_index(ds, shards=4, path="/shared/idx")
>>> index = ragjet.ray.ShardedIndex("/shared/idx")
>>> hits = index.search(ragjet.Embedder().embed("a query"), k=10)

Needs Ray Data (``pip install "ragjet[ray]"``). A shard is a normal saved
``FlatIndex`` or ``HnswIndex``; ``manifest.json`` beside the shards says how
entries were partitioned, so writes reach the shard that owns the entry.
See ``docs/scale-out.md`` for when to shard and how to size actors.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import pathlib
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import ragjet

try:
    import ray
    import ray.data
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        'ragjet.ray needs Ray Data: pip install "ragjet[ray]" (or "ray[data]")'
    ) from err

__all__ = ["EmbedBatches", "ShardedIndex", "build_index", "embed", "shard_of"]

MANIFEST = "manifest.json"
FORMAT = "ragjet-sharded-index"


def _hash64(key: str) -> int:
    # BLAKE2b, not hash(): Python salts str hashes per process, so two
    # workers (or two runs) would route the same id to different shards.
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def shard_of(key: Any, shards: int) -> int:
    """The shard owning ``key`` (an id, or a namespace/tenant value) among
    ``shards``: a stable 64-bit BLAKE2b hash of ``str(key)``, modulo
    ``shards``, the same in every process and run."""
    if shards < 1:
        raise ragjet.InvalidInputError(f"shards must be at least 1, not {shards}")
    return _hash64(str(key)) % shards


# --------------------------------------------------------------------------
# Bulk embedding


class EmbedBatches:
    """The callable class ``embed`` hands to ``Dataset.map_batches``: Ray
    builds one per actor, so the model is loaded once per actor and reused
    for every batch that actor receives. Usable in your own pipelines too."""

    def __init__(
        self,
        column: str,
        output_column: str,
        make_embedder: Callable[[], ragjet.Embedder],
        embed_kwargs: Mapping[str, Any],
    ) -> None:
        self.column = column
        self.output_column = output_column
        self.embedder = make_embedder()
        self.embed_kwargs = dict(embed_kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise ragjet.InvalidInputError(
                f"the dataset has no column {self.column!r} (columns: {sorted(batch)})"
            )
        texts = batch[self.column].tolist()
        batch[self.output_column] = self.embedder.embed(texts, **self.embed_kwargs)
        return batch


class _DefaultEmbedder:
    """A picklable factory for ``ragjet.Embedder(**kwargs)``."""

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self.kwargs = dict(kwargs)

    def __call__(self) -> ragjet.Embedder:
        return ragjet.Embedder(**self.kwargs)


def embed(
    dataset: ray.data.Dataset,
    column: str = "text",
    *,
    output_column: str = "embedding",
    model_dir: str | os.PathLike[str] | None = None,
    concurrency: int | tuple[int, int] = 1,
    num_cpus: float = 1,
    num_gpus: float = 0,
    batch_size: int = 256,
    num_threads: int | None = None,
    make_embedder: Callable[[], ragjet.Embedder] | None = None,
    embed_kwargs: Mapping[str, Any] | None = None,
    **embedder_kwargs: Any,
) -> ray.data.Dataset:
    """The dataset with ``output_column`` added: the float32 embedding of
    each row's ``column`` text (a tensor column of shape (dim,)).

    Runs ``Dataset.map_batches`` over an actor pool of ``concurrency``
    actors (an int, or Ray's ``(min, max)`` autoscaling pair), each
    reserving ``num_cpus`` CPUs and ``num_gpus`` GPUs and holding one
    ``Embedder`` for its lifetime. On CPUs give each actor the cores it
    reserves (``num_threads`` defaults to ``num_cpus``) rather than many
    one-core actors: each actor holds the model's weights. With
    ``num_gpus=1`` Ray sets ``CUDA_VISIBLE_DEVICES`` per actor, so
    ``device="auto"`` lands every actor on its own GPU.

    ``model_dir`` and ``embedder_kwargs`` go to ``ragjet.Embedder``;
    ``make_embedder`` (a picklable zero-argument callable returning an
    ``Embedder``) replaces them when building the model needs more.
    ``embed_kwargs`` go to each ``Embedder.embed`` call (``prompt_name``,
    ``normalize``...). ``batch_size`` is rows per Ray batch; the embedder
    still batches by tokens inside it.
    """
    if make_embedder is None:
        kwargs = dict(embedder_kwargs)
        kwargs["model_dir"] = model_dir
        if num_threads is None and num_gpus == 0:
            num_threads = max(1, int(num_cpus))
        kwargs["num_threads"] = num_threads
        make_embedder = _DefaultEmbedder(kwargs)
    elif model_dir is not None or embedder_kwargs or num_threads is not None:
        raise ragjet.InvalidInputError(
            "make_embedder replaces model_dir, num_threads and Embedder options: "
            "pass one or the other"
        )
    return dataset.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "column": column,
            "output_column": output_column,
            "make_embedder": make_embedder,
            "embed_kwargs": dict(embed_kwargs or {}),
        },
        batch_format="numpy",
        batch_size=batch_size,
        compute=_actor_pool(concurrency),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
    )


def _actor_pool(concurrency: int | tuple[int, int]) -> ray.data.ActorPoolStrategy:
    if isinstance(concurrency, tuple):
        low, high = concurrency
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ray.data.ActorPoolStrategy(size=concurrency)


# --------------------------------------------------------------------------
# Sharded build


def _new_index(settings: Mapping[str, Any], dim: int) -> ragjet.FlatIndex | ragjet.HnswIndex:
    if settings["index"] == "flat":
        return ragjet.FlatIndex(dim, metric=settings["metric"], storage=settings["storage"])
    return ragjet.HnswIndex(
        dim,
        metric=settings["metric"],
        m=settings["m"],
        ef_construction=settings["ef_construction"],
        ef_search=settings["ef_search"],
    )


def _load_index(settings: Mapping[str, Any], path: pathlib.Path):
    if settings["index"] == "flat":
        return ragjet.FlatIndex.load(path)
    return ragjet.HnswIndex.load(path)


def _shard_dir(shard: int) -> str:
    return f"shard-{shard:04d}"


class _WriteParts:
    """Phase one of ``build_index``: each Ray batch writes, per shard it
    touches, one part (``.npy`` vectors and a JSON of ids, texts, metadata)
    under the build's scratch folder. Ray's own shuffle (``groupby``)
    costs seconds of fixed overhead per build; parts on the shared path
    cost one file write each."""

    def __init__(self, scratch: str, key_column: str, shards: int, settings: Mapping[str, Any]):
        self.scratch = pathlib.Path(scratch)
        self.key_column = key_column
        self.shards = shards
        self.settings = settings

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        st = self.settings
        for column in [self.key_column, st["id_column"], st["vector_column"], *_row_columns(st)]:
            if column not in batch:
                raise ragjet.InvalidInputError(
                    f"the dataset has no column {column!r} (columns: {sorted(batch)})"
                )
        keys = batch[self.key_column].tolist()
        owner = np.array([shard_of(k, self.shards) for k in keys], dtype=np.int64)
        vectors = np.stack(list(batch[st["vector_column"]])).astype(np.float32, copy=False)
        shards, rows = [], []
        for shard in np.unique(owner).tolist():
            pick = np.flatnonzero(owner == shard)
            part = {
                "ids": [str(i) for i in batch[st["id_column"]][pick].tolist()],
                "texts": _column(batch, st["text_column"], pick),
                "refs": _column(batch, st["ref_doc_column"], pick),
                "metadata": [{c: _plain(batch[c][i]) for c in st["metadata_columns"]} for i in pick]
                if st["metadata_columns"]
                else None,
            }
            folder = self.scratch / _shard_dir(shard)
            folder.mkdir(parents=True, exist_ok=True)
            name = uuid.uuid4().hex
            np.save(folder / f"{name}.npy", np.ascontiguousarray(vectors[pick]))
            (folder / f"{name}.json").write_text(json.dumps(part))
            shards.append(shard)
            rows.append(len(pick))
        return {"shard": np.array(shards, dtype=np.int64), "rows": np.array(rows, dtype=np.int64)}


def _row_columns(settings: Mapping[str, Any]) -> list[str]:
    named = [settings["text_column"], settings["ref_doc_column"]]
    return [c for c in named if c is not None] + list(settings["metadata_columns"])


def _column(batch: Mapping[str, np.ndarray], column: str | None, pick: np.ndarray):
    if column is None:
        return None
    return [_opt_str(v) for v in batch[column][pick].tolist()]


def _plain(value: Any) -> Any:
    # Ray hands cells over as numpy values; JSON and metadata want Python's.
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def _build_shard(
    scratch: str, root: str, shard: int, settings: Mapping[str, Any]
) -> tuple[int, list[str]]:
    """Phase two: one shard's parts into one saved index; returns its size
    (and its ids when partitioned by a column)."""
    folder = pathlib.Path(scratch) / _shard_dir(shard)
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []
    ids: list[str] = []
    texts: list[str | None] = []
    refs: list[str | None] = []
    metadata: list[dict[str, Any]] = []
    vectors = []
    for name in names:
        part = json.loads((folder / f"{name}.json").read_text())
        ids += part["ids"]
        texts += part["texts"] or [None] * len(part["ids"])
        refs += part["refs"] or [None] * len(part["ids"])
        metadata += part["metadata"] or [{}] * len(part["ids"])
        vectors.append(np.load(folder / f"{name}.npy"))
    index = _new_index(settings, settings["dim"])
    if ids:
        # The one insertion order every shard count shares (see
        # ShardedIndex): by the id's stable hash, then the id.
        order = sorted(range(len(ids)), key=lambda i: (_hash64(ids[i]), ids[i]))
        matrix = np.ascontiguousarray(np.concatenate(vectors)[order], dtype=np.float32)
        index.add(
            [ids[i] for i in order],
            matrix,
            metadata=[metadata[i] for i in order] if settings["metadata_columns"] else None,
            texts=[texts[i] for i in order] if settings["text_column"] else None,
            ref_doc_ids=[refs[i] for i in order] if settings["ref_doc_column"] else None,
        )
    index.save(pathlib.Path(root) / _shard_dir(shard))
    # Partitioned by a column, one id could land in two shards: the caller
    # checks the ids across shards.
    return len(index), ids if settings["partition_by"] else []


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _write_manifest(root: pathlib.Path, manifest: Mapping[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)


def build_index(
    dataset: ray.data.Dataset,
    shards: int,
    path: str | os.PathLike[str],
    *,
    id_column: str = "id",
    vector_column: str = "embedding",
    text_column: str | None = "text",
    metadata_columns: Sequence[str] = (),
    ref_doc_column: str | None = None,
    partition_by: str | None = None,
    index: str = "flat",
    metric: str = "cosine",
    storage: str = "f32",
    m: int = 16,
    ef_construction: int = 200,
    ef_search: int = 64,
) -> dict[str, Any]:
    """Writes ``shards`` indexes (``shard-0000`` ...) and ``manifest.json``
    under ``path``, which every Ray worker must see (a shared filesystem);
    returns the manifest.

    Rows go to the shard given by the stable hash of their id
    (``shard_of``), or of the ``partition_by`` column (a namespace or
    tenant: all of its rows in one shard). ``metadata_columns`` become each
    entry's metadata; ``text_column`` and ``ref_doc_column`` (``None`` for
    none) its text and source document. ``index`` is ``"flat"`` (exact) or
    ``"hnsw"`` (with ``m``, ``ef_construction``, ``ef_search``). Each shard
    is built in one Ray task holding that shard's rows, so a shard must fit
    in a worker's memory, as it must to be served. Refuses a ``path`` that
    already holds a manifest.
    """
    if shards < 1:
        raise ragjet.InvalidInputError(f"shards must be at least 1, not {shards}")
    if index not in ("flat", "hnsw"):
        raise ragjet.InvalidInputError(f'index must be "flat" or "hnsw", not {index!r}')
    root = pathlib.Path(path)
    if (root / MANIFEST).exists():
        raise ragjet.InvalidInputError(f"{root} already holds a sharded index")
    root.mkdir(parents=True, exist_ok=True)
    key = partition_by or id_column
    settings = {
        "index": index,
        "metric": metric,
        "storage": storage,
        "m": m,
        "ef_construction": ef_construction,
        "ef_search": ef_search,
        "id_column": id_column,
        "vector_column": vector_column,
        "text_column": text_column,
        "metadata_columns": list(metadata_columns),
        "ref_doc_column": ref_doc_column,
        "partition_by": partition_by,
    }
    if partition_by is not None and partition_by not in metadata_columns:
        raise ragjet.InvalidInputError(
            f"partition_by={partition_by!r} must be one of metadata_columns, "
            "so writes can be routed"
        )
    _new_index(settings, 1)  # bad metric/storage/HNSW settings fail here, before any work
    scratch = root / f".build-{uuid.uuid4().hex}"
    try:
        written = dataset.map_batches(
            _WriteParts(str(scratch), key, shards, settings), batch_format="numpy"
        ).take_all()
        if not written:
            raise ragjet.InvalidInputError("the dataset is empty: nothing fixes the vector width")
        dims = {np.load(p, mmap_mode="r").shape[1] for p in scratch.glob("*/*.npy")}
        if len(dims) != 1:
            raise ragjet.InvalidInputError(f"vectors of different widths: {sorted(dims)}")
        settings["dim"] = dims.pop()
        build = ray.remote(_build_shard)
        built = ray.get([build.remote(str(scratch), str(root), s, settings) for s in range(shards)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    counts = [n for n, _ in built]
    if partition_by is not None:
        seen: set[str] = set()
        for _, ids in built:
            twice = seen.intersection(ids)
            if twice:
                for s in range(shards):
                    shutil.rmtree(root / _shard_dir(s), ignore_errors=True)
                raise ragjet.InvalidInputError(
                    f"ids in two partitions: {sorted(twice)[:5]} (ids must be unique)"
                )
            seen.update(ids)
    dim = settings["dim"]
    manifest = {
        "format": FORMAT,
        "version": 1,
        "shards": [_shard_dir(s) for s in range(shards)],
        "partition_by": partition_by,
        "hash": "blake2b-64",
        "index": index,
        "metric": metric,
        "storage": storage,
        "m": m,
        "ef_construction": ef_construction,
        "ef_search": ef_search,
        "dim": dim,
        "counts": counts,
        "appended": [],
    }
    _write_manifest(root, manifest)
    return manifest


# --------------------------------------------------------------------------
# Searching the shards together


class _Shard:
    """One loaded shard; runs in the caller's process or as a Ray actor.
    Hits cross as tuples, since ``ragjet.Hit`` does not pickle."""

    def __init__(self, settings: Mapping[str, Any], path: str) -> None:
        self.path = pathlib.Path(path)
        self.index = _load_index(settings, self.path)

    def search(self, query: np.ndarray, k: int, filters: Any) -> list[list[tuple]]:
        res = self.index.search(query, k=k, filters=filters)
        if query.ndim == 1:
            res = [res]
        return [[_hit_tuple(h) for h in hits] for hits in res]

    def add(self, ids, vectors, metadata, texts, ref_doc_ids) -> None:
        self.index.add(ids, vectors, metadata=metadata, texts=texts, ref_doc_ids=ref_doc_ids)

    def contains(self, ids: Sequence[str]) -> list[bool]:
        return [i in self.index for i in ids]

    def delete(self, ids: Sequence[str]) -> int:
        return self.index.delete(list(ids))

    def delete_ref_doc(self, ref_doc_id: str) -> int:
        return self.index.delete_ref_doc(ref_doc_id)

    def get(self, id: str) -> tuple | None:
        hit = self.index.get(id)
        return None if hit is None else _hit_tuple(hit)

    def ids(self, filters: Any) -> list[str]:
        return self.index.ids(filters)

    def size(self) -> int:
        return len(self.index)

    def set_ef_search(self, value: int) -> None:
        self.index.ef_search = value

    def save(self) -> None:
        self.index.save(self.path)


def _hit_tuple(h: ragjet.Hit) -> tuple:
    return (h.id, h.score, h.text, h.metadata, h.ref_doc_id)


def _hit(t: tuple) -> ragjet.Hit:
    return ragjet.Hit(t[0], t[1], t[2], t[3], t[4])


def _filters_for_transport(filters: Any) -> Any:
    # A LlamaIndex MetadataFilters becomes its dict shape, which the shards
    # read the same way, so actors need not import llama-index.
    dump = getattr(filters, "model_dump", None)
    return dump() if callable(dump) else filters


class ShardedIndex:
    """The shards written by ``build_index``, searched as one index.

    ``search`` asks every shard for its best ``k`` and merges them: with
    flat shards the result is exactly a single ``FlatIndex``'s over the
    same entries (same ids, same scores), and equal scores come out in the
    order a single index built by ``build_index(..., shards=1)`` gives them
    (by the id's stable hash, then entries added later in the order they
    came). After deletes a single index moves its last entry into the freed
    slot, so exact ties involving such moved entries may differ. HNSW shards
    merge each shard's approximate answer.

    ``add`` (upsert) and ``delete`` go to the owning shard; ``filters`` are
    applied by every shard. ``ray_actors=True`` runs one Ray actor per shard
    (``num_cpus`` each), for shards that do not fit one process; otherwise
    all shards load in this process. Changes stay in memory until ``save``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ray_actors: bool = False,
        num_cpus: float | None = None,
    ) -> None:
        self.path = pathlib.Path(path)
        manifest_path = self.path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise ragjet.StorageError(f"{manifest_path} not found: not a sharded index") from None
        except json.JSONDecodeError as err:
            raise ragjet.StorageError(f"{manifest_path} is damaged: {err}") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != 1:
            raise ragjet.StorageError(f"{manifest_path} is not a version-1 {FORMAT} manifest")
        self._manifest = manifest
        self._partition_by = manifest["partition_by"]
        dirs = [str(self.path / d) for d in manifest["shards"]]
        self._actors = ray_actors
        if ray_actors:
            remote = ray.remote(_Shard)
            opts = {} if num_cpus is None else {"num_cpus": num_cpus}
            self._shards = [remote.options(**opts).remote(manifest, d) for d in dirs]
        else:
            self._shards = [_Shard(manifest, d) for d in dirs]
        # Insertion order of entries added after the build: their tie rank.
        self._appended = {id: n for n, id in enumerate(manifest["appended"])}
        self._next = len(manifest["appended"])
        self._call_all("size")  # an actor that failed to load fails here

    # -- plumbing ----------------------------------------------------------

    def _call(self, shard: int, method: str, *args: Any) -> Any:
        target = self._shards[shard]
        if self._actors:
            return ray.get(getattr(target, method).remote(*args))
        return getattr(target, method)(*args)

    def _call_all(self, method: str, *args: Any) -> list[Any]:
        if self._actors:
            return ray.get([getattr(s, method).remote(*args) for s in self._shards])
        return [getattr(s, method)(*args) for s in self._shards]

    def _tie_key(self, id: str) -> tuple:
        n = self._appended.get(id)
        return (0, _hash64(id), id) if n is None else (1, n, id)

    # -- reading -----------------------------------------------------------

    @property
    def shards(self) -> int:
        """Number of shards."""
        return len(self._shards)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._manifest["dim"])

    @property
    def metric(self) -> str:
        """Similarity metric."""
        return self._manifest["metric"]

    @property
    def partition_by(self) -> str | None:
        """The metadata key entries are partitioned by, or ``None`` (the id)."""
        return self._partition_by

    def search(
        self, query: np.ndarray, k: int = 10, filters: Any = None
    ) -> list[ragjet.Hit] | list[list[ragjet.Hit]]:
        """The ``k`` best entries passing ``filters`` over all shards: a
        (dim,) query gives a list of hits, a (q, dim) matrix a list per query."""
        query = np.asarray(query)
        per_shard = self._call_all("search", query, k, _filters_for_transport(filters))
        merged = []
        for qi in range(len(per_shard[0])):
            candidates = (t for shard in per_shard for t in shard[qi])
            best = heapq.nsmallest(k, candidates, key=lambda t: (-t[1], self._tie_key(t[0])))
            merged.append([_hit(t) for t in best])
        return merged[0] if query.ndim == 1 else merged

    def get(self, id: str) -> ragjet.Hit | None:
        """The stored entry as a hit with score 0.0, or ``None``."""
        if self._partition_by is None:
            t = self._call(shard_of(id, self.shards), "get", id)
        else:
            t = next((t for t in self._call_all("get", id) if t is not None), None)
        return None if t is None else _hit(t)

    def ids(self, filters: Any = None) -> list[str]:
        """Ids of the entries passing ``filters``, shard by shard."""
        f = _filters_for_transport(filters)
        return [i for part in self._call_all("ids", f) for i in part]

    def __len__(self) -> int:
        return sum(self._call_all("size"))

    def __contains__(self, id: str) -> bool:
        return self._owner_of([id])[0] is not None

    def _owner_of(self, ids: Sequence[str]) -> list[int | None]:
        """The shard holding each id, or ``None``."""
        if self._partition_by is None:
            owners = [shard_of(i, self.shards) for i in ids]
            present: dict[str, bool] = {}
            for s in sorted(set(owners)):
                mine = [i for i, o in zip(ids, owners) if o == s]
                present.update(zip(mine, self._call(s, "contains", mine)))
            return [o if present[i] else None for i, o in zip(ids, owners)]
        flags = self._call_all("contains", list(ids))
        return [next((s for s, f in enumerate(flags) if f[n]), None) for n in range(len(ids))]

    # -- writing -----------------------------------------------------------

    def add(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        texts: Sequence[str | None] | None = None,
        ref_doc_ids: Sequence[str | None] | None = None,
    ) -> None:
        """Upserts entries into their owning shards, all or nothing: the
        whole batch is first checked by a scratch ``FlatIndex``, so a bad
        row changes no shard. With ``partition_by``, each entry's metadata
        must hold that key; an entry whose key moved it is taken out of its
        old shard."""
        ids = list(ids)
        check = ragjet.FlatIndex(self.dim, metric=self.metric)
        check.add(ids, vectors, metadata=metadata, texts=texts, ref_doc_ids=ref_doc_ids)
        if self._partition_by is None:
            targets = [shard_of(i, self.shards) for i in ids]
        else:
            key = self._partition_by
            targets = []
            for n, meta in enumerate(metadata or [None] * len(ids)):
                if not meta or key not in meta:
                    raise ragjet.InvalidInputError(
                        f"entry {n} ({ids[n]!r}): metadata lacks the partition key {key!r}"
                    )
                targets.append(shard_of(meta[key], self.shards))
        owners = self._owner_of(ids)
        for i, owner, target in zip(ids, owners, targets):
            if owner is not None and owner != target:
                self._call(owner, "delete", [i])
        for s in sorted(set(targets)):
            rows = [n for n, t in enumerate(targets) if t == s]
            self._call(
                s,
                "add",
                [ids[n] for n in rows],
                np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[rows]),
                None if metadata is None else [metadata[n] for n in rows],
                None if texts is None else [texts[n] for n in rows],
                None if ref_doc_ids is None else [ref_doc_ids[n] for n in rows],
            )
        for i, owner in zip(ids, owners):
            if owner is None:
                self._appended[i] = self._next
                self._next += 1

    def delete(self, ids: Iterable[str]) -> int:
        """Deletes entries by id from their shards; returns how many existed."""
        ids = list(ids)
        removed = 0
        owners = self._owner_of(ids)
        for s in sorted({o for o in owners if o is not None}):
            removed += self._call(s, "delete", [i for i, o in zip(ids, owners) if o == s])
        for i, o in zip(ids, owners):
            if o is not None:
                self._appended.pop(i, None)
        return removed

    def delete_ref_doc(self, ref_doc_id: str) -> int:
        """Deletes the entries of one source document in every shard;
        returns how many."""
        removed = sum(self._call_all("delete_ref_doc", ref_doc_id))
        if removed and self._appended:
            appended = list(self._appended)
            for i, owner in zip(appended, self._owner_of(appended)):
                if owner is None:
                    del self._appended[i]
        return removed

    @property
    def ef_search(self) -> int:
        """HNSW shards: candidate list size while searching (settable)."""
        return int(self._manifest["ef_search"])

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self._manifest["index"] != "hnsw":
            raise ragjet.InvalidInputError("ef_search applies to HNSW shards only")
        self._call_all("set_ef_search", value)
        self._manifest["ef_search"] = value

    def save(self) -> None:
        """Saves every shard in place (each crash-safe), then the manifest."""
        self._call_all("save")
        self._manifest["counts"] = self._call_all("size")
        self._manifest["appended"] = sorted(self._appended, key=self._appended.__getitem__)
        _write_manifest(self.path, self._manifest)

    def close(self) -> None:
        """Ends the shard actors (``ray_actors=True``); unsaved changes are lost."""
        if self._actors:
            for a in self._shards:
                ray.kill(a)
            self._shards = []

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
