"""Engine: ingest, query in every mode, delete, persistence, async
variants, bad input."""

import asyncio
import itertools
import json
import time

import pytest
from _gil import assert_releases_gil
from conftest import ROOT

import ragjet

RERANKER = ROOT / "crates/ragjet-inference/tests/fixtures/tiny-cross-encoder"


def read_corpus(fixtures, n):
    with open(fixtures / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f][:n]
    return [
        {"id": r["id"], "text": r["text"], "metadata": {"row": i, "even": i % 2 == 0}}
        for i, r in enumerate(rows)
    ]


@pytest.fixture(scope="module")
def docs(fixtures):
    return read_corpus(fixtures, 40)


@pytest.fixture(scope="module")
def engine(docs):
    engine = ragjet.Engine(num_threads=2, reranker=RERANKER)
    report = engine.ingest(docs)
    assert report["failed"] == [] and sorted(report["ingested"]) == sorted(d["id"] for d in docs)
    return engine


def test_a_passage_finds_itself_and_hits_carry_the_chunk(engine, docs):
    doc = docs[7]
    answer = engine.query(doc["text"], top_k=3)
    top = answer["hits"][0]
    assert top.ref_doc_id == doc["id"] and top.id.startswith(doc["id"] + "#")
    start, end = top.span
    assert doc["text"].encode()[start:end].decode() == top.text
    assert top.metadata == {"row": 7, "even": False}
    assert len(answer["hits"]) == 3 and answer["top_k"] == 3 and answer["mode"] == "vector"
    assert answer["timings"]["total"] > 0 and set(answer["timings"]) >= {"embed", "search"}
    assert answer["cache"] in ("miss", "retrieval_hit")
    assert engine.query(doc["text"], top_k=3)["cache"] == "retrieval_hit"
    assert (engine.dim, len(engine) >= len(docs), engine.num_documents()) == (384, True, len(docs))


def test_modes_filters_mmr_and_reranking(engine, docs):
    words = docs[3]["text"].split()[:6]
    query = " ".join(words)
    keyword = engine.query(query, top_k=5, mode="keyword")
    assert keyword["mode"] == "keyword" and keyword["hits"][0].ref_doc_id == docs[3]["id"]
    hybrid = engine.query(query, top_k=5, mode="hybrid", alpha=0.3)
    assert hybrid["mode"] == "hybrid" and all(0.0 <= h.score <= 1.0 for h in hybrid["hits"])
    even = engine.query(query, top_k=10, filters={"filters": [{"key": "even", "value": True}]})
    assert even["hits"] and all(h.metadata["even"] for h in even["hits"])
    diverse = engine.query(query, top_k=5, mmr=0.3, no_cache=True)
    assert len(diverse["hits"]) == 5 and diverse["cache"] == "bypassed"
    reranked = engine.query(query, top_k=8, rerank_top_n=3)
    assert len(reranked["hits"]) == 3
    assert [h.score for h in reranked["hits"]] == sorted(
        (h.score for h in reranked["hits"]), reverse=True
    )


def test_reingest_delete_and_namespaces(engine, docs):
    again = engine.ingest(docs[:5])
    assert again["unchanged"] == 5 and again["embeddings_computed"] == 0
    version = engine.version
    changed = dict(docs[0], text=docs[0]["text"] + " And one more sentence about rivers.")
    report = engine.ingest([changed], namespace="other")
    assert report["chunks"] >= 1 and engine.version > version
    assert engine.namespaces() == ["default", "other"]
    assert engine.document_ids("other") == [docs[0]["id"]]
    assert (
        engine.query(changed["text"], top_k=1, namespace="other")["hits"][0].ref_doc_id
        == docs[0]["id"]
    )
    assert engine.delete(docs[0]["id"], namespace="other") is True
    assert engine.delete(docs[0]["id"], namespace="other") is False
    assert engine.num_documents("other") == 0


def test_failed_documents_are_reported_not_raised(engine):
    report = engine.ingest(
        [{"id": "blank", "text": "   "}, {"id": "fine", "text": "A short note on tides."}]
    )
    assert [i for i, _ in report["failed"]] == ["blank"] and report["ingested"] == ["fine"]
    assert engine.delete("fine")


def test_save_and_open(tmp_path, docs):
    store = tmp_path / "store"
    engine = ragjet.Engine(path=store, num_threads=2, index="flat", hybrid=False)
    engine.ingest(docs[:10])
    want = [h.id for h in engine.query(docs[2]["text"], top_k=4)["hits"]]
    engine.save()
    assert engine.path == store
    opened = ragjet.Engine.open(store)
    assert [h.id for h in opened.query(docs[2]["text"], top_k=4)["hits"]] == want
    assert opened.document_ids() == sorted(d["id"] for d in docs[:10])
    with pytest.raises(ragjet.InvalidInputError, match="BM25|bm25"):
        opened.query("rivers", mode="keyword")
    with pytest.raises(ragjet.StorageError):
        ragjet.Engine.open(tmp_path / "nothing-here")
    with pytest.raises(ragjet.InvalidInputError, match="no path"):
        ragjet.Engine(num_threads=2).save()


