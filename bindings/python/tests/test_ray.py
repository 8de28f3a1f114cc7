"""ragjet.ray on a local Ray (two CPUs): Ray Data embedding equals one
process's, a sharded index answers as one index does, writes reach the
owning shard, and Engine replicas share the Redis tier.

Needs ``ray[data]`` (a test extra) and, for the replica test, a Redis
server at ``RAGJET_TEST_REDIS_URL`` (``scripts/test.sh`` starts one; by
hand: ``redis-server --port 6392 --daemonize yes --save ''`` and
``RAGJET_TEST_REDIS_URL=redis://127.0.0.1:6392/``). A missing one fails.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import textwrap
import urllib.parse

import numpy as np
import pytest

import ragjet

try:
    import ray
    import ray.data

    import ragjet.ray as rr
except ImportError as err:  # fail, not skip: CI installs ray[data]
    pytest.fail(f'ragjet.ray needs Ray Data: pip install "ray[data]" ({err})', pytrace=False)

# A subset keeps the file near a minute on two cores.
EMBED_ROWS = 64


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(fixtures):
    with open(fixtures / "corpus.jsonl") as f:
        rows = [json.loads(line) for line in f]
    vectors = np.load(fixtures / "minilm_reference.npy")
    queries = np.load(fixtures / "queries_reference.npy")
    return rows, vectors, queries


def entries(rows, vectors):
    """Rows for build_index: id, text, embedding, and metadata columns."""
    return [
        {
            "id": r["id"],
            "text": r["text"],
            "embedding": vectors[i],
            "grp": i % 3,
            "tenant": f"t{i % 5}",
            "doc": f"d{i // 10}",
        }
        for i, r in enumerate(rows)
    ]


def assert_same_hits(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert [h.id for h in g] == [h.id for h in w]
        assert [h.score for h in g] == [h.score for h in w]


@pytest.fixture(scope="module")
def four_shards(local_ray, corpus, tmp_path_factory):
    rows, vectors, _ = corpus
    path = tmp_path_factory.mktemp("sharded") / "idx"
    manifest = rr.build_index(
        ray.data.from_items(entries(rows, vectors)),
        shards=4,
        path=path,
        metadata_columns=["grp", "tenant"],
        ref_doc_column="doc",
    )
    return path, manifest


def single_index(rows, vectors):
    one = ragjet.FlatIndex(vectors.shape[1])
    one.add(
        [r["id"] for r in rows],
        vectors,
        metadata=[{"grp": i % 3, "tenant": f"t{i % 5}"} for i in range(len(rows))],
        texts=[r["text"] for r in rows],
        ref_doc_ids=[f"d{i // 10}" for i in range(len(rows))],
    )
    return one


def test_shard_routing_is_pinned():
    # Saved indexes route by these values: a change here strands every
    # entry of an existing sharded index in the wrong shard.
    keys = ["p0", "p1", "tenant-a", "", "é", 42]
    assert [rr.shard_of(k, 1000) for k in keys] == [716, 585, 815, 876, 743, 738]
    assert rr.shard_of(42, 1000) == rr.shard_of("42", 1000)
    with pytest.raises(ragjet.InvalidInputError):
        rr.shard_of("p0", 0)


def test_ray_data_embedding_equals_one_process(local_ray, corpus, embedder):
    rows = corpus[0][:EMBED_ROWS]
    ds = rr.embed(ray.data.from_items(rows), concurrency=2, num_cpus=1, batch_size=16)
    out = {r["id"]: r["embedding"] for r in ds.take_all()}
    assert sorted(out) == sorted(r["id"] for r in rows)
    got = np.stack([out[r["id"]] for r in rows]).astype(np.float64)
    want = embedder.embed([r["text"] for r in rows]).astype(np.float64)
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 1 - 1e-6, cosine.min()


@ray.remote
class Loads:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1

    def count(self):
        return self.n


def test_model_loads_once_per_actor_not_per_batch(local_ray, corpus):
    loads = Loads.options(name="ragjet-test-loads").remote()

    def make_embedder():
        ray.get(ray.get_actor("ragjet-test-loads").add.remote())
        return ragjet.Embedder(num_threads=1)

    rows = corpus[0][:48]
    ds = rr.embed(
        ray.data.from_items(rows), concurrency=1, batch_size=8, make_embedder=make_embedder
    )
    assert len(ds.take_all()) == 48  # six batches
    assert ray.get(loads.count.remote()) == 1
    ray.kill(loads)


def test_four_shards_answer_as_one_index(four_shards, corpus):
    rows, vectors, queries = corpus
    path, manifest = four_shards
    assert sum(manifest["counts"]) == len(rows)
    for s, name in enumerate(manifest["shards"]):
        shard = ragjet.FlatIndex.load(path / name)  # a normal saved index
        assert len(shard) == manifest["counts"][s] > 0
        assert all(rr.shard_of(i, 4) == s for i in shard.ids())
    one = single_index(rows, vectors)
    sharded = rr.ShardedIndex(path)
    assert len(sharded) == len(rows) and sharded.shards == 4
    assert_same_hits(sharded.search(queries, k=10), one.search(queries, k=10))
    got = sharded.search(queries[0], k=10)
    assert [h.id for h in got] == [h.id for h in one.search(queries[0], k=10)]
    assert got[0].text == one.get(got[0].id).text and got[0].ref_doc_id is not None
    grp = {"filters": [{"key": "grp", "value": 1, "operator": "=="}], "condition": "and"}
    assert_same_hits(
        sharded.search(queries, k=10, filters=grp), one.search(queries, k=10, filters=grp)
    )
    assert sorted(sharded.ids(grp)) == sorted(one.ids(grp))
    with rr.ShardedIndex(path, ray_actors=True) as actors:
        assert_same_hits(actors.search(queries, k=10), one.search(queries, k=10))
        assert_same_hits(
            actors.search(queries[:20], k=10, filters=grp),
            one.search(queries[:20], k=10, filters=grp),
        )


def tie_rows(n):
    """Eight copies of each of a few vectors: every top-10 is all ties."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((n // 8, 16)).astype(np.float32)
    vectors = np.repeat(base, 8, axis=0)
    return [{"id": f"x{i}", "text": "", "embedding": v} for i, v in enumerate(vectors)], base


