"""Engine configurations side by side: retrieval quality, latency, and
quality per millisecond, on the labelled set.

    python3 benches/config_bench.py [--queries 250] [--threads 2] [--json OUT.json]

Every configuration is a `ragjet.Engine` over the same passages
(benches/data/jargon-ict, chunked by the engine's defaults: 256 tokens,
32 overlap). The passages are embedded once, by a first engine whose
embedding-cache directory is then copied for each configuration, so no
configuration finds a query's embedding cached by another. With caches
on, each engine is asked the labelled queries, then the same queries
again (a repeat rate of one half, so that the result caches have
something to do); with caches off (`no_cache=True` and the first pass
only: a repeat would find its query embedding in the embedding cache,
which the engine's ingest needs) once. Quality is nDCG@10 / MRR@10 /
recall@10 of the first pass (hits mapped to their documents, first
occurrence kept); latency is the wall time per `query` call (p50, p95,
mean). Efficiency = nDCG@10 / mean ms. The best configuration is the
most efficient among those within QUALITY_FLOOR (90 %) of the best
nDCG@10, so that a fast but poor one (keyword-only search) cannot win on
speed alone; the most efficient overall is reported too.

Configurations: flat (exact) and HNSW (M 16, ef_search 64) vector search,
each with caches off (`no_cache=True`: every query embeds and searches)
and on (the default retrieval cache, plus the semantic cache at 0.95);
hybrid (vector + BM25, alpha 0.5) and keyword-only (BM25) with caches
off. Reranking is not measured: no cross-encoder installs from a package
registry reachable here (the only one in the tree is a tiny random test
model whose order is meaningless).
"""

import argparse
import gc
import json
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_qrels  # noqa: E402
from report import percentile, retrieval_quality  # noqa: E402

QUALITY_FLOOR = 0.9
CONFIGS = [
    # name, index kind, mode, caches on
    ("flat, vector, caches off", "flat", "vector", False),
    ("HNSW, vector, caches off", "hnsw", "vector", False),
    ("flat, vector, caches on", "flat", "vector", True),
    ("HNSW, vector, caches on", "hnsw", "vector", True),
    ("flat, hybrid 0.5, caches off", "flat", "hybrid", False),
    ("HNSW, hybrid 0.5, caches off", "hnsw", "hybrid", False),
    ("keyword (BM25), caches off", "flat", "keyword", False),
]


def make_engine(ragjet, kind, caches, cache_dir, threads):
    config = {
        "index": {"kind": kind},
        "cache": {"dir": str(cache_dir), "semantic": {"enabled": caches, "threshold": 0.95}},
    }
    return ragjet.Engine(config=config, num_threads=threads)


def ingest(engine, corpus):
    rep = engine.ingest([{"id": p["id"], "text": p["text"]} for p in corpus])
    if rep.get("failed"):
        raise RuntimeError(f"ingest failed: {rep['failed'][:3]}")
    return rep


def run_config(ragjet, kind, mode, caches, corpus, queries, cache_dir, threads):
    engine = make_engine(ragjet, kind, caches, cache_dir, threads)
    rep = ingest(engine, corpus)
    rankings, lat = {}, []
    stream = queries + queries if caches else queries
    engine.query("warm-up question, not timed", no_cache=True)
    for n, q in enumerate(stream):
        start = time.perf_counter()
        answer = engine.query(q["text"], top_k=20, mode=mode, no_cache=not caches)
        lat.append((time.perf_counter() - start) * 1e3)
        if n < len(queries):
            docs = []
            for h in answer["hits"]:
                d = h.ref_doc_id or h.id
                if d not in docs:
                    docs.append(d)
            rankings[q["id"]] = docs[:10]
    out = retrieval_quality(rankings, queries)
    out.update(
        {
            "p50_ms": percentile(lat, 50),
            "p95_ms": percentile(lat, 95),
            "mean_ms": sum(lat) / len(lat),
            "chunks": rep.get("chunks"),
            "embeddings_computed": rep.get("embeddings_computed"),
        }
    )
    out["efficiency"] = out["ndcg@10"] / out["mean_ms"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import ragjet

    corpus, queries = make_qrels.load()
    queries = queries[: args.queries]
    print(
        f"{len(corpus)} passages, {len(queries)} queries asked twice "
        f"(benches/data/jargon-ict), {args.threads} threads"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        seed = pathlib.Path(tmp) / "seed"
        first = make_engine(ragjet, "flat", False, seed, args.threads)
        rep = ingest(first, corpus)
        print(f"  passages embedded once: {rep['seconds']:.1f} s, {rep['chunks']} chunks")
        del first
        gc.collect()
        for i, (name, kind, mode, caches) in enumerate(CONFIGS):
            cache_dir = pathlib.Path(tmp) / f"c{i}"
            shutil.copytree(seed, cache_dir)
            r = run_config(ragjet, kind, mode, caches, corpus, queries, cache_dir, args.threads)
            r["name"] = name
            rows.append(r)
            print(
                f"  {name}: nDCG@10 {r['ndcg@10']:.3f}, p50 {r['p50_ms']:.2f} ms, "
                f"mean {r['mean_ms']:.2f} ms",
                flush=True,
            )
    top = max(r["ndcg@10"] for r in rows)
    best = max(
        (r for r in rows if r["ndcg@10"] >= QUALITY_FLOOR * top), key=lambda r: r["efficiency"]
    )
    fastest = max(rows, key=lambda r: r["efficiency"])
    base = rows[0]
    print()
    print(
        "| configuration | nDCG@10 | MRR@10 | recall@10 | p50 ms | p95 ms | mean ms "
        "| nDCG@10 per ms | mean ms × flat-off |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        mark = " **best**" if r is best else ""
        print(
            f"| {r['name']}{mark} | {r['ndcg@10']:.3f} | {r['mrr@10']:.3f} "
            f"| {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} "
            f"| {r['mean_ms']:.2f} | {r['efficiency']:.3f} "
            f"| {r['mean_ms'] / base['mean_ms']:.2f}× |"
        )
    print(
        f"\nbest quality per ms with nDCG@10 >= {QUALITY_FLOOR:.0%} of the best: {best['name']}; "
        f"most efficient overall: {fastest['name']}"
    )
    if args.json:
        report = {
            "args": vars(args),
            "rows": rows,
            "best": best["name"],
            "most_efficient_overall": fastest["name"],
            "quality_floor": QUALITY_FLOOR,
            "versions": {"ragjet": ragjet.__version__},
        }
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
