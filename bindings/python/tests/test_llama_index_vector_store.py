"""RagjetVectorStore against llama-index-core's SimpleVectorStore, on the same
nodes and the same operations, and what the simple store lacks."""

import asyncio
import dataclasses
import itertools
import threading

import numpy as np
import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

import ragjet
from ragjet.llama_index import RagjetVectorStore

DIM = 8
WORDS = "apple banana cherry delta echo foxtrot golf hotel india juliet kilo lima".split()

# Metadata of every shape LlamaIndex node metadata takes, with keys missing
# from some nodes and "empty" values of each kind.
METADATA = [
    {"author": "alice", "year": 2020, "rating": 4.5, "tags": ["a", "b"], "flag": True},
    {"author": "bob", "year": 2021, "rating": 3.0, "tags": ["b"], "nums": [1, 2]},
    {"author": "carol", "year": 2019, "rating": 5, "tags": [], "flag": False, "note": ""},
    {"author": "Alice Smith", "year": 2020.0, "nums": [2, 3], "note": "hello world"},
    {"year": 2022, "rating": 2.5, "tags": ["c", "a"], "maybe": None},
    {"author": "dave", "rating": 4.0, "flag": True, "note": "Hello"},
    {"author": "alice", "year": 2018, "tags": ["a"], "nums": [], "maybe": 0},
    {"author": "erin", "year": 2023, "rating": 1, "note": "world", "flag": 1},
    {},
    {"author": "", "year": 0, "rating": 0.0, "tags": ["b", "c"], "nums": [1]},
    {"author": "frank", "year": 2021, "rating": 3.5, "maybe": "x", "note": "hello"},
    {"author": "bob", "year": 2024, "tags": ["d"], "nums": [3], "flag": False},
]
KEYS = ["author", "year", "rating", "tags", "nums", "flag", "note", "maybe", "absent"]
VALUES = [
    "alice",
    "hello",
    "",
    "a",
    2020,
    0,
    1,
    2.5,
    4.0,
    ["alice", "bob"],
    ["a", "c"],
    [1, 2],
    [2020, 2021],
    [4.5, 1.0],
    [],
    None,
]


def make_nodes(seed=7):
    rng = np.random.default_rng(seed)
    nodes = []
    for i, meta in enumerate(METADATA):
        text = " ".join(rng.choice(WORDS, size=6)) + f" node{i}"
        node = TextNode(
            id_=f"n{i}",
            text=text,
            metadata=dict(meta),
            embedding=rng.standard_normal(DIM).astype(np.float32).tolist(),
        )
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i % 4}")
        nodes.append(node)
    return nodes


def both(**kwargs):
    simple, ours = SimpleVectorStore(), RagjetVectorStore(**kwargs)
    nodes = make_nodes()
    simple.add(nodes)
    ours.add(make_nodes())
    return simple, ours


def run_query(store, query, **kwargs):
    """(ids, similarities) or the exception class family."""
    try:
        result = store.query(query, **kwargs)
    except (TypeError, ValueError) as err:  # ragjet.InvalidInputError is a ValueError
        return ("error", type(err).__name__)
    return result.ids, result.similarities


def assert_same(simple, ours, query, **kwargs):
    """Ours answers as the simple store does. Where the simple store raises
    TypeError on a node (a filter ordering a stored str against a number,
    say), ragjet does not fail the search: it leaves that node out, and
    answers as the simple store does over the nodes it does match."""
    expected = run_query(simple, query, **kwargs)
    got = run_query(ours, query, **kwargs)
    if expected[0] == "error":
        verdicts = per_node(simple, query.filters)
        assert "raises" in verdicts.values(), (query.filters, expected)
        matching = [
            i
            for i, v in verdicts.items()
            if v is True and (query.node_ids is None or i in query.node_ids)
        ]
        expected = ([], [])
        if matching:
            restricted = dataclasses.replace(query, filters=None, node_ids=matching)
            expected = run_query(simple, restricted, **kwargs)
    assert got[0] == expected[0], (query.filters, expected[0], got[0])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-5)