def test_equal_scores_come_in_the_single_index_order(local_ray, tmp_path):
    items, base = tie_rows(64)
    rr.build_index(ray.data.from_items(items), shards=1, path=tmp_path / "one")
    rr.build_index(ray.data.from_items(items), shards=4, path=tmp_path / "four")
    plain = ragjet.FlatIndex.load(tmp_path / "one" / "shard-0000")  # the single index
    four = rr.ShardedIndex(tmp_path / "four")
    assert_same_hits(four.search(base, k=10), plain.search(base, k=10))
    # Entries added later rank after the built ones among equals, as they do
    # appended to the single index; an upserted old id keeps its place.
    ids = ["y0", "y1", "y2", "x3"]
    new = np.stack([base[0], base[0], base[1], base[0]])
    four.add(ids, new)
    plain.add(ids, new)
    assert_same_hits(four.search(base, k=12), plain.search(base, k=12))
    four.save()
    again = rr.ShardedIndex(tmp_path / "four")
    assert_same_hits(again.search(base, k=12), plain.search(base, k=12))


def test_writes_go_to_the_owning_shard(four_shards, corpus, tmp_path):
    rows, vectors, queries = corpus
    path = tmp_path / "idx"
    shutil.copytree(four_shards[0], path)
    sharded = rr.ShardedIndex(path)
    one = single_index(rows, vectors)
    rng = np.random.default_rng(3)
    fresh = rng.standard_normal((6, vectors.shape[1])).astype(np.float32)
    ids = ["p5", "p17", "new-a", "new-b", "new-c", "p200"]  # three upserts, three new
    meta = [{"grp": 9, "tenant": "t9"}] * 6
    for index in (sharded, one):
        index.add(ids, fresh, metadata=meta, texts=[f"text {i}" for i in ids])
        assert index.delete(["p1", "p2", "nope", "new-b"]) == 3
        assert index.delete_ref_doc("d7") == 10
    assert len(sharded) == len(one) == len(rows) + 3 - 3 - 10
    for i in ids:
        assert (i in sharded) == (i in one)
        if i in sharded:
            assert sharded.get(i).metadata == one.get(i).metadata
    probe = np.concatenate([queries[:50], fresh])
    assert_same_hits(sharded.search(probe, k=10), one.search(probe, k=10))
    sharded.save()
    reopened = rr.ShardedIndex(path)
    assert_same_hits(reopened.search(probe, k=10), one.search(probe, k=10))
    for s in range(4):  # every entry sits in the shard its id hashes to
        shard = ragjet.FlatIndex.load(path / f"shard-{s:04d}")
        assert all(rr.shard_of(i, 4) == s for i in shard.ids())
    assert "new-a" in ragjet.FlatIndex.load(path / f"shard-{rr.shard_of('new-a', 4):04d}")


