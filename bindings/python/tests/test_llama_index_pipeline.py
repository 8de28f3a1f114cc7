"""Whole LlamaIndex pipelines on ragjet's adapters: a VectorStoreIndex over the
fixture corpus, persistence through StorageContext, and a RetrieverQueryEngine
with reranking, a cached LLM and instrumentation."""

import asyncio
import json
import pathlib

import numpy as np
import pytest
from llama_index.core import (
    Settings,
    StorageContext,
    VectorStoreIndex,
    load_index_from_storage,
)
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

import ragjet
from ragjet.llama_index import (
    CachedLLM,
    RagjetEmbedding,
    RagjetEventHandler,
    RagjetReranker,
    RagjetSpanHandler,
    RagjetVectorStore,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]
TINY_CROSS_ENCODER = ROOT / "crates/ragjet-inference/tests/fixtures/tiny-cross-encoder"
#: Two reference scores closer than this are a near tie. In f32 ragjet's
#: scores differ from the reference's by under 1e-6 on this corpus, so no
#: swap happens here; the allowance is for a platform whose float rounding
#: differs.
NEAR_TIE = 1e-5


@pytest.fixture(autouse=True)
def no_default_llm():
    """Nothing may fall back to OpenAI: the default LLM is a mock."""
    before = Settings._llm
    Settings.llm = MockLLM()
    yield
    Settings._llm = before


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus(fixtures):
    return read_jsonl(fixtures / "corpus.jsonl")


@pytest.fixture(scope="module")
def embed_model():
    """f32: the reference ranking is exact, and the CPU default (bf16
    products) moves scores by up to ~2e-3, enough to swap close passages."""
    return RagjetEmbedding(precision="f32", num_threads=2)


def corpus_nodes(corpus):
    nodes = []
    for i, row in enumerate(corpus):
        node = TextNode(id_=row["id"], text=row["text"], metadata={"group": i % 3})
        node.excluded_embed_metadata_keys = ["group"]  # embed the text alone
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i // 10}")
        nodes.append(node)
    return nodes


@pytest.fixture(scope="module")
def built(corpus, embed_model, tmp_path_factory):
    """A VectorStoreIndex over the 300 fixture passages, built through a
    StorageContext and persisted."""
    store = RagjetVectorStore()
    storage = StorageContext.from_defaults(vector_store=store)
    index = VectorStoreIndex(corpus_nodes(corpus), storage_context=storage, embed_model=embed_model)
    persist_dir = tmp_path_factory.mktemp("storage")
    storage.persist(persist_dir=str(persist_dir))
    return index, store, persist_dir


def retrieved_ids(index, queries, **kwargs):
    retriever = index.as_retriever(similarity_top_k=10, **kwargs)
    return {q["id"]: [n.node.node_id for n in retriever.retrieve(q["text"])] for q in queries}


def check_against_reference(got, fixtures, corpus):
    """Each ranking equals the exact reference; where it does not, the two
    differ only by passages whose reference scores are near ties. Returns how
    many queries needed that allowance."""
    expected = json.loads((fixtures / "exact_top10.json").read_text())
    passages = np.load(fixtures / "minilm_reference.npy").astype(np.float64)
    queries = np.load(fixtures / "queries_reference.npy").astype(np.float64)
    row = {p["id"]: i for i, p in enumerate(corpus)}
    swapped = 0
    assert got.keys() == expected.keys()
    for qid, ids in got.items():
        if ids == expected[qid]:
            continue
        swapped += 1
        q = queries[int(qid[1:])]
        ours = [passages[row[i]] @ q for i in ids]
        theirs = [passages[row[i]] @ q for i in expected[qid]]
        assert len(ids) == 10
        assert np.max(np.abs(np.subtract(ours, theirs))) < NEAR_TIE, (qid, ids, expected[qid])
    return swapped


def test_index_retrieval_equals_the_exact_reference_ranking(built, fixtures, corpus):
    index, store, _ = built
    assert len(store) == 300
    queries = read_jsonl(fixtures / "queries.jsonl")
    got = retrieved_ids(index, queries)
    swapped = check_against_reference(got, fixtures, corpus)
    # At most a handful of the 200 queries may differ, and only by near ties
    # (none does on the development machine).
    assert swapped <= 2, swapped