def per_node(simple, filters):
    """llama-index-core's verdict per stored node: True, False or "raises"."""
    fn = build_metadata_filter_fn(lambda i: simple.data.metadata_dict[i], filters)
    verdicts = {}
    for node_id in simple.data.embedding_dict:
        try:
            verdicts[node_id] = bool(fn(node_id))
        except TypeError:
            verdicts[node_id] = "raises"
    return verdicts


ALL = len(METADATA)


def query_of(filters=None, k=ALL, **kwargs):
    vector = np.random.default_rng(1).standard_normal(DIM).tolist()
    return VectorStoreQuery(query_embedding=vector, similarity_top_k=k, filters=filters, **kwargs)


def single_filters():
    for key, op, value in itertools.product(KEYS, list(FilterOperator), VALUES):
        try:
            yield MetadataFilter(key=key, operator=op, value=value)
        except ValueError:  # a value the filter model refuses
            continue


def test_without_filters_the_ranking_and_scores_equal_the_simple_store():
    simple, ours = both()
    for k in (1, 3, len(METADATA), 50):
        assert_same(simple, ours, query_of(k=k))


def split_by_outcome(simple):
    """Single filters over every key, operator and value kind, split into
    those SimpleVectorStore answers and those it raises TypeError on."""
    answered, raising = [], []
    for f in single_filters():
        outcome = run_query(simple, query_of(MetadataFilters(filters=[f])))
        (raising if outcome[0] == "error" else answered).append(f)
    return answered, raising


def test_every_operator_on_every_kind_of_value_matches_the_simple_store():
    simple, ours = both()
    answered, _ = split_by_outcome(simple)
    assert len(answered) > 900  # every operator, over every key and value kind
    for f in answered:
        assert_same(simple, ours, query_of(MetadataFilters(filters=[f])))


def test_where_the_simple_store_raises_on_mixed_types_ours_leaves_the_node_out():
    # Python raises TypeError comparing, say, a stored str with an int
    # (`"a" > 3`), failing the whole query; assert_same checks that ragjet
    # returns the nodes llama-index matches, without the ones it raises on.
    simple, ours = both()
    _, raising = split_by_outcome(simple)
    assert len(raising) > 900
    for f in raising:
        assert_same(simple, ours, query_of(MetadataFilters(filters=[f])))
        assert_same(simple, ours, query_of(MetadataFilters(filters=[f]), k=2))


@pytest.mark.parametrize("condition", list(FilterCondition))
def test_every_condition_matches_the_simple_store(condition):
    simple, ours = both()
    rng = np.random.default_rng(3)
    pool = [f for f in single_filters()]
    for _ in range(150):
        picks = [pool[i] for i in rng.choice(len(pool), size=rng.integers(1, 4), replace=False)]
        assert_same(simple, ours, query_of(MetadataFilters(filters=picks, condition=condition)))
    assert_same(simple, ours, query_of(MetadataFilters(filters=[], condition=condition)))


def reference_match(filters, metadata):
    """Nested groups evaluated with llama-index-core's own single-level
    function at each level (the core refuses nested groups)."""
    results = []
    for member in filters.filters:
        if isinstance(member, MetadataFilters):
            results.append(reference_match(member, metadata))
        else:
            one = MetadataFilters(filters=[member])
            results.append(build_metadata_filter_fn(lambda _: metadata, one)("x"))
    if not filters.filters:
        return True
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return all(results)
    if condition == FilterCondition.OR:
        return any(results)
    return not any(results)


def test_nested_filters_follow_the_core_semantics_at_every_level():
    _, ours = both()
    nodes = make_nodes()
    rng = np.random.default_rng(5)
    stored = {n.node_id: _stored(n) for n in nodes}
    # Filters Python can evaluate on every node (the others raise TypeError).
    pool = [f for f in single_filters() if all(_evaluates(f, m) for m in stored.values())]
    conditions = list(FilterCondition)
    checked = 0
    for _ in range(200):
        inner = MetadataFilters(
            filters=[pool[i] for i in rng.choice(len(pool), size=2, replace=False)],
            condition=conditions[rng.integers(3)],
        )
        outer = MetadataFilters(
            filters=[inner, pool[rng.integers(len(pool))]],
            condition=conditions[rng.integers(3)],
        )
        expected = [i for i, m in stored.items() if reference_match(outer, m)]
        got = ours.query(query_of(outer)).ids
        assert sorted(got) == sorted(expected), outer
        checked += len(expected)
    assert checked > 0