def test_add_is_all_or_nothing(four_shards, tmp_path):
    path = tmp_path / "idx"
    shutil.copytree(four_shards[0], path)
    sharded = rr.ShardedIndex(path)
    before = len(sharded)
    bad = np.ones((3, 384), dtype=np.float32)
    bad[2, 5] = np.nan
    with pytest.raises(ragjet.InvalidInputError):
        sharded.add(["q1", "q2", "q3"], bad)
    assert len(sharded) == before and "q1" not in sharded


def test_partition_by_tenant(local_ray, corpus, tmp_path):
    rows, vectors, queries = corpus
    items = entries(rows[:100], vectors[:100])
    rr.build_index(
        ray.data.from_items(items),
        shards=3,
        path=tmp_path / "t",
        metadata_columns=["tenant"],
        partition_by="tenant",
    )
    sharded = rr.ShardedIndex(tmp_path / "t")
    assert sharded.partition_by == "tenant"
    for s in range(3):
        shard = ragjet.FlatIndex.load(tmp_path / "t" / f"shard-{s:04d}")
        tenants = {shard.get(i).metadata["tenant"] for i in shard.ids()}
        assert all(rr.shard_of(t, 3) == s for t in tenants)
    one = ragjet.FlatIndex(384)
    one.add([r["id"] for r in rows[:100]], vectors[:100])
    assert_same_hits(sharded.search(queries[:20], k=10), one.search(queries[:20], k=10))
    # Moving p0 (tenant t0) to another tenant moves it to that tenant's shard.
    target = next(
        t for t in (f"t{n}" for n in range(5)) if rr.shard_of(t, 3) != rr.shard_of("t0", 3)
    )
    sharded.add(["p0"], vectors[:1], metadata=[{"tenant": target}])
    assert len(sharded) == 100 and sharded.get("p0").metadata == {"tenant": target}
    sharded.save()
    assert "p0" in ragjet.FlatIndex.load(tmp_path / "t" / f"shard-{rr.shard_of(target, 3):04d}")
    assert "p0" not in ragjet.FlatIndex.load(tmp_path / "t" / f"shard-{rr.shard_of('t0', 3):04d}")
    with pytest.raises(ragjet.InvalidInputError, match="partition key"):
        sharded.add(["p1"], vectors[1:2], metadata=[{"other": 1}])


def test_hnsw_shards(local_ray, corpus, tmp_path):
    rows, vectors, queries = corpus
    items = [{"id": r["id"], "embedding": vectors[i]} for i, r in enumerate(rows)]
    rr.build_index(
        ray.data.from_items(items), shards=2, path=tmp_path / "h", text_column=None, index="hnsw"
    )
    assert isinstance(ragjet.HnswIndex.load(tmp_path / "h" / "shard-0001"), ragjet.HnswIndex)
    sharded = rr.ShardedIndex(tmp_path / "h")
    sharded.ef_search = 200  # set on every shard
    assert sharded.ef_search == 200
    exact = ragjet.FlatIndex(vectors.shape[1])
    exact.add([r["id"] for r in rows], vectors)
    got = sharded.search(queries, k=10)
    want = exact.search(queries, k=10)
    found = sum(len({h.id for h in g} & {h.id for h in w}) for g, w in zip(got, want))
    assert found / (10 * len(queries)) >= 0.99


