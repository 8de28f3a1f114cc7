"""The production controls from Python: rate limiter, circuit breaker,
retry policy, dead-letter store, router, A/B experiment, scaling advice.
The state machines' timing is tested in Rust with a manual clock; these
tests check the binding: arguments, errors, persistence, metrics."""

import json

import pytest

import ragjet


def test_rate_limiter_refuses_and_raises_typed_errors():
    limiter = ragjet.RateLimiter(per_second=1e-6, burst=2, name="py-test")
    assert limiter.try_acquire("tenant-a")
    assert limiter.try_acquire("tenant-a")
    assert not limiter.try_acquire("tenant-a")
    assert limiter.try_acquire("tenant-b"), "keys have their own buckets"
    with pytest.raises(ragjet.RateLimitedError) as info:
        limiter.acquire("tenant-a", timeout=0.01)
    assert isinstance(info.value, ragjet.Overloaded)
    assert info.value.retry_after > 1000
    with pytest.raises(ragjet.InvalidInputError):
        limiter.try_acquire("tenant-a", cost=5)
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.RateLimiter(per_second=0, burst=1)


def test_circuit_breaker_opens_fails_fast_and_probes():
    breaker = ragjet.CircuitBreaker("py-llm", consecutive_failures=2, open_for=0.0)
    breaker.acquire().failure()
    assert breaker.state == "closed"
    permit = breaker.acquire()
    del permit  # unreported: a failure
    # open_for=0: the next look finds it half-open at once.
    assert breaker.state == "half_open"
    probe = breaker.acquire()
    with pytest.raises(ragjet.CircuitOpenError) as info:
        breaker.acquire()
    assert isinstance(info.value, ragjet.Overloaded)
    assert "circuit py-llm is open" in str(info.value)
    probe.success()
    assert breaker.state == "closed"
    slow = ragjet.CircuitBreaker("py-slow", consecutive_failures=1, open_for=3600)
    slow.acquire().failure()
    with pytest.raises(ragjet.CircuitOpenError) as info:
        slow.acquire()
    assert 3590 < info.value.retry_after <= 3600
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.CircuitBreaker(failure_rate=2.0)


