"""RagjetReranker: LlamaIndex's node postprocessor on ragjet.CrossEncoder, run
on the tiny cross-encoder the Rust tests check against transformers."""

import asyncio
import json
import pathlib
from collections import defaultdict

import numpy as np
import pytest
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

import ragjet
from ragjet.llama_index import RagjetReranker

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY = ROOT / "crates/ragjet-inference/tests/fixtures/tiny-cross-encoder"


@pytest.fixture(scope="module")
def reference():
    """The query with the most reference passages, and transformers' logits
    for each (query, passage) pair."""
    data = json.loads((TINY / "reference.json").read_text())
    pairs = [r for r in data["references"] if r["max_length"] is None][0]["pairs"]
    by_query = defaultdict(list)
    for pair in pairs:
        by_query[pair["query"]].append((pair["passage"], pair["logit"]))
    query = max(by_query, key=lambda q: len(by_query[q]))
    return query, by_query[query]


def scored_nodes(passages):
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=text), score=1.0 - i / 100)
        for i, text in enumerate(passages)
    ]


def test_reranks_by_the_cross_encoder_and_keeps_top_n(reference):
    query, rows = reference
    assert len(rows) >= 3
    reranker = RagjetReranker(top_n=2, model_dir=TINY)
    assert isinstance(reranker, BaseNodePostprocessor)
    nodes = scored_nodes([p for p, _ in rows])
    kept = reranker.postprocess_nodes(nodes, query_str=query)
    logits = np.array([logit for _, logit in rows])
    expected = [f"n{i}" for i in np.argsort(-logits, kind="stable")[:2]]
    assert [n.node.node_id for n in kept] == expected
    predicted = reranker.cross_encoder.predict([(query, p) for p, _ in rows])
    for node in kept:
        i = int(node.node.node_id[1:])
        assert node.score == pytest.approx(float(predicted[i]), abs=1e-6)
    assert kept[0].score >= kept[1].score


def test_keep_retrieval_score_and_top_n_larger_than_the_input(reference):
    query, rows = reference
    reranker = RagjetReranker(top_n=50, model_dir=TINY, keep_retrieval_score=True)
    nodes = scored_nodes([p for p, _ in rows])
    retrieval = {n.node.node_id: n.score for n in nodes}
    kept = reranker.postprocess_nodes(nodes, query_bundle=QueryBundle(query))
    assert len(kept) == len(rows)
    assert all(n.node.metadata["retrieval_score"] == retrieval[n.node.node_id] for n in kept)
    assert [n.score for n in kept] == sorted((n.score for n in kept), reverse=True)


def test_async_and_empty_input(reference):
    query, rows = reference
    reranker = RagjetReranker(top_n=3, model_dir=TINY)
    nodes = scored_nodes([p for p, _ in rows])
    sync = [
        n.node.node_id
        for n in reranker.postprocess_nodes(scored_nodes([p for p, _ in rows]), query_str=query)
    ]
    kept = asyncio.run(reranker.apostprocess_nodes(nodes, query_str=query))
    assert [n.node.node_id for n in kept] == sync
    assert reranker.postprocess_nodes([], query_str=query) == []


def test_missing_model_and_missing_query_are_clear_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("RAGJET_RERANKER_MODEL_DIR", raising=False)
    with pytest.raises(ragjet.ModelLoadError, match="model_dir"):
        RagjetReranker()
    with pytest.raises(ragjet.ModelLoadError):
        RagjetReranker(model_dir=tmp_path / "none")
    monkeypatch.setenv("RAGJET_RERANKER_MODEL_DIR", str(TINY))
    reranker = RagjetReranker(top_n=1)
    assert reranker.model_dir == str(TINY)
    with pytest.raises(ValueError, match="query"):
        reranker.postprocess_nodes(scored_nodes(["a passage"]))