def test_build_refuses_bad_input(local_ray, corpus, tmp_path):
    rows, vectors, _ = corpus
    with pytest.raises(ragjet.InvalidInputError):
        rr.build_index(ray.data.from_items(entries(rows[:5], vectors)), shards=0, path=tmp_path)
    with pytest.raises(ragjet.InvalidInputError):
        rr.build_index(
            ray.data.from_items(entries(rows[:5], vectors)),
            shards=2,
            path=tmp_path / "ip",
            index="hnsw",
            metric="ip",
        )
    assert not (tmp_path / "ip" / "shard-0000").exists()
    dup = entries(rows[:5], vectors) + entries(rows[:1], vectors)
    with pytest.raises(ragjet.InvalidInputError, match="appears twice"):
        rr.build_index(ray.data.from_items(dup), shards=2, path=tmp_path / "dup")
    spread = entries(rows[:5], vectors)
    spread.append(dict(spread[0], tenant="t-other"))  # one id, two tenants
    with pytest.raises(ragjet.InvalidInputError, match="two partitions"):
        rr.build_index(
            ray.data.from_items(spread),
            shards=8,
            path=tmp_path / "spread",
            metadata_columns=["tenant"],
            partition_by="tenant",
        )
    with pytest.raises(ragjet.StorageError):
        rr.ShardedIndex(tmp_path / "missing")


REPLICA = textwrap.dedent(
    """
    import json, sys, ragjet
    step, path, query, doc = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    if step == "create":
        e = ragjet.Engine(path=path, config=json.loads(sys.argv[5]))
        out = e.ingest(json.loads(sys.argv[6]))
        e.save()
    else:
        e = ragjet.Engine.open(path)
        r = e.query(query, top_k=3)
        out = {"cache": r["cache"], "hits": [h.id for h in r["hits"]], "ingest": e.ingest([doc])}
    print(json.dumps(out))
    """
)


def redis_url():
    url = os.environ.get("RAGJET_TEST_REDIS_URL")
    if not url:
        pytest.fail(
            "RAGJET_TEST_REDIS_URL is not set: start redis-server and point it there "
            "(scripts/test.sh does)",
            pytrace=False,
        )
    parts = urllib.parse.urlparse(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 6379), timeout=2).close()
    except OSError as err:
        pytest.fail(f"RAGJET_TEST_REDIS_URL={url} is unreachable: {err}", pytrace=False)
    return url


def test_engine_replicas_share_the_redis_tier(corpus, tmp_path):
    url = redis_url()
    env = dict(os.environ, RAGJET_TEST_REPLICA_SECRET=secrets.token_hex(16))
    config = {"cache": {"redis_url": url, "redis_secret_env": "RAGJET_TEST_REPLICA_SECRET"}}
    nonce = secrets.token_hex(8)  # text no earlier run has cached
    docs = [{"id": r["id"], "text": r["text"]} for r in corpus[0][:20]]
    doc = {"id": "fresh", "text": f"a passage about {nonce} written once"}
    query = f"tuple arguments {nonce}"

    def replica(*args):
        run = subprocess.run(
            [sys.executable, "-c", REPLICA, *args], env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])

    a, b = tmp_path / "a", tmp_path / "b"
    created = replica("create", str(a), "", "{}", json.dumps(config), json.dumps(docs))
    assert created["embeddings_computed"] == 20
    shutil.copytree(a, b)  # a second replica of the same saved engine
    first = replica("serve", str(a), query, json.dumps(doc))
    assert first["cache"] == "miss"
    assert first["ingest"]["embeddings_computed"] == 1
    second = replica("serve", str(b), query, json.dumps(doc))
    assert second["cache"] == "retrieval_hit"  # written by the other process
    assert second["hits"] == first["hits"]
    assert second["ingest"]["embeddings_cached"] == 1
    assert second["ingest"]["embeddings_computed"] == 0