def test_with_the_default_precision_retrieval_keeps_the_exact_neighbours(
    embedder, fixtures, corpus
):
    """The CPU default (bf16 products) reorders near ties but keeps the
    neighbourhoods: recall@10 against the exact reference stays near 1."""
    store = RagjetVectorStore()
    index = VectorStoreIndex(
        corpus_nodes(corpus),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=RagjetEmbedding(embedder=embedder),
    )
    got = retrieved_ids(index, read_jsonl(fixtures / "queries.jsonl"))
    expected = json.loads((fixtures / "exact_top10.json").read_text())
    recall = np.mean([len(set(got[q]) & set(expected[q])) / 10 for q in expected])
    assert recall >= 0.98, recall


def test_retrieval_scores_are_the_cosine_similarities(built, fixtures, corpus):
    index, _, _ = built
    queries = read_jsonl(fixtures / "queries.jsonl")[:5]
    passages = np.load(fixtures / "minilm_reference.npy")
    q_ref = np.load(fixtures / "queries_reference.npy")
    row = {p["id"]: i for i, p in enumerate(corpus)}
    retriever = index.as_retriever(similarity_top_k=10)
    for i, q in enumerate(queries):
        hits = retriever.retrieve(q["text"])
        expected = [float(passages[row[h.node.node_id]] @ q_ref[i]) for h in hits]
        np.testing.assert_allclose([h.score for h in hits], expected, atol=3e-4)
        assert all(h.node.text == corpus[row[h.node.node_id]]["text"] for h in hits)


def test_the_persisted_index_loads_and_retrieves_the_same(built, fixtures, corpus, embed_model):
    index, _, persist_dir = built
    storage = StorageContext.from_defaults(
        persist_dir=str(persist_dir),
        vector_store=RagjetVectorStore.from_persist_dir(str(persist_dir)),
    )
    loaded = load_index_from_storage(storage, embed_model=embed_model)
    queries = read_jsonl(fixtures / "queries.jsonl")[:40]
    assert retrieved_ids(loaded, queries) == retrieved_ids(index, queries)
    hybrid = dict(vector_store_query_mode="hybrid", alpha=0.5)
    assert retrieved_ids(loaded, queries[:5], **hybrid) == retrieved_ids(
        index, queries[:5], **hybrid
    )


def test_filters_and_delete_ref_doc_through_the_index(corpus, embed_model):
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    nodes = corpus_nodes(corpus)[:60]
    store = RagjetVectorStore()
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    query = corpus[7]["text"]
    only_group_1 = MetadataFilters(filters=[MetadataFilter(key="group", value=1)])
    hits = index.as_retriever(similarity_top_k=5, filters=only_group_1).retrieve(query)
    assert len(hits) == 5 and all(h.node.metadata["group"] == 1 for h in hits)
    assert hits[0].node.node_id == "p7"  # p7 is in group 1 and is the query itself
    index.delete_ref_doc("doc0")  # p0..p9, found by the store alone
    assert len(store) == 50
    remaining = index.as_retriever(similarity_top_k=60).retrieve(query)
    assert not {h.node.node_id for h in remaining} & {f"p{i}" for i in range(10)}


class CountingLLM(MockLLM):
    """MockLLM (echoes its prompt) that counts the completions it computes."""

    calls: int = 0

    def complete(self, prompt, formatted=False, **kwargs):
        self.calls += 1
        return super().complete(prompt, formatted=formatted, **kwargs)


class RecordingTelemetry:
    """Stands in for ragjet.Telemetry, keeping what it is given."""

    def __init__(self):
        self.spans = []
        self.llm_calls = []

    def record_span(self, name, seconds, ok=True):
        self.spans.append((name, seconds, ok))

    def record_llm_call(self, model, prompt_tokens, completion_tokens, seconds, cached):
        self.llm_calls.append((model, prompt_tokens, completion_tokens, seconds, cached))


@pytest.fixture()
def handlers():
    telemetry = RecordingTelemetry()
    spans, events = RagjetSpanHandler(telemetry), RagjetEventHandler(telemetry)
    root = get_dispatcher()
    root.add_span_handler(spans)
    root.add_event_handler(events)
    yield telemetry, spans, events
    root.span_handlers.remove(spans)
    root.event_handlers.remove(events)