def _stored(node):
    # The metadata SimpleVectorStore filters on: the node's, plus the ids
    # node_to_metadata_dict adds.
    simple = SimpleVectorStore()
    simple.add([node])
    return simple.data.metadata_dict[node.node_id]


def _evaluates(f, metadata):
    try:
        build_metadata_filter_fn(lambda _: metadata, MetadataFilters(filters=[f]))("x")
    except TypeError:
        return False
    return True


def test_filters_on_the_ids_llama_index_adds_match_the_simple_store():
    simple, ours = both()
    for key in ("doc_id", "ref_doc_id", "document_id"):
        f = MetadataFilters(filters=[MetadataFilter(key=key, value="doc1")])
        assert_same(simple, ours, query_of(f))
        assert sorted(ours.query(query_of(f)).ids) == ["n1", "n5", "n9"]


def test_node_ids_restrict_the_query_as_in_the_simple_store():
    simple, ours = both()
    for ids in (["n1", "n3", "n7"], ["n0"], ["n2", "missing", "n11"]):
        assert_same(simple, ours, query_of(node_ids=ids))
        assert_same(simple, ours, query_of(node_ids=ids, k=2))
    f = MetadataFilters(filters=[MetadataFilter(key="year", operator=">", value=2019)])
    assert_same(simple, ours, query_of(f, node_ids=["n0", "n1", "n2", "n4"]))


def test_empty_node_ids_mean_no_restriction_as_in_the_qdrant_and_chroma_stores():
    # VectorStoreIndex.as_retriever passes node_ids=[] for a store that keeps
    # the nodes itself; SimpleVectorStore (which does not) would find nothing.
    _, ours = both()
    assert ours.query(query_of(node_ids=[])).ids == ours.query(query_of()).ids
    assert len(ours.query(query_of(node_ids=[])).ids) == len(METADATA)


def test_doc_ids_restrict_the_query_to_those_documents():
    _, ours = both()
    got = ours.query(query_of(doc_ids=["doc0", "doc3"])).ids
    assert sorted(got) == ["n0", "n11", "n3", "n4", "n7", "n8"]
    assert ours.query(query_of(doc_ids=[])).ids == []


def test_deletes_and_clear_leave_the_same_nodes_as_the_simple_store():
    simple, ours = both()
    simple.delete("doc2")
    ours.delete("doc2")
    assert_same(simple, ours, query_of())
    f = MetadataFilters(filters=[MetadataFilter(key="author", value="bob")])
    simple.delete_nodes(filters=f)
    ours.delete_nodes(filters=f)
    assert_same(simple, ours, query_of())
    simple.delete_nodes(node_ids=["n0", "n3", "nope"])
    ours.delete_nodes(node_ids=["n0", "n3", "nope"])
    assert_same(simple, ours, query_of())
    g = MetadataFilters(filters=[MetadataFilter(key="year", operator=">=", value=2021)])
    simple.delete_nodes(node_ids=["n4", "n5", "n7"], filters=g)
    ours.delete_nodes(node_ids=["n4", "n5", "n7"], filters=g)
    assert_same(simple, ours, query_of())
    assert sorted(n.node_id for n in ours.get_nodes()) == sorted(simple.data.embedding_dict)
    simple.clear()
    ours.clear()
    assert_same(simple, ours, query_of())
    assert len(ours) == 0 and ours.get_nodes() == []


def test_delete_nodes_without_arguments_deletes_everything_as_the_simple_store_does():
    simple, ours = both()
    simple.delete_nodes()
    ours.delete_nodes()
    assert simple.data.embedding_dict == {}
    assert ours.get_nodes() == []


