"""Telemetry: the process-wide recorder and /metrics endpoint, the SLO
window, per-object cost tracking.

The recorder and the SLO window are shared by every Telemetry object of the
process (other test modules may have recorded into them already), so these
tests compare figures before and after what they record.
"""

import re
import urllib.error
import urllib.request

import pytest

import ragjet

PRICES = {"gpt-test": (1.0, 2.0)}  # USD per million input / output tokens


def sample(text, name, **labels):
    """The value of one sample line of the Prometheus text, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return 0.0


def test_calls_share_one_recorder():
    a, b = ragjet.Telemetry(), ragjet.Telemetry(prices=PRICES)
    before = sample(
        a.render(), "ragjet_span_duration_seconds_count", span="share-test", status="ok"
    )
    b.record_span("share-test", 0.01)
    assert (
        sample(a.render(), "ragjet_span_duration_seconds_count", span="share-test", status="ok")
        == before + 1
    )


def test_llm_calls_count_tokens_and_cost():
    t = ragjet.Telemetry(prices=PRICES, daily_budget_usd=10.0)
    text = t.render()
    tokens_in = sample(text, "ragjet_tokens_total", model="gpt-test", direction="in")
    unpriced_out = sample(text, "ragjet_tokens_total", model="unpriced", direction="out")
    t.record_llm_call("gpt-test", 1000, 500, 0.2)
    t.record_llm_call("gpt-test", 1000, 500, 0.001, cached=True)  # spent nothing
    t.record_llm_call("unpriced", 10, 20, 0.1)
    text = t.render()
    assert sample(text, "ragjet_tokens_total", model="gpt-test", direction="in") == tokens_in + 1000
    assert (
        sample(text, "ragjet_tokens_total", model="unpriced", direction="out") == unpriced_out + 20
    )
    report = t.cost_report()
    assert report["requests"] == 1
    assert report["total_usd"] == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert [m["model"] for m in report["by_model"]] == ["gpt-test"]
    assert report["daily"]["budget_usd"] == 10.0
    # Another object's prices and totals are its own.
    assert ragjet.Telemetry().cost_report()["requests"] == 0


def test_slo_report_covers_recorded_queries():
    t = ragjet.Telemetry()
    before = t.slo_report()["window"]
    for _ in range(20):
        t.record_query(0.010)
    t.record_query(0.050, ok=False)
    t.record_query(2.0, available=False)
    report = t.slo_report()
    window = report["window"]
    assert window["count"] == before["count"] + 22
    assert window["errors"] == before["errors"] + 2
    assert window["unavailable"] == before["unavailable"] + 1
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {"p50", "p95", "p99", "error_rate", "availability"}
    assert checks["availability"]["met"] is False and report["all_met"] is False
    text = t.render()
    assert sample(text, "ragjet_queries_total", status="error") >= 2


def test_metrics_endpoint_serves_the_recorder():
    t = ragjet.Telemetry()
    port = t.serve_metrics(port=0)
    try:
        assert port > 0 and t.metrics_port == port
        assert t.serve_metrics(port=0) == port  # already running
        t.record_span("endpoint-test", 0.5, ok=False)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        assert (
            sample(body, "ragjet_span_duration_seconds_count", span="endpoint-test", status="error")
            >= 1
        )
        assert "process_resident_memory_bytes" in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        assert err.value.code == 404
        # Another object sees the same endpoint.
        assert ragjet.Telemetry().metrics_port == port
        with pytest.raises(ragjet.InvalidInputError, match="already runs"):
            t.serve_metrics(port=port + 1 if port < 65535 else port - 1)
    finally:
        t.stop_metrics()
    assert t.metrics_port is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_taken_port_is_an_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(ragjet.RagjetError, match=str(taken)):
            ragjet.Telemetry().serve_metrics(port=taken)


def test_bad_arguments():
    t = ragjet.Telemetry()
    cases = [
        (lambda: t.record_span("x", -1.0), "seconds"),
        (lambda: t.record_span("x", float("nan")), "seconds"),
        (lambda: t.record_span("", 1.0), "name"),
        (lambda: t.record_query(float("inf")), "seconds"),
        (lambda: t.serve_metrics(host="localhost:80"), "host"),
        (lambda: ragjet.Telemetry(prices={"m": (-1.0, 0.0)}), "price"),
        (lambda: ragjet.Telemetry(daily_budget_usd=0.0), "budget"),
        (lambda: ragjet.Telemetry(slo_window_seconds=1.0), "SLO window"),
    ]
    for call, message in cases:
        with pytest.raises(ragjet.InvalidInputError, match=message):
            call()


def test_the_catalogue_lists_the_span_metric():
    names = {m["name"]: m for m in ragjet.metric_catalogue()}
    assert names["ragjet_span_duration_seconds"]["labels"] == ["span", "status"]
    assert names["ragjet_queries_total"]["type"] == "counter"
