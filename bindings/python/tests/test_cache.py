"""EmbeddingCache, RetrievalCache, ResponseCache and SemanticCache."""

import numpy as np
import pytest

import ragjet


def unit(*xs):
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


# --- embeddings ---------------------------------------------------------------


def test_embedding_cache_round_trip_per_model_and_revision():
    cache = ragjet.EmbeddingCache()
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert cache.get_many("m", ["a", "b"]) == [None, None]
    cache.put_many("m", ["a", "b"], vectors)
    got = cache.get_many("m", ["b", "x", "a"])
    assert got[1] is None
    np.testing.assert_array_equal(got[0], vectors[1])
    np.testing.assert_array_equal(got[2], vectors[0])
    assert got[0].dtype == np.float32
    # Another model, revision or tenant never sees these vectors.
    assert cache.get_many("other", ["a"]) == [None]
    assert cache.get_many("m", ["a"], revision="bf16") == [None]
    assert cache.get_many("m", ["a"], tenant="t2") == [None]
    stats = cache.stats()
    assert stats["hits"] == 2 and stats["misses"] >= 5
    assert stats["memory"]["entries"] == 2 and stats["disk"] is None
    cache.clear()
    assert cache.get_many("m", ["a"]) == [None]


def test_embedding_cache_on_disk_survives_a_restart(tmp_path):
    path = tmp_path / "emb.redb"
    cache = ragjet.EmbeddingCache(path, memory_mb=0)
    cache.put_many("m", ["a"], np.ones((1, 4), dtype=np.float32))
    del cache
    again = ragjet.EmbeddingCache(str(path))
    np.testing.assert_array_equal(again.get_many("m", ["a"])[0], np.ones(4, dtype=np.float32))
    assert again.stats()["disk"]["hits"] == 1


def test_embedding_cache_bad_input():
    cache = ragjet.EmbeddingCache()
    cases = [
        (
            lambda: cache.put_many("m", ["a", "b"], np.ones((1, 3), dtype=np.float32)),
            "2 texts but 1",
        ),
        (lambda: cache.put_many("m", ["a"], np.ones((1, 3))), "float64"),
        (lambda: cache.put_many("m", ["a"], np.ones(3, dtype=np.float32)), "2-D"),
        (lambda: cache.put_many("m", ["a"], np.full((1, 3), np.nan, dtype=np.float32)), "NaN"),
        (lambda: cache.get_many("m", ["a", None]), r"texts\[1\] is None"),
        (
            lambda: cache.put_many("m", ["a"], np.zeros((1, 0), dtype=np.float32)),
            "no columns",
        ),
        (lambda: cache.get_many("m", "a"), "not one str"),
        (lambda: ragjet.EmbeddingCache(memory_mb=0), "no tier"),
        (lambda: ragjet.EmbeddingCache(memory_mb=-1), "memory_mb"),
        (lambda: ragjet.EmbeddingCache(ttl_seconds=0), "ttl_seconds"),
        (lambda: cache.get_many("m", ["a"], tenant=""), "tenant"),
    ]
    for call, message in cases:
        with pytest.raises(ragjet.InvalidInputError, match=message):
            call()