def test_re_adding_a_node_id_replaces_it():
    simple, ours = both()
    replacement = make_nodes(seed=99)[4]
    replacement.metadata = {"author": "zed"}
    simple.add([replacement])
    ours.add([replacement])
    assert len(ours) == len(METADATA)
    assert_same(simple, ours, query_of())
    f = MetadataFilters(filters=[MetadataFilter(key="author", value="zed")])
    assert ours.query(query_of(f)).ids == ["n4"]
    assert ours.get_nodes(["n4"])[0].text == replacement.text


def test_mmr_equals_the_simple_store():
    simple, ours = both()
    for threshold in (None, 0.0, 0.3, 0.5, 0.9, 1.0):
        for k in (1, 4, 12):
            q = query_of(k=k, mode=VectorStoreQueryMode.MMR)
            assert_same(simple, ours, q, mmr_threshold=threshold)
    f = MetadataFilters(filters=[MetadataFilter(key="rating", operator=">", value=2)])
    assert_same(simple, ours, query_of(f, k=3, mode=VectorStoreQueryMode.MMR), mmr_threshold=0.2)


def test_query_returns_the_stored_nodes_with_text_metadata_and_relationships():
    _, ours = both()
    originals = {n.node_id: n for n in make_nodes()}
    result = ours.query(query_of(k=5))
    assert len(result.nodes) == len(result.similarities) == len(result.ids) == 5
    assert result.similarities == sorted(result.similarities, reverse=True)
    for node, node_id in zip(result.nodes, result.ids):
        original = originals[node_id]
        assert node.node_id == node_id
        assert node.text == original.text
        assert node.metadata == original.metadata
        assert node.ref_doc_id == original.ref_doc_id


def test_get_nodes_returns_nodes_with_their_embeddings():
    _, ours = both()
    originals = {n.node_id: n for n in make_nodes()}
    got = ours.get_nodes(node_ids=["n5", "n1", "unknown"])
    assert [n.node_id for n in got] == ["n5", "n1"]
    for node in got:
        assert node.text == originals[node.node_id].text
        assert node.metadata == originals[node.node_id].metadata
        # Cosine stores keep unit vectors (as Qdrant does): the direction comes back.
        original = np.array(originals[node.node_id].embedding)
        np.testing.assert_allclose(node.embedding, original / np.linalg.norm(original), atol=1e-6)
    # Python: True == 1, so an int filter matches a stored bool.
    f = MetadataFilters(filters=[MetadataFilter(key="flag", value=1)])
    assert sorted(n.node_id for n in ours.get_nodes(filters=f)) == ["n0", "n5", "n7"]
    assert [n.node_id for n in ours.get_nodes(node_ids=["n0", "n1"], filters=f)] == ["n0"]
    assert len(ours.get_nodes()) == len(METADATA)
    _, inner_product = both(metric="ip")  # other metrics keep the vectors as given
    for node in inner_product.get_nodes(node_ids=["n2", "n3"]):
        np.testing.assert_allclose(node.embedding, originals[node.node_id].embedding, atol=1e-6)


def test_sparse_hybrid_and_their_alpha_extremes():
    _, ours = both()
    nodes = make_nodes()
    target = nodes[6]
    rare = target.text.split()[-1]  # "node6" appears in one text only
    sparse = ours.query(
        VectorStoreQuery(query_str=rare, similarity_top_k=3, mode=VectorStoreQueryMode.SPARSE)
    )
    assert sparse.ids[0] == "n6" and sparse.nodes[0].text == target.text
    dense = ours.query(query_of(k=3))
    vector_only = ours.query(
        query_of(k=3, query_str=rare, mode=VectorStoreQueryMode.HYBRID, alpha=1.0)
    )
    # The last of min-max normalised lists scores 0 and may tie with hits of
    # the other list, so only the hits above it are compared.
    assert vector_only.ids[:2] == dense.ids[:2]
    keyword_only = ours.query(
        query_of(k=3, query_str=rare, mode=VectorStoreQueryMode.HYBRID, alpha=0.0)
    )
    assert keyword_only.ids[0] == "n6"
    mixed = ours.query(query_of(k=5, query_str=rare, mode=VectorStoreQueryMode.HYBRID))
    assert "n6" in mixed.ids and set(dense.ids[:1]) <= set(mixed.ids)
    assert len(mixed.nodes) == len(mixed.similarities) == len(mixed.ids)
    f = MetadataFilters(filters=[MetadataFilter(key="author", value="alice")])
    filtered = ours.query(query_of(f, k=5, query_str="apple node0", mode="hybrid"))
    assert set(filtered.ids) <= {"n0", "n6"} and filtered.ids
    filtered_sparse = ours.query(
        VectorStoreQuery(query_str=rare, similarity_top_k=3, mode="sparse", filters=f)
    )
    assert filtered_sparse.ids == ["n6"]
    excluded = MetadataFilters(filters=[MetadataFilter(key="author", value="bob")])
    assert ours.query(VectorStoreQuery(query_str=rare, mode="sparse", filters=excluded)).ids == []


