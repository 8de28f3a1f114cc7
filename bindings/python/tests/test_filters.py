"""Metadata filters behave exactly as llama-index-core's own
(``build_metadata_filter_fn``, which its ``SimpleVectorStore`` uses): the
same filters over the same nodes select the same ids, for every operator,
every condition and a grid of keys and values.

Where llama-index raises ``TypeError`` for a node (ordering a str against
a number, ``text_match`` on a number, ``in`` against a number), it fails
the whole query; ragjet, which cannot fail a search on data, leaves that
node out. So the comparison is per node: ragjet matches a node exactly
when llama-index's filter function returns True for it.
"""

import itertools

import numpy as np
import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
)
from llama_index.core.vector_stores.utils import build_metadata_filter_fn

import ragjet

NODES = {
    "n0": {"year": 2020, "author": "ann", "tags": ["a", "b"], "rating": 4.5},
    "n1": {"year": 2021.0, "author": "Bob", "tags": ["b"], "rating": 3},
    "n2": {"year": 2022, "author": "", "tags": [], "rating": None},
    "n3": {"author": "annabel", "nums": [1, 2, 3], "flag": True, "year": 2020.0},
    "n4": {"year": "2020", "nums": [2.0], "flag": False, "title": "The Rust Book"},
    "n5": {},
    "n6": {"year": 1999, "tags": ["A", "b", "c"], "title": "rust in ACTION", "nested": [[1], [2]]},
    "n7": {"author": "ÄNN", "title": "Straße", "rating": 0, "flag": 1},
}
KEYS = ["year", "author", "tags", "rating", "nums", "flag", "title", "nested", "missing"]
VALUES = [
    2020,
    2021,
    2020.5,
    0,
    1,
    "2020",
    "ann",
    "b",
    "",
    "Rust",
    "RUST",
    "straße",
    ["a", "c"],
    ["b"],
    [],
    [2020, 2022],
    [1, 4],
    [2.0],
    [0.0, 3.5],
    None,
]


@pytest.fixture(scope="module")
def stores():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(NODES), 8)).astype(np.float32)
    ids = list(NODES)
    simple = SimpleVectorStore()
    simple.add(
        [
            TextNode(id_=i, text=f"text {i}", metadata=dict(NODES[i]), embedding=v.tolist())
            for i, v in zip(ids, vectors)
        ]
    )
    ours = ragjet.FlatIndex(8)
    ours.add(ids, vectors, metadata=[NODES[i] for i in ids])
    return simple, ours, vectors


def reference(simple, filters):
    """Per node: True, False, or "raises"."""
    fn = build_metadata_filter_fn(lambda node_id: simple.data.metadata_dict[node_id], filters)
    out = {}
    for node_id in NODES:
        try:
            out[node_id] = bool(fn(node_id))
        except TypeError:
            out[node_id] = "raises"
    return out


def check(simple, ours, vectors, filters):
    per_node = reference(simple, filters)
    want = sorted(i for i, r in per_node.items() if r is True)
    got = sorted(ours.ids(filters=filters.model_dump()))
    assert got == want, (filters.model_dump(), per_node)
    # A search applies the same filter as ids().
    hits = ours.search(vectors[0], k=len(NODES), filters=filters)
    assert sorted(h.id for h in hits) == want
    if "raises" not in per_node.values():
        result = simple.query(
            VectorStoreQuery(
                query_embedding=vectors[0].tolist(), similarity_top_k=len(NODES), filters=filters
            )
        )
        assert sorted(result.ids) == want
    return per_node


def all_leaves():
    for key, op, value in itertools.product(KEYS, list(FilterOperator), VALUES):
        try:
            yield MetadataFilter(key=key, operator=op, value=value)
        except ValueError:  # a value llama-index's model refuses
            continue


def test_every_operator_key_and_value(stores):
    simple, ours, vectors = stores
    outcomes = set()
    leaves = 0
    for leaf in all_leaves():
        per_node = check(simple, ours, vectors, MetadataFilters(filters=[leaf]))
        outcomes.add((leaf.operator, frozenset(map(str, per_node.values()))))
        leaves += 1
    assert leaves > 1500
    # Every operator both matched and rejected some node, so the grid
    # exercises each one for real.
    for op in FilterOperator:
        seen = set().union(*(o for operator, o in outcomes if operator == op))
        assert {"True", "False"} <= seen, op


