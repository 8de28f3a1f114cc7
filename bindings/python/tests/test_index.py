"""FlatIndex, HnswIndex, Bm25Index, Hit and the fusion helpers."""

import json
import math

import numpy as np
import pytest
from _gil import assert_releases_gil

import ragjet


@pytest.fixture(scope="module")
def corpus(fixtures):
    passages = np.load(fixtures / "minilm_reference.npy")
    queries = np.load(fixtures / "queries_reference.npy")
    with open(fixtures / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with open(fixtures / "queries.jsonl", encoding="utf-8") as f:
        query_ids = [json.loads(line)["id"] for line in f]
    with open(fixtures / "exact_top10.json", encoding="utf-8") as f:
        top10 = json.load(f)
    ids = [r["id"] for r in rows]
    texts = [r["text"] for r in rows]
    return passages, queries, ids, texts, query_ids, top10


def small_index(cls=ragjet.FlatIndex, **kwargs):
    index = cls(4, **kwargs)
    vectors = np.eye(4, dtype=np.float32)
    index.add(
        ["a", "b", "c", "d"],
        vectors,
        metadata=[{"year": 2020, "tag": "x"}, {"year": 2021.5}, {"tags": ["p", "q"]}, None],
        texts=["text a", None, "text c", "text d"],
        ref_doc_ids=["doc1", "doc1", None, "doc2"],
    )
    return index, vectors


# --- search results --------------------------------------------------------


def test_flat_search_equals_the_exact_reference_ranking(corpus):
    passages, queries, ids, texts, query_ids, top10 = corpus
    for metric in ["cosine", "ip"]:
        index = ragjet.FlatIndex(384, metric=metric)
        index.add(ids, passages, texts=texts)
        assert len(index) == 300
        batch = index.search(queries, k=10)
        for qid, q, hits in zip(query_ids, queries, batch):
            assert [h.id for h in hits] == top10[qid], (metric, qid)
            single = index.search(q, k=10)
            assert [h.id for h in single] == [h.id for h in hits]
            np.testing.assert_allclose(
                [h.score for h in single], [h.score for h in hits], atol=1e-5
            )
        # Scores are the inner products; text comes back with the hit.
        first = batch[0][0]
        row = ids.index(first.id)
        assert first.score == pytest.approx(float(passages[row] @ queries[0]), abs=1e-5)
        assert first.text == texts[row]


def test_hnsw_recall_on_the_fixture(corpus):
    passages, queries, ids, _, query_ids, top10 = corpus
    index = ragjet.HnswIndex(384, m=16, ef_construction=200, ef_search=64)
    index.add(ids, passages)
    found = index.search(queries, k=10)
    recall = np.mean(
        [len({h.id for h in hits} & set(top10[q])) / 10 for q, hits in zip(query_ids, found)]
    )
    assert recall >= 0.95, recall


def test_hits_carry_what_was_stored():
    index, vectors = small_index()
    hits = index.search(vectors[0], k=4)
    assert [h.id for h in hits][0] == "a"
    a = hits[0]
    assert (a.score, a.text, a.ref_doc_id) == (pytest.approx(1.0), "text a", "doc1")
    assert a.metadata == {"year": 2020, "tag": "x"}
    assert isinstance(a.metadata["year"], int)
    b = index.get("b")
    assert b.metadata == {"year": 2021.5} and isinstance(b.metadata["year"], float)
    assert b.text == "" and b.score == 0.0
    assert index.get("c").metadata == {"tags": ["p", "q"]}
    assert index.get("d").ref_doc_id == "doc2" and index.get("nope") is None
    assert "a" in index and "nope" not in index
    assert "Hit(id='a'" in repr(a) and "text='text a'" in repr(a)
    assert ragjet.Hit("a", 1.0, "text a", {"year": 2020, "tag": "x"}, "doc1") == ragjet.Hit(
        a.id, 1.0, a.text, a.metadata, a.ref_doc_id
    )


def test_filters_in_every_accepted_form():
    index, vectors = small_index()
    as_dict = {"filters": [{"key": "year", "value": 2021, "operator": ">="}], "condition": "and"}
    forms = [as_dict, json.dumps(as_dict)]
    try:
        from llama_index.core.vector_stores.types import (
            FilterOperator,
            MetadataFilter,
            MetadataFilters,
        )

        forms.append(
            MetadataFilters(
                filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GTE)]
            )
        )
        forms.append(forms[-1].model_dump())  # enum members inside
    except ImportError:
        pass
    for f in forms:
        assert [h.id for h in index.search(vectors[0], k=4, filters=f)] == ["b"], f
        assert index.ids(filters=f) == ["b"]
    assert sorted(index.ids()) == ["a", "b", "c", "d"]
    nested = {
        "filters": [
            {"key": "tag", "value": "x"},
            {
                "filters": [{"key": "tags", "value": "p", "operator": "contains"}],
                "condition": "and",
            },
        ],
        "condition": "or",
    }
    assert sorted(index.ids(filters=nested)) == ["a", "c"]


