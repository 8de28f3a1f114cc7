"""FlatIndex and RagjetVectorStore with int8 and binary storage: the
compressed scan plus exact rescore gives the f32 index's hits and scores on
the fixture embeddings, and the kind survives save and load."""

import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery

import ragjet
from ragjet.llama_index import RagjetVectorStore


@pytest.mark.parametrize("storage", ["int8", "binary"])
def test_quantized_flat_index_matches_f32_and_round_trips(fixtures, tmp_path, storage):
    passages = np.load(fixtures / "minilm_reference.npy")
    queries = np.load(fixtures / "queries_reference.npy")
    ids = [f"p{i}" for i in range(len(passages))]
    full, small = ragjet.FlatIndex(384), ragjet.FlatIndex(384, storage=storage)
    assert small.storage == storage
    for index in (full, small):
        index.add(ids, passages)
    want, got = full.search(queries, k=10), small.search(queries, k=10)
    found = sum(len({h.id for h in a} & {h.id for h in b}) for a, b in zip(want, got))
    assert found / (10 * len(queries)) >= 0.95
    # Exact rescore: a hit both return has the same score.
    exact = {h.id: h.score for h in want[0]}
    for h in got[0]:
        if h.id in exact:
            assert h.score == exact[h.id]
    small.save(tmp_path / "idx")
    back = ragjet.FlatIndex.load(tmp_path / "idx")
    assert back.storage == storage
    assert [h.id for h in back.search(queries[0], k=10)] == [h.id for h in got[0]]


def test_unknown_storage_is_refused():
    with pytest.raises(ValueError, match="int8"):
        ragjet.FlatIndex(4, storage="int4")


def test_vector_store_accepts_quantized_storage():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((50, 16)).astype(np.float32)
    nodes = [
        TextNode(id_=f"n{i}", text=f"t{i}", embedding=v.tolist()) for i, v in enumerate(vectors)
    ]
    for storage in ("int8", "binary"):
        store = RagjetVectorStore(storage=storage)
        store.add(nodes)
        assert store.client.storage == storage
        res = store.query(VectorStoreQuery(query_embedding=vectors[7].tolist(), similarity_top_k=3))
        assert res.ids[0] == "n7"
