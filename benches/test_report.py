"""Smoke test of the results code (summary tables, plots, ranking metrics) on
synthetic figures: no model, no peer, a second or two.

    python3 -m pytest benches/test_report.py -q      # needs matplotlib

benches/run.py runs it first inside its environment, so a broken plot or
table fails the run before its long workloads.
"""

import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import report  # noqa: E402


def synthetic():
    meta = {
        "host": "testhost",
        "cpu": "Test CPU 9000",
        "cores": 2,
        "commit": "abc1234",
        "load_average": 0.5,
        "load_average_end": 0.7,
    }
    engines = {"st": "sentence-transformers", "ragjet": "ragjet (bf16)"}

    def emb_row(pps):
        return {"pps": pps, "tps": pps * 130, "cos_st": 0.99999, "cos_ref": None, "secs": 1.0}

    by_batch = {
        b: {"st": emb_row(40.0 * f), "ragjet": emb_row(90.0 * f)}
        for b, f in (("1", 0.5), ("32", 1.0), ("256", 1.1))
    }
    lat = {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "min_cos_vs_reference": None}
    hnsw = [(16, 0.90, 9000.0), (64, 0.97, 5000.0), (256, 0.995, 1500.0)]
    search_engine = {"build": 1.5, "mem": 1800.0, "hnsw": hnsw, "flat_single": 800.0}
    search_engine["flat_batch"] = 9000.0
    return {
        "meta": meta,
        "profile": "quick",
        "command": "python3 benches/run.py --quick",
        "started": "2026-11-30T08:00:00+00:00",
        "embedding": {
            "engine_names": engines,
            "batch_sizes": [1, 32, 256],
            "latency": {"st": lat, "ragjet": lat},
            "corpora": {
                "fixture": {
                    "source": "synthetic",
                    "passages": 10,
                    "tokens": 1300,
                    "by_batch": by_batch,
                }
            },
        },
        "search": {
            "10k": {
                "data": {"n": 10000, "dim": 384, "source": "synthetic"},
                "queries": 100,
                "args": {"m": 16, "ef_construction": 200},
                "engines": {"ragjet": search_engine, "faiss": dict(search_engine, build=2.0)},
            }
        },
        "quantized": {
            "10k": {
                "engines": [
                    {
                        "engine": "ragjet int8",
                        "depth": 4,
                        "scan_bytes": 384.0,
                        "recall": 0.99,
                        "qps": 5000.0,
                        "qps_single": 900.0,
                    }
                ]
            }
        },
        "cache": {
            "stream": 400,
            "engines": {
                name: [
                    {
                        "threshold": t,
                        "hit_rate": 1 - t,
                        "false_hit_rate": 0.01,
                        "lookup_p50_us": us,
                        "lookup_p99_us": us * 3,
                    }
                    for t in (0.8, 0.9)
                ]
                for name, us in (("ragjet", 5.0), ("gptcache", 2500.0))
            },
        },
        "e2e": {
            "args": {"top_k": 10},
            "pipelines": {
                name: {
                    "label": name,
                    "ingest_s": 10.0 * f,
                    "p50_ms": 5.0 * f,
                    "p95_ms": 8.0 * f,
                    "p99_ms": 9.0 * f,
                    "throughput": {str(c): {"qps": 100.0 / f} for c in (1, 5, 10, 20)},
                    "ndcg@10": 0.4,
                    "mrr@10": 0.35,
                    "cost_per_1k_queries_usd": 0.2,
                }
                for name, f in (("llama-index", 3.0), ("ragjet", 1.0))
            },
            "ratios": {
                "ingest_speedup": 3.0,
                "p50_ratio": 0.33,
                "p95_ratio": 0.33,
                "p99_ratio": 0.33,
                "throughput_ratio": {"1": 3.0},
            },
        },
        "configs": {
            "rows": [
                {
                    "name": n,
                    "ndcg@10": q,
                    "mrr@10": q,
                    "recall@10": q,
                    "p50_ms": ms,
                    "mean_ms": ms,
                    "efficiency": q / ms,
                }
                for n, q, ms in (("flat", 0.4, 4.0), ("keyword", 0.2, 0.2))
            ],
            "best": "flat",
            "most_efficient_overall": "keyword",
            "quality_floor": 0.9,
        },
        "failures": {},
    }


def test_plots_and_summary(tmp_path):
    results = synthetic()
    paths = report.plot_all(results, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == ["cache.png", "configs.png", "e2e.png", "embedding.png", "search.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.summary(results)
    assert "Test CPU 9000" in text and "abc1234" in text
    assert "90.0 (2.25×)" in text  # ragjet passages/s at batch 32 against ST's 40
    assert "flat **best**" in text
    assert "ragjet HNSW / best peer at recall@10 ≥ 0.95: 1.00×" in text


def test_ranking_metrics():
    rel = {"a": 1}
    assert report.ndcg_at_10(["a", "b"], rel) == 1.0
    assert math.isclose(report.ndcg_at_10(["b", "a"], rel), 1 / math.log2(3))
    assert report.mrr_at_10(["b", "c", "a"], rel) == 1 / 3
    assert report.mrr_at_10(["b"] * 10 + ["a"], rel) == 0.0
    q = [{"id": "q", "relevant": rel}]
    assert report.retrieval_quality({"q": ["x", "a"]}, q)["recall@10"] == 1.0


def test_percentile_nearest_rank():
    assert report.percentile([3, 1, 2, 4], 50) == 2
    assert report.percentile(list(range(1, 101)), 99) == 99
    assert report.percentile([7], 99) == 7