def test_upsert_delete_clear_and_vectors():
    index, vectors = small_index()
    index.add(["a"], np.array([[0, 1, 0, 0]], dtype=np.float32), texts=["new a"])
    assert len(index) == 4
    assert index.get("a").text == "new a" and index.get("a").metadata == {}
    assert {h.id for h in index.search(vectors[1], k=2)} == {"a", "b"}
    np.testing.assert_allclose(index.get_vectors(["a", "c"]), vectors[[1, 2]])
    with pytest.raises(ragjet.InvalidInputError, match="nope"):
        index.get_vectors(["a", "nope"])
    assert index.delete_ref_doc("doc1") == 1  # "b": "a" was re-added without one
    assert index.delete(["d", "nope"]) == 1
    assert index.delete_ref_doc("doc2") == 0
    assert sorted(index.ids()) == ["a", "c"]
    index.clear()
    assert len(index) == 0 and index.search(vectors[0], k=3) == []
    index.add(["z"], vectors[:1])
    assert [h.id for h in index.search(vectors[0])] == ["z"]


def test_cosine_vectors_are_stored_normalised():
    index = ragjet.FlatIndex(2)
    index.add(["a"], np.array([[3, 4]], dtype=np.float32))
    np.testing.assert_allclose(index.get_vectors(["a"]), [[0.6, 0.8]], atol=1e-6)
    l2 = ragjet.FlatIndex(2, metric="l2")
    l2.add(["a", "b"], np.array([[3, 4], [0, 0]], dtype=np.float32))
    hits = l2.search(np.zeros(2, dtype=np.float32), k=2)
    assert [(h.id, h.score) for h in hits] == [("b", 0.0), ("a", pytest.approx(-25.0))]
    assert (l2.metric, l2.dim, ragjet.FlatIndex(2, metric="ip").metric) == ("l2", 2, "ip")


@pytest.mark.parametrize("cls", [ragjet.FlatIndex, ragjet.HnswIndex])
def test_save_and_load_round_trip(cls, tmp_path):
    index, vectors = small_index(cls)
    index.save(tmp_path / "idx")
    again = cls.load(str(tmp_path / "idx"))
    assert len(again) == 4 and again.dim == 4
    for q in vectors:
        assert [(h.id, h.text, h.metadata) for h in again.search(q, k=4)] == [
            (h.id, h.text, h.metadata) for h in index.search(q, k=4)
        ]
    assert again.get("c").metadata == {"tags": ["p", "q"]}


@pytest.mark.parametrize("cls", [ragjet.FlatIndex, ragjet.HnswIndex, ragjet.Bm25Index])
def test_damaged_or_missing_saves_raise_storage_error(cls, tmp_path):
    with pytest.raises(ragjet.StorageError):
        cls.load(tmp_path / "missing")
    if cls is ragjet.Bm25Index:
        index = cls()
        index.add(["a"], ["some words"])
    else:
        index, _ = small_index(cls)
    index.save(tmp_path / "idx")
    files = [p for p in (tmp_path / "idx").rglob("*") if p.is_file() and p.stat().st_size > 16]
    assert files
    for path in files:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(ragjet.StorageError) as err:
        cls.load(tmp_path / "idx")
    assert isinstance(err.value, OSError) and isinstance(err.value, ragjet.RagjetError)


def test_a_flat_index_of_another_kind_is_refused(tmp_path):
    index, _ = small_index(ragjet.HnswIndex)
    index.save(tmp_path / "h")
    with pytest.raises(ragjet.StorageError, match="HNSW|hnsw"):
        ragjet.FlatIndex.load(tmp_path / "h")