def test_config_as_dict_toml_and_file(tmp_path, docs):
    def chunks(**kwargs):
        return ragjet.Engine(num_threads=2, **kwargs).ingest([docs[1]])["chunks"]

    small = chunks(config={"chunking": {"chunk_tokens": 32, "overlap_tokens": 4}})
    assert small > chunks()
    toml = "[chunking]\nchunk_tokens = 32\noverlap_tokens = 4\n"
    assert chunks(config=toml) == small
    path = tmp_path / "ragjet.toml"
    path.write_text(toml)
    assert chunks(config=path) == small
    assert chunks(config=str(path)) == small
    with pytest.raises(ragjet.InvalidInputError, match="chunk_tokns"):
        ragjet.Engine(num_threads=2, config={"chunking": {"chunk_tokns": 10}})
    with pytest.raises(ragjet.InvalidInputError, match="chunk_tokens"):
        ragjet.Engine(num_threads=2, config="[chunking]\nchunk_tokens = 0\n")
    with pytest.raises(ragjet.InvalidInputError, match="config must be"):
        ragjet.Engine(num_threads=2, config=42)


def test_bad_input(engine):
    cases = [
        (lambda: engine.query("rivers", top_k=0), "top_k must be at least 1"),
        (lambda: engine.query("rivers", top_k=-3), "top_k must be at least 1"),
        (lambda: engine.query(None), "text must be a str"),
        (lambda: engine.query("   "), "empty|query"),
        (lambda: engine.query("rivers", mode="fuzzy"), "mode"),
        (lambda: engine.query("rivers", mode="hybrid", alpha=1.5), "alpha"),
        (lambda: engine.query("rivers", filters="{bad json"), "filter"),
        (lambda: engine.query("rivers", rerank_top_n=0), "rerank_top_n"),
        (lambda: engine.query("rivers", namespace="nope"), "nope"),
        (lambda: engine.query("rivers", required_keywords=["ok", None]), r"required_keywords\[1\]"),
        (lambda: engine.ingest({"id": "a", "text": "b"}), "list of dicts"),
        (lambda: engine.ingest([("a", "b")]), r"documents\[0\] is of type tuple"),
        (lambda: engine.ingest([{"id": "a"}]), r"documents\[0\] has no \"text\""),
        (lambda: engine.ingest([{"id": "a", "text": None}]), "is None, not a str"),
        (lambda: engine.ingest([{"id": "a", "text": "b", "meta": {}}]), "unknown key"),
        (lambda: engine.ingest([{"id": "a", "text": "b", "metadata": {"x": {}}}]), "metadata"),
        (lambda: ragjet.Engine(index="ivf"), "index"),
        (lambda: ragjet.Engine(num_threads=0), "num_threads"),
    ]
    for call, message in cases:
        with pytest.raises(ragjet.InvalidInputError, match=message):
            call()
    with pytest.raises(ragjet.ModelLoadError):
        ragjet.Engine(model_dir="/nonexistent/model")


def test_ingest_releases_the_gil(fixtures):
    engine = ragjet.Engine(num_threads=2, config={"cache": {"embedding": {"enabled": False}}})
    docs = read_corpus(fixtures, 120)
    rounds = itertools.count()

    def ingest_new_text():
        # Unchanged documents are skipped, so each round changes every text.
        n = next(rounds)
        engine.ingest([{**d, "text": f"{d['text']} ({n})"} for d in docs])

    assert_releases_gil(ingest_new_text)


def test_async_variants_do_not_block_the_event_loop(fixtures):
    engine = ragjet.Engine(num_threads=2, config={"cache": {"embedding": {"enabled": False}}})
    docs = read_corpus(fixtures, 120)

    async def main():
        ticks = 0
        stop = False

        async def ticker():
            nonlocal ticks
            while not stop:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        report = await engine.aingest(docs)
        took = time.perf_counter() - t0
        during = ticks
        answer = await engine.aquery(docs[5]["text"], top_k=2)
        stop = True
        await task
        return report, answer, took, during

    report, answer, took, during = asyncio.run(main())
    assert report["failed"] == [] and answer["hits"][0].ref_doc_id == docs[5]["id"]
    assert took > 0.2, "the ingest was too short to tell"
    # A loop blocked by the ingest would not have ticked while it ran.
    assert during >= took / 0.005 / 4, (during, took)


def test_aembed_awaits_the_embedding(embedder):
    async def main():
        return await embedder.aembed(["one text", "another"], normalize=True)

    got = asyncio.run(main())
    assert got.shape == (2, 384)
    with pytest.raises(RuntimeError, match="event loop"):
        embedder.aembed(["no loop running"])


def test_show_progress_draws_a_bar(capsys):
    import tqdm  # noqa: F401  (a test dependency: the bar is drawn with it)

    engine = ragjet.Engine(num_threads=2)
    engine.ingest(
        [{"id": str(i), "text": f"passage {i} about the sea"} for i in range(5)], show_progress=True
    )
    err = capsys.readouterr().err
    assert "Ingesting" in err, err
