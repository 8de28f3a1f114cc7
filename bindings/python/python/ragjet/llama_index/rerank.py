"""``RagjetReranker``: a LlamaIndex node postprocessor on ``ragjet.CrossEncoder``."""

import asyncio
import os
from pathlib import Path
from typing import Any, Optional, Union

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

import ragjet

__all__ = ["RERANKER_DIR_ENV", "RagjetReranker"]

#: Environment variable naming the cross-encoder folder used when
#: ``model_dir`` is not given (ragjet ships no default reranker model).
RERANKER_DIR_ENV = "RAGJET_RERANKER_MODEL_DIR"

dispatcher = get_dispatcher(__name__)


class RagjetReranker(BaseNodePostprocessor):
    """Reorders retrieved nodes by a cross-encoder's relevance scores, the
    way LlamaIndex's ``SentenceTransformerRerank`` does, on ragjet's Rust
    ``CrossEncoder`` (BERT cross-encoders such as
    ``cross-encoder/ms-marco-MiniLM-L-6-v2``, read from a local folder).

    ``model_dir=None`` reads ``$RAGJET_RERANKER_MODEL_DIR``. Each call scores
    every (query, node text) pair in one batched Rust call with the GIL
    released, keeps the ``top_n`` best, and sets their ``score`` to the
    cross-encoder's; ``keep_retrieval_score=True`` keeps the retriever's
    score in ``node.metadata["retrieval_score"]``.
    """

    top_n: int = Field(default=2, description="Nodes kept after reranking.", gt=0)
    model_dir: str = Field(description="Folder of the cross-encoder model.")
    keep_retrieval_score: bool = Field(
        default=False, description="Keep the retrieval score in node metadata."
    )

    _model: Any = PrivateAttr()

    def __init__(
        self,
        top_n: int = 2,
        model_dir: Optional[Union[str, Path]] = None,
        *,
        batch_size: int = 32,
        activation: Optional[str] = None,
        keep_retrieval_score: bool = False,
        cross_encoder: Optional[Any] = None,
        **kwargs: Any,
    ) -> None:
        """Loads the model (or adopts ``cross_encoder``, a loaded
        ``ragjet.CrossEncoder``; ``model_dir`` is then only a label).

        Raises:
            ragjet.ModelLoadError: no ``model_dir`` and no
                ``$RAGJET_RERANKER_MODEL_DIR``, or the folder cannot be loaded.
        """
        if model_dir is None:
            model_dir = os.environ.get(RERANKER_DIR_ENV)
        if cross_encoder is None:
            if not model_dir:
                raise ragjet.ModelLoadError(
                    "RagjetReranker needs a cross-encoder folder: pass model_dir= "
                    "(e.g. a local copy of cross-encoder/ms-marco-MiniLM-L-6-v2) "
                    f"or set {RERANKER_DIR_ENV}"
                )
            cross_encoder = ragjet.CrossEncoder(
                str(model_dir), batch_size=batch_size, activation=activation
            )
        super().__init__(
            top_n=top_n,
            model_dir=str(model_dir or ""),
            keep_retrieval_score=keep_retrieval_score,
            **kwargs,
        )
        self._model = cross_encoder

    @classmethod
    def class_name(cls) -> str:
        return "RagjetReranker"

    @property
    def cross_encoder(self) -> Any:
        """The ``ragjet.CrossEncoder`` doing the scoring."""
        return self._model

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("RagjetReranker needs the query (query_bundle or query_str)")
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n,
                model_name=self.model_dir,
            )
        )
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        passages = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model_dir,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            ranked = self._model.rerank(query_bundle.query_str, passages, top_n=self.top_n)
            kept: list[NodeWithScore] = []
            for position, score in ranked:
                node = nodes[position]
                if self.keep_retrieval_score:
                    node.node.metadata["retrieval_score"] = node.score
                node.score = float(score)
                kept.append(node)
            event.on_end(payload={EventPayload.NODES: kept})
        dispatcher.event(ReRankEndEvent(nodes=kept))
        return kept

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: Optional[QueryBundle] = None,
    ) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)