def test_hnsw_settings_and_compaction():
    index, vectors = small_index(ragjet.HnswIndex, ef_search=10)
    assert (index.ef_search, index.m) == (10, 16)
    index.ef_search = 3
    assert index.ef_search == 3
    with pytest.raises(ragjet.InvalidInputError):
        index.ef_search = 0
    index.delete(["a", "b"])
    assert index.tombstones == 2
    assert index.compact() == 2 and index.tombstones == 0
    assert [h.id for h in index.search(vectors[2], k=1)] == ["c"]
    np.testing.assert_allclose(index.get_vectors(["d"]), vectors[[3]])
    with pytest.raises(ragjet.InvalidInputError, match="dot|cosine"):
        ragjet.HnswIndex(4, metric="ip")
    with pytest.raises(ragjet.InvalidInputError, match="M"):
        ragjet.HnswIndex(4, m=1)


# --- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [ragjet.FlatIndex, ragjet.HnswIndex])
def test_bad_vectors_are_refused_with_a_clear_message(cls):
    index, vectors = small_index(cls)
    ids = ["w", "x", "y", "z"]
    cases = [
        (vectors.astype(np.float64), "float64"),
        (vectors.astype(np.float16), "float16"),
        (vectors[0], r"2-D"),
        (vectors.reshape(1, 4, 4), r"2-D"),
        (np.asfortranarray(np.arange(16, dtype=np.float32).reshape(4, 4)), "contiguous"),
        (np.eye(8, dtype=np.float32)[::2, ::2], "contiguous"),
        (vectors.tolist(), "numpy float32 array"),
        (None, "numpy float32 array"),
        (np.ones((4, 3), dtype=np.float32), "dimension 3"),
        (vectors.astype(">f4"), "float32"),
    ]
    for bad, message in cases:
        with pytest.raises(ragjet.InvalidInputError, match=message):
            index.add(ids, bad)
    nan = vectors.copy()
    nan[2, 1] = np.nan
    with pytest.raises(ragjet.InvalidInputError, match="row 2, column 1"):
        index.add(ids, nan)
    inf = vectors.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ragjet.InvalidInputError, match="NaN or infinity"):
        index.add(ids, inf)
    with pytest.raises(ragjet.InvalidInputError, match="zero"):
        index.add(["w"], np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ragjet.InvalidInputError, match="3 ids but 4 vectors"):
        index.add(ids[:3], vectors)
    assert len(index) == 4  # nothing of a refused batch was added


@pytest.mark.parametrize("cls", [ragjet.FlatIndex, ragjet.HnswIndex])
def test_bad_ids_metadata_and_texts(cls):
    index, vectors = small_index(cls)
    with pytest.raises(ragjet.InvalidInputError, match=r"ids\[1\] is None"):
        index.add(["w", None, "y", "z"], vectors)
    with pytest.raises(ragjet.InvalidInputError, match="not one str"):
        index.add("wxyz", vectors)
    with pytest.raises(ragjet.InvalidInputError, match="twice"):
        index.add(["w", "w", "y", "z"], vectors)
    with pytest.raises(ragjet.InvalidInputError, match="empty id"):
        index.add(["", "x", "y", "z"], vectors)
    with pytest.raises(
        ragjet.InvalidInputError, match=r"metadata\[1\]\['when'\] is of type object"
    ):
        index.add(["w", "x"], vectors[:2], metadata=[{}, {"when": object()}])
    with pytest.raises(ragjet.InvalidInputError, match=r"nested.*dict|of type dict"):
        index.add(["w"], vectors[:1], metadata=[{"nested": {"a": 1}}])
    with pytest.raises(ragjet.InvalidInputError, match="one dict per id"):
        index.add(["w"], vectors[:1], metadata={"a": 1})
    with pytest.raises(ragjet.InvalidInputError, match="2 items for 1 ids"):
        index.add(["w"], vectors[:1], texts=["a", "b"])
    with pytest.raises(ragjet.InvalidInputError, match=r"texts\[0\] is of type int"):
        index.add(["w"], vectors[:1], texts=[3])
    # numpy scalars and tuples are fine as metadata.
    index.add(
        ["w"], vectors[:1], metadata=[{"n": np.int64(3), "f": np.float32(0.5), "t": (1, "a")}]
    )
    assert index.get("w").metadata == {"n": 3, "f": 0.5, "t": [1, "a"]}


