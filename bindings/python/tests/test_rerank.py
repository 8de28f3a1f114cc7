"""CrossEncoder against the scores transformers gave the tiny test model
(crates/ragjet-inference/tests/fixtures/tiny-cross-encoder/reference.json)."""

import json

import numpy as np
import pytest
from _gil import assert_releases_gil
from conftest import ROOT

import ragjet

MODEL = ROOT / "crates/ragjet-inference/tests/fixtures/tiny-cross-encoder"
# As in the Rust test of the same model: f32 on the CPU, to 1e-4.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def references():
    with open(MODEL / "reference.json", encoding="utf-8") as f:
        return json.load(f)["references"]


def load(**kwargs):
    return ragjet.CrossEncoder(MODEL, device="cpu", precision="f32", num_threads=2, **kwargs)


def test_scores_match_transformers(references):
    for ref in references:
        kwargs = {} if ref["max_length"] is None else {"max_length": ref["max_length"]}
        pairs = [(p["query"], p["passage"]) for p in ref["pairs"]]
        sigmoid = load(**kwargs).predict(pairs)
        assert sigmoid.dtype == np.float32 and sigmoid.shape == (len(pairs),)
        np.testing.assert_allclose(sigmoid, [p["sigmoid"] for p in ref["pairs"]], atol=TOLERANCE)
        logits = load(activation="identity", **kwargs).predict(pairs)
        np.testing.assert_allclose(logits, [p["logit"] for p in ref["pairs"]], atol=TOLERANCE)


def test_rerank_orders_passages_by_score(references):
    pairs = references[0]["pairs"]
    query = pairs[0]["query"]
    mine = [p for p in pairs if p["query"] == query]
    passages = [p["passage"] for p in mine]
    model = load(batch_size=3)
    ranked = model.rerank(query, passages)
    want = sorted(range(len(mine)), key=lambda i: (-mine[i]["sigmoid"], i))
    assert [i for i, _ in ranked] == want
    np.testing.assert_allclose(
        [s for _, s in ranked], [mine[i]["sigmoid"] for i in want], atol=TOLERANCE
    )
    assert model.rerank(query, passages, top_n=2) == ranked[:2]
    assert model.rerank(query, []) == []
    assert model.predict([]).shape == (0,)


def test_properties():
    model = load()
    assert model.model_dir == MODEL
    assert (model.max_length, model.activation, model.labels) == (64, "sigmoid", ["LABEL_0"])
    assert (model.device, model.precision) == ("cpu", "f32")
    assert "CrossEncoder(" in repr(model)


def test_bad_input_is_refused():
    model = load()
    cases = [
        (lambda: model.predict(("a query", "a passage")), "wrap one pair in a list"),
        (lambda: model.predict("a query"), "pairs must be a list"),
        (lambda: model.predict([("q", None)]), r"pairs\[0\]'s passage is None"),
        (lambda: model.predict([("q", "p", "x")]), r"pairs\[0\] is of type tuple"),
        (lambda: model.predict([None]), r"pairs\[0\] is None"),
        (lambda: model.predict(None), "pairs must be a list"),
        (lambda: model.rerank(None, ["p"]), "query must be a str"),
        (lambda: model.rerank("q", ["p", None]), r"passages\[1\] is None"),
        (lambda: model.rerank("q", ["p"], top_n=0), "top_n must be at least 1"),
        (lambda: load(batch_size=0), "batch_size must be at least 1"),
        (lambda: load(activation="softmax"), "activation"),
        (lambda: load(max_length=2), "max_length"),
    ]
    for call, message in cases:
        with pytest.raises(ragjet.InvalidInputError, match=message):
            call()


def test_a_missing_or_unsupported_folder_is_a_model_load_error(tmp_path):
    with pytest.raises(ragjet.ModelLoadError):
        ragjet.CrossEncoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    with pytest.raises(ragjet.ModelLoadError, match="RoBERTa|BERT"):
        ragjet.CrossEncoder(tmp_path)


def test_predict_releases_the_gil():
    model = load()
    pairs = [
        ("what is the capital of france " * 3, f"passage {i} about paris and berlin " * 3)
        for i in range(6000)
    ]
    assert_releases_gil(lambda: model.predict(pairs))