def test_an_unopenable_disk_cache_is_a_storage_error(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(ragjet.StorageError):
        ragjet.EmbeddingCache(tmp_path / "dir")


# --- retrieval results ----------------------------------------------------------


def test_retrieval_cache_keys_every_field():
    cache = ragjet.RetrievalCache()
    hits = [
        ragjet.Hit("a", 0.9, "text a", {"year": 2024, "tags": ["x"]}, "doc"),
        ragjet.Hit("b", 0.5),
    ]
    f = {"filters": [{"key": "year", "value": 2024}, {"key": "lang", "value": "en"}]}
    cache.put("rust", 10, hits, filters=f, namespace="docs", index_version=3)
    got = cache.get("rust", 10, filters=f, namespace="docs", index_version=3)
    assert got == hits
    assert got[0].metadata["year"] == 2024 and got[1].text is None
    # The members of a group in another order: the same filter, a hit.
    reordered = {"filters": list(reversed(f["filters"]))}
    assert cache.get("rust", 10, filters=reordered, namespace="docs", index_version=3) == hits
    for other in [
        dict(query="rust!", top_k=10, filters=f, namespace="docs", index_version=3),
        dict(query="rust", top_k=5, filters=f, namespace="docs", index_version=3),
        dict(query="rust", top_k=10, filters=None, namespace="docs", index_version=3),
        dict(query="rust", top_k=10, filters=f, namespace="other", index_version=3),
        dict(query="rust", top_k=10, filters=f, namespace="docs", index_version=4),
        dict(query="rust", top_k=10, filters=f, namespace="docs", index_version=3, mode="hybrid"),
        dict(query="rust", top_k=10, filters=f, namespace="docs", index_version=3, tenant="t2"),
        dict(
            query="rust",
            top_k=10,
            filters={
                "filters": [{"key": "year", "value": 2024, "operator": "!="}, f["filters"][1]]
            },
            namespace="docs",
            index_version=3,
        ),
    ]:
        assert cache.get(**other) is None, other
    cache.bump_index_version()
    assert cache.get("rust", 10, filters=f, namespace="docs", index_version=3) is None
    assert cache.stats()["hits"] == 2


def test_retrieval_cache_bad_input():
    cache = ragjet.RetrievalCache()
    with pytest.raises(ragjet.InvalidInputError, match="top_k must be at least 1"):
        cache.get("q", 0)
    with pytest.raises(ragjet.InvalidInputError, match=r"hits\[0\] is of type tuple"):
        cache.put("q", 3, [("a", 1.0)])
    with pytest.raises(ragjet.InvalidInputError, match="index_version"):
        cache.get("q", 3, index_version=-1)
    with pytest.raises(ragjet.InvalidInputError, match="filter"):
        cache.get("q", 3, filters={"filters": [{"key": "k", "operator": "??"}]})
    with pytest.raises(ragjet.InvalidInputError, match="max_ttl_seconds"):
        ragjet.RetrievalCache(ttl_seconds=100, max_ttl_seconds=10)


# --- responses ------------------------------------------------------------------------


def test_response_cache_scopes_and_sampling_settings():
    cache = ragjet.ResponseCache()
    cache.put("What is Rust?", "gpt", "A language.", tenant="acme", user="ann")
    assert cache.get("What is Rust?", "gpt", tenant="acme", user="ann") == "A language."
    assert cache.get("What is Rust?", "gpt", tenant="acme", user="bob") is None
    assert cache.get("What is Rust?", "gpt", tenant="acme") is None
    assert cache.get("What is Rust?", "gpt", tenant="other", user="ann") is None
    assert cache.get("What is Rust?", "other-model", tenant="acme", user="ann") is None
    assert cache.get("What is Rust?", "gpt", tenant="acme", user="ann", temperature=0.7) is None
    cache.put("Q", "gpt", "tenant-wide", tenant="acme")
    assert cache.get("Q", "gpt", tenant="acme") == "tenant-wide"
    assert cache.get("Q", "gpt", tenant="acme", user="ann") is None
    cache.put("Q", "gpt", "with stop", stop=["\n"], seed=3, max_tokens=20)
    assert cache.get("Q", "gpt", stop=["\n"], seed=3, max_tokens=20) == "with stop"
    assert cache.get("Q", "gpt", stop=["\n"], seed=4, max_tokens=20) is None
    stats = cache.stats()
    assert stats["hits"] == 3 and stats["memory"]["writes"] == 3
    with pytest.raises(ragjet.InvalidInputError, match="user must not be empty"):
        cache.get("Q", "gpt", user="")
    with pytest.raises(ragjet.InvalidInputError, match="max_tokens"):
        cache.get("Q", "gpt", max_tokens=-1)
    cache.clear()
    assert cache.get("Q", "gpt", tenant="acme") is None


def test_response_cache_expires(tmp_path):
    import time

    cache = ragjet.ResponseCache(tmp_path / "answers.redb", ttl_seconds=0.05)
    cache.put("Q", "m", "A")
    assert cache.get("Q", "m") == "A"
    time.sleep(0.1)
    assert cache.get("Q", "m") is None


# --- semantic ---------------------------------------------------------------------------


def test_semantic_cache_answers_similar_queries_within_scope():
    cache = ragjet.SemanticCache(dim=3, threshold=0.9)
    cache.put(unit(1, 0, 0), "about x", tenant="acme", user="ann")
    answer, similarity = cache.get(unit(1, 0.1, 0), tenant="acme", user="ann")
    assert answer == "about x" and 0.9 <= similarity <= 1.0
    assert cache.get(unit(0, 1, 0), tenant="acme", user="ann") is None  # not similar
    assert cache.get(unit(1, 0, 0), tenant="acme", user="bob") is None
    assert cache.get(unit(1, 0, 0), tenant="other", user="ann") is None
    assert cache.get(unit(1, 0, 0), tenant="acme") is None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 4, 1)
    assert cache.dim == 3
    cache.clear()
    assert cache.get(unit(1, 0, 0), tenant="acme", user="ann") is None


def test_semantic_cache_bad_input():
    cache = ragjet.SemanticCache(dim=3)
    cases = [
        (lambda: cache.get(np.ones(4, dtype=np.float32)), "dimension 4"),
        (lambda: cache.get(np.ones(3)), "float64"),
        (lambda: cache.get(np.ones((1, 3), dtype=np.float32)), "1-D"),
        (lambda: cache.get(np.array([1, np.nan, 0], dtype=np.float32)), "NaN"),
        (lambda: cache.put(np.zeros(3, dtype=np.float32), "x"), "zero"),
        (lambda: cache.get([1.0, 0.0, 0.0]), "numpy float32 array"),
        (lambda: ragjet.SemanticCache(dim=0), "dim"),
        (lambda: ragjet.SemanticCache(dim=3, threshold=1.5), "threshold"),
    ]
    for call, message in cases:
        with pytest.raises(ragjet.InvalidInputError, match=message):
            call()