@pytest.mark.parametrize("cls", [ragjet.FlatIndex, ragjet.HnswIndex])
def test_bad_queries(cls):
    index, vectors = small_index(cls)
    for k in [0, -1]:
        with pytest.raises(ragjet.InvalidInputError, match="k must be at least 1"):
            index.search(vectors[0], k=k)
    with pytest.raises(ragjet.InvalidInputError, match="dimension 3"):
        index.search(np.ones(3, dtype=np.float32))
    with pytest.raises(ragjet.InvalidInputError, match="dimension 3"):
        index.search(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ragjet.InvalidInputError, match="float64"):
        index.search(vectors[0].astype(np.float64))
    with pytest.raises(ragjet.InvalidInputError, match="contiguous"):
        index.search(np.ones(8, dtype=np.float32)[::2])
    with pytest.raises(ragjet.InvalidInputError, match="contiguous"):
        index.search(np.ones((3, 8), dtype=np.float32)[:, ::2])
    with pytest.raises(ragjet.InvalidInputError, match="shape"):
        index.search(np.ones((1, 1, 4), dtype=np.float32))
    with pytest.raises(ragjet.InvalidInputError, match="shape"):
        index.search([1.0, 0.0, 0.0, 0.0])
    nan = np.array([1, np.nan, 0, 0], dtype=np.float32)
    with pytest.raises(ragjet.InvalidInputError, match="NaN"):
        index.search(nan)
    with pytest.raises(ragjet.InvalidInputError, match="zero"):
        index.search(np.zeros(4, dtype=np.float32))
    bad_filters = [
        {"filters": [{"key": "a", "value": 1, "operator": "~~"}]},
        "{not json",
        {"filters": [{"key": "a", "value": float("nan")}]},
        {"filters": [{"key": "a", "value": "x", "operator": "in"}], "condition": "xor"},
        42,
    ]
    for f in bad_filters:
        with pytest.raises(ragjet.InvalidInputError):
            index.search(vectors[0], filters=f)
    # A huge k is capped, not an allocation.
    assert len(index.search(vectors[0], k=2**62)) == 4


def test_bad_constructor_arguments():
    for bad in [
        dict(dim=0),
        dict(dim=-3),
        dict(dim=4, metric="manhattan"),
        dict(dim=4, storage="f8"),
    ]:
        with pytest.raises(ragjet.InvalidInputError):
            ragjet.FlatIndex(**bad)
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.HnswIndex(4, ef_construction=0)
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.Bm25Index(b=2.0)


def test_f16_storage_scores_to_three_digits(corpus):
    passages, queries, ids, *_ = corpus
    full, half = ragjet.FlatIndex(384), ragjet.FlatIndex(384, storage="f16")
    assert half.storage == "f16"
    for index in (full, half):
        index.add(ids, passages)
    a, b = full.search(queries[0], k=5), half.search(queries[0], k=5)
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=2e-3)


def test_search_releases_the_gil():
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((60_000, 128), dtype=np.float32)
    index = ragjet.FlatIndex(128, metric="ip")
    index.add([str(i) for i in range(len(rows))], rows)
    queries = rng.standard_normal((400, 128), dtype=np.float32)
    assert_releases_gil(lambda: [index.search(queries, k=10) for _ in range(3)])


# --- BM25 and fusion ----------------------------------------------------------


def test_bm25_search_upsert_delete_and_persistence(tmp_path):
    index = ragjet.Bm25Index()
    index.add(["r", "p", "s"], ["Rust is fast and safe", "Python is easy", "Rust rust RUST"])
    hits = index.search("rust", k=5)
    assert [h.id for h in hits] == ["s", "r"]
    assert hits[0].score > hits[1].score > 0 and hits[0].text is None
    index.add(["s"], ["nothing relevant"])
    assert [h.id for h in index.search("rust")] == ["r"]
    assert index.delete(["r", "nope"]) == 1
    assert index.search("rust") == [] and len(index) == 2
    index.save(tmp_path / "bm25")
    again = ragjet.Bm25Index.load(tmp_path / "bm25")
    assert [h.id for h in again.search("python")] == ["p"]
    again.clear()
    assert len(again) == 0 and again.search("python") == []
    with pytest.raises(ragjet.InvalidInputError, match="k must be at least 1"):
        index.search("python", k=0)
    with pytest.raises(ragjet.InvalidInputError, match="query must be a str"):
        index.search(None)
    with pytest.raises(ragjet.InvalidInputError, match=r"texts\[1\] is None"):
        index.add(["a", "b"], ["x", None])
    with pytest.raises(ragjet.InvalidInputError, match="2 ids but 1 texts"):
        index.add(["a", "b"], ["x"])