def test_query_engine_with_reranker_cached_llm_and_instrumentation(built, handlers):
    telemetry, spans, events = handlers
    index, _, _ = built
    inner = CountingLLM()
    llm = CachedLLM(inner, telemetry=telemetry)
    reranker = RagjetReranker(top_n=3, model_dir=TINY_CROSS_ENCODER)
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=10), llm=llm, node_postprocessors=[reranker]
    )
    question = "created enables to action raised occurrences"
    first = engine.query(question)
    second = engine.query(question)
    assert inner.calls == 1  # the second answer came from the cache
    assert str(first) == str(second) and question in str(first)  # MockLLM echoes its prompt
    assert len(first.source_nodes) == 3
    # The reranker kept the cross-encoder's best 3 of the retrieved 10.
    retrieved = index.as_retriever(similarity_top_k=10).retrieve(question)
    scores = reranker.cross_encoder.predict(
        [(question, h.node.get_content(metadata_mode="embed")) for h in retrieved]
    )
    best = [retrieved[i].node.node_id for i in np.argsort(-scores, kind="stable")[:3]]
    assert [n.node.node_id for n in first.source_nodes] == best

    names = {record.name for record in spans.recent}
    assert {
        "RetrieverQueryEngine.query",
        "VectorIndexRetriever._retrieve",
        "RagjetEmbedding.get_query_embedding",
        "RagjetReranker._postprocess_nodes",
        "CachedLLM.complete",
        "CountingLLM.complete",  # the wrapped LLM, called once
    } <= names, names
    assert all(record.ok for record in spans.recent)
    assert [name for name, _, _ in telemetry.spans].count("RetrieverQueryEngine.query") == 2
    roots = [r for r in spans.recent if r.name == "RetrieverQueryEngine.query"]
    assert all(r.parent_id is None for r in roots)
    by_id = {r.id: r for r in spans.recent}
    retrieve = [r for r in spans.recent if r.name == "VectorIndexRetriever._retrieve"][0]
    parent = retrieve
    while parent.parent_id is not None and parent.parent_id in by_id:
        parent = by_id[parent.parent_id]
    assert parent.name == "RetrieverQueryEngine.query"  # the retrieval nests in the query

    # One miss and one hit, both accounted by CachedLLM; the wrapped call's
    # events are tagged so the event handler does not count it again.
    assert [c[4] for c in telemetry.llm_calls] == [False, True]
    assert telemetry.llm_calls[0][1] > 0 and telemetry.llm_calls[0][2] > 0
    assert events.counts.get("LLMCompletionEndEvent") == 1
    assert events.counts.get("ReRankEndEvent") == 2
    assert events.counts.get("RetrievalEndEvent", 0) >= 2
    assert events.llm_calls == []


def test_the_event_handler_accounts_llm_calls_made_without_cached_llm(built, handlers):
    telemetry, _, events = handlers
    index, _, _ = built
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=2), llm=CountingLLM()
    )
    engine.query("of most to order or type")
    assert len(events.llm_calls) == 1
    call = events.llm_calls[0]
    assert call.model == "unknown" and call.prompt_tokens > 0 and call.completion_tokens > 0
    assert telemetry.llm_calls == [
        (call.model, call.prompt_tokens, call.completion_tokens, call.seconds, False)
    ]


def test_async_query_engine_runs_the_same_pipeline(built):
    index, _, _ = built
    inner = CountingLLM()
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=5),
        llm=CachedLLM(inner),
        node_postprocessors=[RagjetReranker(top_n=2, model_dir=TINY_CROSS_ENCODER)],
    )
    question = "Indexes stdin at and"

    async def run():
        return await engine.aquery(question), await engine.aquery(question)

    first, second = asyncio.run(run())
    assert inner.calls == 1
    assert str(first) == str(second)
    assert [n.node.node_id for n in first.source_nodes] == [
        n.node.node_id for n in engine.query(question).source_nodes
    ]


def test_real_telemetry_receives_the_pipeline_spans(built):
    index, _, _ = built
    telemetry = ragjet.Telemetry()
    handler = RagjetSpanHandler(telemetry)
    root = get_dispatcher()
    root.add_span_handler(handler)
    try:
        index.as_retriever(similarity_top_k=3).retrieve("Indexes stdin at and")
    finally:
        root.span_handlers.remove(handler)
    assert {"VectorIndexRetriever._retrieve", "RagjetEmbedding.get_query_embedding"} <= {
        r.name for r in handler.recent
    }
    assert "VectorIndexRetriever._retrieve" in telemetry.render()
