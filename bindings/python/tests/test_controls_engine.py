"""The controls wired into ``Engine`` from Python: typed refusals with
``retry_after``, routing and A/B variants per query, the autoscaling
signals and the ``/scale`` endpoint (``AdviceServer``)."""

import json
import threading
import urllib.error
import urllib.request

import pytest
from test_engine import read_corpus

import ragjet

ROUTES = [
    {"name": "small", "model": "small-llm", "max_complexity": 0.3, "cost_per_1k_tokens": 0.1},
    {"name": "large", "model": "large-llm", "max_complexity": 1.0, "cost_per_1k_tokens": 2.0},
]


@pytest.fixture(scope="module")
def docs(fixtures):
    return read_corpus(fixtures, 12)


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_the_refusal_classes():
    assert ragjet.Overloaded is ragjet.OverloadedError
    for cls in (
        ragjet.RateLimitedError,
        ragjet.CircuitOpenError,
        ragjet.QueueFullError,
        ragjet.DeadlineExceededError,
    ):
        assert issubclass(cls, ragjet.OverloadedError)
        assert issubclass(cls, ragjet.RagjetError)
    assert issubclass(ragjet.DeadlineExceededError, TimeoutError)


def test_an_engine_rate_limit_raises_rate_limited_with_retry_after(docs):
    config = {
        "control": {"rate_limit": {"enabled": True, "queries_per_second": 1e-6, "query_burst": 1}}
    }
    engine = ragjet.Engine(num_threads=2, config=config)
    engine.ingest(docs)
    engine.query("parents class", top_k=2)
    with pytest.raises(ragjet.RateLimitedError) as info:
        engine.query("parents class", top_k=2)
    assert info.value.retry_after > 1000
    assert "engine.query" in str(info.value)


def test_a_queue_deadline_raises_deadline_exceeded(docs):
    engine = ragjet.Engine(num_threads=2, config={"queue": {"timeout_ms": 1, "max_wait_ms": 50}})
    engine.ingest(docs[:3])
    with pytest.raises(ragjet.DeadlineExceededError) as info:
        engine.query("anything at all", no_cache=True)
    assert info.value.retry_after is None
    assert isinstance(info.value, TimeoutError)


