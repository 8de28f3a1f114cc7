import json
import threading
import time

import numpy as np
import pytest

import ragjet


def read_texts(path, n=None):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def test_version_is_the_crate_version():
    assert ragjet.__version__ == "0.1.0"


def test_first_100_passages_match_sentence_transformers(embedder, fixtures):
    texts = read_texts(fixtures / "corpus.jsonl", 100)
    reference = np.load(fixtures / "minilm_reference.npy")[:100]
    got = embedder.embed(texts)
    assert got.dtype == np.float32
    assert got.shape == (100, 384)
    assert got.flags["C_CONTIGUOUS"]
    cos = np.sum(got * reference, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cos.min() >= 0.9999, (cos.min(), int(cos.argmin()))


def test_embed_one_equals_row_of_batch(embedder):
    texts = ["retrieval augmented generation", "a much longer text about vector search " * 5]
    batch = embedder.embed(texts)
    one = embedder.embed_one(texts[0])
    assert one.shape == (embedder.dim,)
    np.testing.assert_allclose(one, batch[0], atol=1e-5)


def test_properties(embedder):
    assert embedder.dim == 384
    assert embedder.max_seq_length == 256
    assert embedder.normalize is True
    assert embedder.num_threads == 2
    assert (embedder.model_dir / "model.safetensors").is_file()
    assert "Embedder(" in repr(embedder)


def test_token_budgeting(embedder):
    text = "The quick brown fox jumps over the lazy dog"
    assert embedder.count_tokens(text) == 9
    head = embedder.truncate_to_tokens(text, 4)
    assert head == "The quick brown fox"
    assert embedder.count_tokens(head) == 4


def test_errors_map_to_the_exception_hierarchy(embedder, tmp_path):
    with pytest.raises(ragjet.InvalidInputError):
        embedder.embed([])
    with pytest.raises(TypeError):
        embedder.embed("a string is not a list of texts")
    with pytest.raises(ragjet.ModelLoadError):
        ragjet.Embedder(tmp_path)
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.Embedder(num_threads=0)
    assert issubclass(ragjet.ModelLoadError, ragjet.RagjetError)


def test_gil_is_released_while_embedding(embedder, fixtures):
    texts = read_texts(fixtures / "corpus.jsonl", 64)
    start = time.perf_counter()
    embedder.embed(texts)
    alone = time.perf_counter() - start

    worker = threading.Thread(target=embedder.embed, args=(texts,))
    gaps, last = [], time.perf_counter()
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    # Holding the GIL would freeze this loop for the whole embedding call.
    assert max(gaps) < alone / 2, (max(gaps), alone)


def test_device_and_precision_arguments(embedder):
    # Auto on a machine without a GPU (or a wheel built without `cuda`): the CPU,
    # with bf16 products where it has AVX-512 BF16 and f32 elsewhere.
    assert embedder.device == "cpu"
    assert embedder.precision in ("f32", "bf16")
    cpu = ragjet.Embedder(num_threads=2, device="cpu", precision="f32")
    assert (cpu.device, cpu.precision) == ("cpu", "f32")
    texts = ["a first passage about rivers", "and a second, longer one about the sea and its tides"]
    half = ragjet.Embedder(num_threads=2, device="cpu", precision="bf16")
    assert half.precision == "bf16"
    a, b = cpu.embed(texts), half.embed(texts)
    assert a.shape == b.shape
    assert not np.array_equal(a, b)
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.9999
    if embedder.device == "cpu":
        # Auto chose the CPU, so no GPU is usable here: asking for one fails cleanly.
        with pytest.raises(ragjet.RagjetError):
            ragjet.Embedder(num_threads=2, device="cuda")
    for bad in [dict(device="tpu"), dict(device="cuda:x"), dict(precision="f8")]:
        with pytest.raises(ragjet.InvalidInputError):
            ragjet.Embedder(num_threads=2, **bad)
