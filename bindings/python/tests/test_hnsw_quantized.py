"""HnswIndex and RagjetVectorStore(index="hnsw") with int8 and binary storage:
the walk on codes plus the exact rescore finds the f32 index's hits with the
exact scores on the fixture embeddings, and the kind survives save and load."""

import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery

import ragjet
from ragjet.llama_index import RagjetVectorStore


@pytest.mark.parametrize("storage", ["int8", "binary"])
def test_quantized_hnsw_matches_exact_search_and_round_trips(fixtures, tmp_path, storage):
    passages = np.load(fixtures / "minilm_reference.npy")
    queries = np.load(fixtures / "queries_reference.npy")
    ids = [f"p{i}" for i in range(len(passages))]
    exact = ragjet.FlatIndex(384)
    graph = ragjet.HnswIndex(384, storage=storage)
    assert graph.storage == storage
    assert ragjet.HnswIndex(384).storage == "f32"
    exact.add(ids, passages)
    graph.add(ids, passages, metadata=[{"even": i % 2 == 0} for i in range(len(ids))])
    want, got = exact.search(queries, k=10), graph.search(queries, k=10)
    found = sum(len({h.id for h in a} & {h.id for h in b}) for a, b in zip(want, got))
    assert found / (10 * len(queries)) >= 0.95
    # Exact rescore: every hit's score is its row's cosine, to f32 rounding.
    unit = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    for q, hits in zip(queries, got):
        qn = q / np.linalg.norm(q)
        for h in hits:
            assert h.score == pytest.approx(float(unit[int(h.id[1:])] @ qn), abs=1e-5)
    # Filters and deletes.
    even = {"filters": [{"key": "even", "value": True, "operator": "=="}], "condition": "and"}
    for h in graph.search(queries[0], k=5, filters=even):
        assert int(h.id[1:]) % 2 == 0
    top = got[0][0].id
    assert graph.delete([top]) == 1
    assert top not in {h.id for h in graph.search(queries[0], k=10)}
    graph.save(tmp_path / "idx")
    back = ragjet.HnswIndex.load(tmp_path / "idx")
    assert back.storage == storage
    assert back.search(queries[1], k=10) == graph.search(queries[1], k=10)


def test_bad_storage_is_refused():
    with pytest.raises(ValueError, match="int8"):
        ragjet.HnswIndex(4, storage="int4")
    # f16 rows would round every score; int8 with exact rescore is the option.
    with pytest.raises(ragjet.InvalidInputError, match="f16"):
        ragjet.HnswIndex(4, storage="f16")


def test_vector_store_passes_storage_to_hnsw():
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((80, 16)).astype(np.float32)
    nodes = [
        TextNode(id_=f"n{i}", text=f"t{i}", embedding=v.tolist()) for i, v in enumerate(vectors)
    ]
    for storage in ("int8", "binary"):
        store = RagjetVectorStore(index="hnsw", storage=storage)
        store.add(nodes)
        assert isinstance(store.client, ragjet.HnswIndex)
        assert store.client.storage == storage
        res = store.query(VectorStoreQuery(query_embedding=vectors[9].tolist(), similarity_top_k=3))
        assert res.ids[0] == "n9"
        assert res.similarities[0] == pytest.approx(1.0, abs=1e-5)
    # f16 would only be refused at the first add, when the index is made.
    with pytest.raises(ValueError, match="f16"):
        RagjetVectorStore(index="hnsw", storage="f16")