def test_a_full_queue_raises_queue_full(docs):
    config = {"queue": {"capacity": 1, "max_batch_items": 1, "max_wait_ms": 0}}
    engine = ragjet.Engine(num_threads=2, config=config)
    engine.ingest(docs[:3])
    refused = []

    def ask(i, barrier):
        barrier.wait()
        try:
            engine.query(" ".join(f"w{i}x{j}" for j in range(150)), no_cache=True)
        except ragjet.QueueFullError as e:
            refused.append(e)

    # One burst nearly always overflows a one-place queue (the GIL is
    # released while querying); a few rounds make it independent of how
    # threads start.
    for round_ in range(5):
        barrier = threading.Barrier(16)
        threads = [threading.Thread(target=ask, args=(round_ * 16 + i, barrier)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if refused:
            break
    assert refused, "no query was refused by a one-place queue"
    assert refused[0].retry_after is None
    assert "queue full" in str(refused[0])


def test_router_and_experiment_given_to_the_engine(docs):
    router = ragjet.Router(ROUTES, name="py-engine")
    experiment = ragjet.Experiment("py-topk", ["control", "narrow"])
    engine = ragjet.Engine(
        num_threads=2,
        router=router,
        experiment=experiment,
        variants={"narrow": {"top_k": 1, "mode": "keyword"}},
    )
    engine.ingest(docs)
    users = {}
    for i in range(200):
        users.setdefault(experiment.assign(f"user-{i}"), f"user-{i}")
    a = engine.query("what is a class", top_k=4, user=users["control"])
    b = engine.query("what is a class", top_k=4, user=users["narrow"])
    assert (a["variant"], len(a["hits"]), a["mode"]) == ("control", 4, "vector")
    assert (b["variant"], len(b["hits"]), b["mode"]) == ("narrow", 1, "keyword")
    assert a["route"]["model"] == "small-llm" and a["route"]["reason"] == "complexity"
    hard = engine.query("compare parents versus class statements", top_k=2)
    assert hard["route"]["model"] == "large-llm" and hard["variant"] is None
    assert engine.route_counts() == {"small": 2, "large": 1}
    assert engine.record_feedback(users["narrow"], 1.0) == "narrow"
    summary = engine.experiment_summary()
    narrow = next(v for v in summary["variants"] if v["variant"] == "narrow")
    assert narrow["requests"] == 1 and narrow["feedback_count"] == 1
    # The engine records into the caller's experiment object.
    assert experiment.summary() == summary
    with pytest.raises(ragjet.InvalidInputError, match="variants"):
        ragjet.Engine(num_threads=2, experiment=experiment, variants={"narrow": {"mode": "x"}})
    with pytest.raises(ragjet.InvalidInputError, match="not a variant"):
        ragjet.Engine(num_threads=2, experiment=experiment, variants={"wide": {"top_k": 9}})
    with pytest.raises(ragjet.InvalidInputError, match="experiment"):
        ragjet.Engine(num_threads=2, variants={"narrow": {}})
    plain = ragjet.Engine(num_threads=2)
    plain.ingest(docs[:2])
    r = plain.query("class", top_k=1, user="someone")
    assert r["route"] is None and r["variant"] is None
    assert plain.experiment_summary() is None
    with pytest.raises(ragjet.InvalidInputError):
        plain.record_feedback("someone", 1.0)


def test_routing_and_the_experiment_from_config(docs):
    config = {
        "control": {
            "routing": {"enabled": True, "routes": ROUTES},
            "experiment": {
                "enabled": True,
                "name": "py-config",
                "variants": [{"name": "a"}, {"name": "b", "top_k": 2}],
            },
        }
    }
    engine = ragjet.Engine(num_threads=2, config=config)
    engine.ingest(docs)
    r = engine.query("what is a class", top_k=5, user="someone")
    assert r["route"]["route"] == "small"
    assert r["variant"] in ("a", "b")
    assert len(r["hits"]) == (5 if r["variant"] == "a" else 2)


def test_the_engine_serves_scale_advice(docs):
    config = {
        "control": {
            "autoscale": {
                "enabled": True,
                "addr": "127.0.0.1:0",
                "replicas": 3,
                "concurrency": 1e9,
                "policy": {"p95_target_ms": 600000.0},
            }
        }
    }
    engine = ragjet.Engine(num_threads=2, config=config)
    engine.ingest(docs)
    engine.query("class", top_k=2)
    signals = engine.scale_signals()
    assert signals["replicas"] == 3 and signals["error_rate"] == 0.0
    assert signals["p95_ms"] > 0 and 0 < signals["utilisation"] < 1e-3
    assert engine.scale_advice()["action"] == "down"
    host, port = engine.advice_address
    status, body = get(f"http://{host}:{port}/scale")
    assert status == 200 and body["signals"]["replicas"] == 3, body
    assert body["decision"]["action"] == "down" and body["decision"]["desired_replicas"] == 1
    assert ragjet.Engine(num_threads=2).advice_address is None

    # The same engine behind a standalone server, with its own policy.
    with ragjet.AdviceServer(engine, "127.0.0.1:0", policy={"min_replicas": 3}) as server:
        status, body = get(server.url)
        assert status == 200 and body["decision"]["action"] == "hold", body


def test_advice_server_over_a_callable():
    signals = {"replicas": 2, "queue_depth": 0, "p95_ms": 100, "utilisation": 0.95}
    current = [None]
    server = ragjet.AdviceServer(lambda: current[0], address="127.0.0.1:0")
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    assert server.url == f"http://{host}:{port}/scale"
    assert get(server.url)[0] == 503
    current[0] = {**signals, "error_rate": 0.0}
    status, body = get(server.url)
    assert status == 200 and body["decision"]["action"] == "up", body
    assert body["decision"]["desired_replicas"] == 3
    server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=5)
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.AdviceServer(42, address="127.0.0.1:0")
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.AdviceServer(lambda: None, address="nowhere")
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.AdviceServer(lambda: None, address="127.0.0.1:0", policy={"min_replicas": 0})