def test_keyword_modes_need_the_keyword_index_and_a_query_string():
    _, ours = both(enable_hybrid=False)
    with pytest.raises(ValueError, match="enable_hybrid"):
        ours.query(VectorStoreQuery(query_str="apple", mode=VectorStoreQueryMode.SPARSE))
    _, ours = both()
    with pytest.raises(ValueError, match="query_str"):
        ours.query(VectorStoreQuery(mode=VectorStoreQueryMode.SPARSE))
    with pytest.raises(ValueError, match="svm"):
        ours.query(query_of(mode=VectorStoreQueryMode.SVM))
    with pytest.raises(ValueError, match="query_embedding"):
        ours.query(VectorStoreQuery(similarity_top_k=2))


def test_bad_inputs_are_clear_errors():
    _, ours = both()
    with pytest.raises(ragjet.InvalidInputError):
        ours.query(VectorStoreQuery(query_embedding=[0.1] * (DIM + 1), similarity_top_k=2))
    with pytest.raises(ragjet.InvalidInputError):
        ours.query(query_of(k=0))
    with pytest.raises(ragjet.InvalidInputError):
        ours.add([TextNode(id_="wide", text="x", embedding=[0.5] * (DIM + 2))])
    with pytest.raises(ValueError, match="no embedding"):
        ours.add([TextNode(id_="bare", text="x")])
    with pytest.raises(ValueError):
        RagjetVectorStore(index="annoy")


def test_an_empty_store_answers_empty_and_learns_its_width_at_first_add():
    store = RagjetVectorStore()
    assert store.client is None and len(store) == 0
    empty = store.query(query_of())
    assert empty.ids == [] and empty.nodes == [] and empty.similarities == []
    store.add(make_nodes()[:2])
    assert store.dim == DIM and len(store) == 2
    store.clear()
    store.add([TextNode(id_="w", text="wider", embedding=[0.1] * 16)])
    assert store.dim == 16


def test_hnsw_store_finds_the_exact_neighbours_on_a_small_set():
    simple, ours = both(index="hnsw", ef_search=64)
    assert isinstance(ours.client, ragjet.HnswIndex)
    for k in (1, 5):
        assert_same(simple, ours, query_of(k=k))


def test_persistence_round_trip(tmp_path):
    _, ours = both()
    ours.persist(str(tmp_path / "default__vector_store.json"))
    loaded = RagjetVectorStore.from_persist_dir(str(tmp_path))
    assert len(loaded) == len(ours) and loaded.dim == DIM
    for q in (query_of(k=5), query_of(k=3, query_str="apple", mode="hybrid")):
        a, b = ours.query(q), loaded.query(q)
        assert a.ids == b.ids
        np.testing.assert_allclose(a.similarities, b.similarities, atol=1e-6)
        assert [n.text for n in a.nodes] == [n.text for n in b.nodes]
    reopened = RagjetVectorStore(persist_dir=str(tmp_path))
    assert reopened.query(query_of(k=4)).ids == ours.query(query_of(k=4)).ids
    reopened.delete("doc0")
    reopened.persist()  # back into persist_dir
    again = RagjetVectorStore.from_persist_dir(str(tmp_path))
    assert len(again) == len(ours) - 3