def test_retry_policy_delays_and_statuses():
    policy = ragjet.RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.3, seed=1)
    assert policy.max_attempts == 4
    assert [policy.cap(i) for i in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    delays = [policy.delay(1) for _ in range(500)]
    assert all(0 <= d < 0.2 for d in delays)
    assert min(delays) < 0.02 and max(delays) > 0.18, "full jitter spreads over the range"
    assert [ragjet.is_transient_status(s) for s in (429, 500, 503, 400, 404)] == [
        True,
        True,
        True,
        False,
        False,
    ]
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.RetryPolicy(max_attempts=0)
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.RetryPolicy(base_delay=-1)


def test_dead_letters_persist_and_redrive(tmp_path):
    path = tmp_path / "letters.log"
    store = ragjet.DeadLetterStore(path, name="py-dl")
    a = store.push("llm.complete", json.dumps({"prompt": "a"}), "TimeoutError", 3)
    b = store.push("llm.complete", json.dumps({"prompt": "b"}), "503", 3)
    assert a["id"] != b["id"] and a["attempts"] == 3
    del store
    store = ragjet.DeadLetterStore(path, name="py-dl")
    assert [x["id"] for x in store.list()] == [a["id"], b["id"]]
    assert store.get(a["id"])["payload"] == json.dumps({"prompt": "a"})

    def replay(letter):
        if json.loads(letter["payload"])["prompt"] == "b":
            raise RuntimeError("still failing")

    report = store.redrive(replay)
    assert report["redriven"] == [a["id"]]
    assert report["failed"][0][0] == b["id"] and "still failing" in report["failed"][0][1]
    assert len(store) == 1
    assert store.discard(b["id"]) and not store.discard(b["id"])
    assert len(ragjet.DeadLetterStore(path)) == 0


def test_router_experiment_and_scaling_advice(tmp_path):
    router = ragjet.Router(
        [
            {"name": "simple", "model": "small", "max_complexity": 0.4, "cost_per_1k_tokens": 0.1},
            {"name": "complex", "model": "big", "max_complexity": 1.0, "cost_per_1k_tokens": 2.0},
        ],
        name="py-router",
    )
    assert router.route("what is the capital of France?")["model"] == "small"
    d = router.route("compare rust and go for web services in depth")
    assert (d["route"], d["reason"]) == ("complex", "complexity")
    assert d["complexity"]["intent"] == "comparison"
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.Router([{"name": "x", "model": "m", "max_complexity": 1.0, "colour": 1}])

    log = tmp_path / "ab.jsonl"
    exp = ragjet.Experiment("py-exp", ["control", "treatment"], log_path=log)
    first = exp.assign("alice")
    assert exp.assign("alice") == first
    assert ragjet.Experiment("py-exp", ["control", "treatment"]).assign("alice") == first
    for v, ms in (("control", 100), ("treatment", 80)):
        for i in range(50):
            exp.record_latency(v, (ms + i % 5) / 1000)
    s = exp.summary()
    lat = s["comparisons"][0]["latency_ms"]
    assert lat["difference"] == pytest.approx(-20.0)
    assert lat["high"] < 0
    assert [json.loads(line)["user"] for line in log.read_text().splitlines()] == ["alice"]
    with pytest.raises(ragjet.InvalidInputError):
        exp.record_feedback("control", 3.0)

    up = ragjet.advise_scale(
        {"replicas": 2, "queue_depth": 0, "p95_ms": 100, "utilisation": 0.95, "error_rate": 0}
    )
    assert up["action"] == "up" and up["desired_replicas"] == 3
    hold = ragjet.advise_scale(
        {
            "replicas": 2,
            "queue_depth": 0,
            "p95_ms": 100,
            "utilisation": 0.95,
            "error_rate": 0,
            "seconds_since_last_scale": 60,
        }
    )
    assert hold["action"] == "hold" and "cooldown" in hold["reason"]
    custom = ragjet.advise_scale(
        {"replicas": 2, "queue_depth": 0, "p95_ms": 100, "utilisation": 0.8, "error_rate": 0},
        {"scale_up_utilisation": 0.75, "target_low": 0.5, "target_high": 0.6},
    )
    assert custom["action"] == "up"
    with pytest.raises(ragjet.InvalidInputError):
        ragjet.advise_scale({"replicas": 2})


def test_a_manual_clock_drives_limiter_and_breaker_without_sleeping():
    clock = ragjet.ManualClock(start=100.0)
    limiter = ragjet.RateLimiter(per_second=2, burst=1, name="py-clock", clock=clock)
    assert limiter.try_acquire("k")
    assert not limiter.try_acquire("k")
    clock.advance(0.5)
    assert limiter.try_acquire("k")
    # acquire waits through the clock: it advances by the 0.5 s refill.
    limiter.acquire("k", timeout=1.0)
    assert clock.now() == pytest.approx(101.0)
    breaker = ragjet.CircuitBreaker("py-clocked", consecutive_failures=1, open_for=10, clock=clock)
    breaker.acquire().failure()
    assert breaker.state == "open"
    clock.advance(10)
    assert breaker.state == "half_open"
    with pytest.raises(ragjet.InvalidInputError):
        clock.advance(-1)


def test_model_pool_loads_once_shares_and_evicts():
    loads = []

    def loader(name):
        loads.append(name)
        if name == "broken":
            raise OSError("no such model")
        return {"name": name}, 100

    pool = ragjet.ModelPool(loader, name="py-pool", max_models=2, idle_ttl=3600)
    with pool.get("a") as a:
        assert a.model == {"name": "a"}
        assert pool.active("a") == 1
        assert pool.get("a").model is a.model, "shared, loaded once"
    assert pool.active("a") == 0
    pool.get("b").release()
    held = pool.get("c")  # evicts a, the least recently used
    assert pool.loaded() == ["b", "c"]
    pool.get("d").release()  # evicts b: c is held
    assert pool.loaded() == ["c", "d"]
    held.release()
    with pytest.raises(ragjet.InvalidInputError):
        _ = held.model
    with pytest.raises(ragjet.ModelLoadError, match="no such model"):
        pool.get("broken")
    assert loads == ["a", "b", "c", "d", "broken"]
    tiny = ragjet.ModelPool(lambda n: (n, 10), max_models=1)
    kept = tiny.get("x")
    with pytest.raises(ragjet.Overloaded):
        tiny.get("y")
    kept.release()
    assert tiny.get("y").model == "y"
    with pytest.raises(ragjet.ModelLoadError, match=r"must return \(model, bytes\)"):
        ragjet.ModelPool(lambda n: 1).get("bad-return")