def test_the_rules_llama_index_users_rely_on(stores):
    simple, ours, vectors = stores

    def ids(key, op, value):
        f = MetadataFilters(filters=[MetadataFilter(key=key, operator=op, value=value)])
        return sorted(ours.ids(filters=f.model_dump()))

    # NE and NIN match nodes without the key.
    assert "n5" in ids("year", FilterOperator.NE, 2020)
    assert "n5" in ids("year", FilterOperator.NIN, [2020])
    # An int matches an equal float, and a bool its number.
    assert ids("year", FilterOperator.EQ, 2020) == ["n0", "n3"]
    assert ids("flag", FilterOperator.EQ, 1) == ["n3", "n7"]
    # IS_EMPTY: missing, None, "" or [].
    assert ids("rating", FilterOperator.IS_EMPTY, None) == ["n2", "n3", "n4", "n5", "n6"]
    assert ids("tags", FilterOperator.IS_EMPTY, None) == ["n2", "n3", "n4", "n5", "n7"]
    # IN with a str value is a substring test, as Python's `in`.
    assert ids("author", FilterOperator.IN, "joanna") == ["n0", "n2"]  # "" is in any str
    # A str against a number raises in llama-index; ragjet leaves it out.
    assert ids("year", FilterOperator.GT, 2000) == ["n0", "n1", "n2", "n3"]


def test_every_condition_over_pairs_of_filters(stores):
    simple, ours, vectors = stores
    pool = [
        MetadataFilter(key="year", operator=FilterOperator.GTE, value=2021),
        MetadataFilter(key="author", operator=FilterOperator.TEXT_MATCH_INSENSITIVE, value="ann"),
        MetadataFilter(key="tags", operator=FilterOperator.CONTAINS, value="b"),
        MetadataFilter(key="rating", operator=FilterOperator.NE, value=3),
        MetadataFilter(key="nums", operator=FilterOperator.ANY, value=[2, 9]),
        MetadataFilter(key="title", operator=FilterOperator.IS_EMPTY, value=None),
        MetadataFilter(key="year", operator=FilterOperator.NIN, value=[2020, 1999]),
        MetadataFilter(key="year", operator=FilterOperator.LT, value=2021),  # raises on n4
    ]
    for condition in FilterCondition:
        for a, b in itertools.product(pool, repeat=2):
            check(simple, ours, vectors, MetadataFilters(filters=[a, b], condition=condition))
        check(simple, ours, vectors, MetadataFilters(filters=pool[:3], condition=condition))


def test_nested_groups_compose_like_the_flat_ones(stores):
    """llama-index-core refuses nested groups; ragjet evaluates each group
    by the same rules and combines the results by the outer condition."""
    simple, ours, vectors = stores
    inner = [
        MetadataFilters(
            filters=[
                MetadataFilter(key="year", operator=FilterOperator.EQ, value=2020),
                MetadataFilter(key="tags", operator=FilterOperator.CONTAINS, value="b"),
            ],
            condition=FilterCondition.OR,
        ),
        MetadataFilters(
            filters=[MetadataFilter(key="author", operator=FilterOperator.TEXT_MATCH, value="ann")],
            condition=FilterCondition.NOT,
        ),
        # Raises on n4, whose year is the str "2020".
        MetadataFilters(
            filters=[MetadataFilter(key="year", operator=FilterOperator.LT, value=2021)]
        ),
    ]
    combine = {
        FilterCondition.AND: all,
        FilterCondition.OR: any,
        FilterCondition.NOT: lambda x: not any(x),
    }
    for outer in FilterCondition:
        for members in [inner[:2], inner]:
            nested = MetadataFilters(filters=members, condition=outer)
            parts = [reference(simple, group) for group in members]
            # An inner TypeError escapes every group, as it would in Python.
            want = sorted(
                i
                for i in NODES
                if all(p[i] != "raises" for p in parts)
                and combine[outer](p[i] is True for p in parts)
            )
            if len(members) == 3:
                assert "n4" not in want
            assert sorted(ours.ids(filters=nested.model_dump())) == want, (outer, len(members))


def test_an_empty_filter_matches_everything(stores):
    _, ours, _ = stores
    for condition in FilterCondition:
        assert sorted(ours.ids(filters=MetadataFilters(filters=[], condition=condition))) == sorted(
            NODES
        )