def test_hnsw_persistence_round_trip_keeps_its_settings(tmp_path):
    _, ours = both(index="hnsw", m=8, ef_search=40, enable_hybrid=False)
    ours.persist(str(tmp_path / "docs__vector_store.json"))
    loaded = RagjetVectorStore.from_persist_dir(str(tmp_path), namespace="docs")
    assert isinstance(loaded.client, ragjet.HnswIndex)
    assert (loaded.index, loaded.m, loaded.ef_search, loaded.enable_hybrid) == (
        "hnsw",
        8,
        40,
        False,
    )
    assert loaded.client.ef_search == 40
    assert loaded.query(query_of(k=5)).ids == ours.query(query_of(k=5)).ids
    loaded.delete("doc0")
    loaded.persist()  # back to docs__vector_store.json
    assert len(RagjetVectorStore.from_persist_dir(str(tmp_path), namespace="docs")) == 9


def test_loading_a_simple_vector_store_file_is_refused_with_a_reason(tmp_path):
    simple, _ = both()
    simple.persist(str(tmp_path / "default__vector_store.json"))
    with pytest.raises(ValueError, match="SimpleVectorStore"):
        RagjetVectorStore.from_persist_dir(str(tmp_path))
    with pytest.raises(ValueError, match="no RagjetVectorStore"):
        RagjetVectorStore.from_persist_dir(str(tmp_path / "empty"))


class ThreadProbe(RagjetVectorStore):
    """Records the thread each synchronous method runs on."""

    def _note(self):
        self.__dict__.setdefault("_threads", []).append(threading.get_ident())

    def query(self, query, **kwargs):
        self._note()
        return super().query(query, **kwargs)

    def add(self, nodes, **kwargs):
        self._note()
        return super().add(nodes, **kwargs)

    def delete(self, ref_doc_id, **kwargs):
        self._note()
        return super().delete(ref_doc_id, **kwargs)

    def get_nodes(self, node_ids=None, filters=None):
        self._note()
        return super().get_nodes(node_ids, filters)

    def delete_nodes(self, node_ids=None, filters=None, **kwargs):
        self._note()
        return super().delete_nodes(node_ids, filters, **kwargs)

    def clear(self):
        self._note()
        return super().clear()


def test_async_methods_run_in_a_worker_thread_and_agree_with_the_sync_ones():
    store = ThreadProbe()

    async def run():
        loop_thread = threading.get_ident()
        await store.async_add(make_nodes())
        result = await store.aquery(query_of(k=4))
        nodes = await store.aget_nodes(node_ids=["n1"])
        await store.adelete("doc1")
        await store.adelete_nodes(node_ids=["n0"])
        after = await store.aquery(query_of())
        await store.aclear()
        return loop_thread, result, nodes, after

    loop_thread, result, nodes, after = asyncio.run(run())
    threads = store.__dict__["_threads"]
    assert len(threads) == 7 and loop_thread not in threads
    _, sync = both()
    assert result.ids == sync.query(query_of(k=4)).ids
    assert nodes[0].node_id == "n1"
    assert "n0" not in after.ids and not {"n1", "n5", "n9"} & set(after.ids)
    assert len(store) == 0


def test_concurrent_queries_from_threads_agree_with_sequential_ones():
    _, ours = both()
    queries = [query_of(k=k) for k in (1, 2, 3, 4, 5, 6, 7, 8)]
    expected = [ours.query(q).ids for q in queries]
    results = [None] * len(queries)

    def work(i):
        for _ in range(20):
            results[i] = ours.query(queries[i]).ids

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_an_empty_store_is_truthy_so_storage_context_keeps_it():
    from llama_index.core import StorageContext

    store = RagjetVectorStore()
    assert len(store) == 0 and bool(store)
    assert StorageContext.from_defaults(vector_store=store).vector_store is store


def test_pickling_is_refused_rather_than_returning_an_empty_store():
    import pickle

    _, ours = both()
    with pytest.raises(TypeError, match="persist"):
        pickle.dumps(ours)