def test_alpha_fusion_matches_llama_index_hybrid_rules():
    vector = [
        ragjet.Hit("a", 0.9, "A", {"k": 1}),
        ragjet.Hit("b", 0.5, "B"),
        ragjet.Hit("c", 0.1, "C"),
    ]
    keyword = [ragjet.Hit("c", 7.0), ragjet.Hit("d", 1.0)]
    only_vector = ragjet.alpha_fusion(vector, keyword, 1.0, 10)
    assert [h.id for h in only_vector] == ["a", "b", "c"]
    assert [h.score for h in only_vector] == pytest.approx([1.0, 0.5, 0.0])
    assert only_vector[0].text == "A" and only_vector[0].metadata == {"k": 1}
    assert [h.id for h in ragjet.alpha_fusion(vector, keyword, 0.0, 10)] == ["c", "d"]
    half = {h.id: h.score for h in ragjet.alpha_fusion(vector, keyword, 0.5, 10)}
    # min-max per list, then 0.5 * vector + 0.5 * keyword
    assert half == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": 0.0})
    assert len(ragjet.alpha_fusion(vector, keyword, 0.5, 2)) == 2
    with pytest.raises(ragjet.InvalidInputError, match="alpha"):
        ragjet.alpha_fusion(vector, keyword, 1.5, 3)
    with pytest.raises(ragjet.InvalidInputError, match="alpha"):
        ragjet.alpha_fusion(vector, keyword, math.nan, 3)
    with pytest.raises(ragjet.InvalidInputError, match="k must be"):
        ragjet.alpha_fusion(vector, keyword, 0.5, 0)
    with pytest.raises(ragjet.InvalidInputError, match=r"keyword_hits\[0\]"):
        ragjet.alpha_fusion(vector, [("c", 1.0)], 0.5, 3)


def test_mmr_trades_relevance_for_diversity():
    q = np.array([1, 0, 0], dtype=np.float32)
    cands = np.array([[1, 0, 0], [0.99, 0.14, 0], [0.7, 0, 0.71]], dtype=np.float32)
    ids = ["same", "near-duplicate", "different"]
    relevance = ragjet.mmr(q, cands, ids, k=3, lambda_=1.0)
    assert [i for i, _ in relevance] == ["same", "near-duplicate", "different"]
    assert relevance[0][1] == pytest.approx(1.0)
    diverse = ragjet.mmr(q, cands, ids, k=2, lambda_=0.3)
    assert [i for i, _ in diverse] == ["same", "different"]
    with pytest.raises(ragjet.InvalidInputError, match="lambda"):
        ragjet.mmr(q, cands, ids, k=2, lambda_=2.0)
    with pytest.raises(ragjet.InvalidInputError, match="2 ids but 3"):
        ragjet.mmr(q, cands, ids[:2], k=2)
    with pytest.raises(ragjet.InvalidInputError, match="float64"):
        ragjet.mmr(q.astype(np.float64), cands, ids, k=2)
    empty = np.zeros((3, 0), dtype=np.float32)
    with pytest.raises(ragjet.InvalidInputError, match="no columns"):
        ragjet.mmr(np.zeros(0, dtype=np.float32), empty, ids, k=2)


def test_indexes_are_shared_between_threads():
    from concurrent.futures import ThreadPoolExecutor

    index = ragjet.FlatIndex(8)

    def add(i):
        rows = np.random.default_rng(i).standard_normal((50, 8), dtype=np.float32) + 0.01
        index.add([f"{i}-{j}" for j in range(50)], rows)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(add, range(20)))
        results = list(
            pool.map(lambda _: index.search(np.ones(8, dtype=np.float32), k=5), range(20))
        )
    assert len(index) == 1000
    assert all(len(r) == 5 for r in results)


def test_the_gil_check_catches_a_call_that_holds_the_gil():
    # builtins.sum over a range runs in C without releasing the GIL.
    with pytest.raises(AssertionError, match="stalled"):
        assert_releases_gil(lambda: sum(range(3 * 10**7)), min_seconds=0.05)
