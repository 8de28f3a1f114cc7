"""End to end: examples/llama_index_pipeline.py's retrieval pipeline, usual
local setup against ragjet's classes, on the labelled set.

    pip install "./bindings/python[llama-index]" llama-index-embeddings-huggingface
    HF_HUB_OFFLINE=1 python3 benches/e2e_bench.py [--passages 800] [--queries 100] \
        [--concurrency 1,5,10,20] [--per-level 100] [--threads 2] [--json OUT.json]

Both pipelines are a LlamaIndex `VectorStoreIndex` over the same passages
(benches/data/jargon-ict) with the same local model folder: "llama-index"
is `HuggingFaceEmbedding` (PyTorch, sentence-transformers) +
`SimpleVectorStore`, LlamaIndex's documented local setup; "ragjet" is
`RagjetEmbedding` + `RagjetVectorStore`. A query is what a retriever does:
embed the question, search, return the top-k nodes (the LLM is left out;
given the same context it costs the same on both sides).

Figures: ingest time; query latency p50 / p95 / p99 (one at a time, after
an untimed pass over the same queries); queries/s with 1 / 5 / 10 / 20 threads each sending its next
query when the last is answered (`--per-level` queries per level);
nDCG@10 / MRR@10 of the rankings against the labels; and the cost per
1,000 queries of the LLM call these contexts would feed: prompt tokens
(question + the top-k passages, counted with the model's tokenizer) times
`--price-per-mtok` (USD per million input tokens, an assumption printed
with the result; 0.15 by default).
"""

import argparse
import json
import os
import pathlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_qrels  # noqa: E402
from report import percentile, retrieval_quality  # noqa: E402


def build(name, embed_model, vector_store, passages):
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import TextNode

    nodes = [TextNode(id_=p["id"], text=p["text"]) for p in passages]
    ctx = StorageContext.from_defaults(vector_store=vector_store)
    start = time.perf_counter()
    index = VectorStoreIndex(nodes, storage_context=ctx, embed_model=embed_model)
    return index, time.perf_counter() - start


def closed_loop(call, threads, total):
    """`total` calls over `threads` threads, each making its next call when
    the last one returned; returns how many were made."""
    counter = iter(range(total))
    lock = threading.Lock()

    def worker(_):
        done = 0
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return done
            call(i)
            done += 1

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(worker, range(threads)))


def measure(retriever, queries, levels, per_level, count_tokens):
    # Warm-up, not timed: one pass over the queries. PyTorch prepares its
    # kernels per input shape, so its first call at each query length is
    # several times slower; a long-running service pays that once.
    for q in queries:
        retriever.retrieve(q["text"])
    lat, rankings, prompt_tokens = [], {}, []
    for q in queries:
        start = time.perf_counter()
        hits = retriever.retrieve(q["text"])
        lat.append((time.perf_counter() - start) * 1e3)
        rankings[q["id"]] = [h.node.node_id for h in hits]
        prompt_tokens.append(
            count_tokens(q["text"]) + sum(count_tokens(h.node.get_content()) for h in hits)
        )
    throughput = {}
    for c in levels:
        start = time.perf_counter()
        n = closed_loop(
            lambda i: retriever.retrieve(queries[i % len(queries)]["text"]), c, per_level
        )
        throughput[str(c)] = {"qps": n / (time.perf_counter() - start)}
    return {
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "throughput": throughput,
        "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
    }, rankings


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--passages", type=int, default=0, help="first N passages (0 = all)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--concurrency", default="1,5,10,20")
    ap.add_argument("--per-level", type=int, default=100)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--price-per-mtok", type=float, default=0.15)
    ap.add_argument("--only", default="llama-index,ragjet")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM
    from llama_index.core.vector_stores import SimpleVectorStore

    import ragjet
    from ragjet.llama_index import RagjetEmbedding, RagjetVectorStore

    Settings.llm = MockLLM()  # nothing may reach for a remote default
    corpus, queries = make_qrels.load()
    if args.passages:
        # Keep every passage a kept query is about, then fill with others.
        queries = queries[: args.queries]
        needed = {d for q in queries for d in q["relevant"]}
        rest = [p for p in corpus if p["id"] not in needed]
        corpus = [p for p in corpus if p["id"] in needed] + rest
        corpus = corpus[: max(args.passages, len(needed))]
    queries = queries[: args.queries]
    model_dir = str(ragjet.default_model_dir())
    tok = ragjet.Embedder(num_threads=1)

    def count_tokens(text):
        return tok.count_tokens(text)

    print(
        f"{len(corpus)} passages, {len(queries)} queries (benches/data/jargon-ict), "
        f"top {args.top_k}, {args.threads} threads; concurrency {levels}, "
        f"{args.per_level} queries per level"
    )
    report = {"args": vars(args), "pipelines": {}, "versions": {"ragjet": ragjet.__version__}}
    for name in args.only.split(","):
        if name == "llama-index":
            import torch
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding

            torch.set_num_threads(args.threads)
            embed, store = (
                HuggingFaceEmbedding(model_name=model_dir, device="cpu"),
                (SimpleVectorStore()),
            )
            report["versions"]["torch"] = torch.__version__
            label = "HuggingFaceEmbedding + SimpleVectorStore"
        elif name == "ragjet":
            embed = RagjetEmbedding(num_threads=args.threads, cache=False)
            store = RagjetVectorStore()
            label = f"RagjetEmbedding ({embed.precision}) + RagjetVectorStore"
        else:
            ap.error(f"unknown pipeline {name}")
        index, ingest = build(name, embed, store, corpus)
        retriever = index.as_retriever(similarity_top_k=args.top_k)
        figures, rankings = measure(retriever, queries, levels, args.per_level, count_tokens)
        figures.update(retrieval_quality(rankings, queries))
        figures["label"] = label
        figures["ingest_s"] = ingest
        figures["ingest_per_s"] = len(corpus) / ingest
        figures["cost_per_1k_queries_usd"] = (
            figures["mean_prompt_tokens"] * 1000 * args.price_per_mtok / 1e6
        )
        report["pipelines"][name] = figures
        tp = ", ".join(f"c={c}: {v['qps']:.1f} q/s" for c, v in figures["throughput"].items())
        print(
            f"{label}: ingest {ingest:.2f} s; query p50 {figures['p50_ms']:.2f} / p95 "
            f"{figures['p95_ms']:.2f} / p99 {figures['p99_ms']:.2f} ms; {tp}; "
            f"nDCG@10 {figures['ndcg@10']:.3f}, MRR@10 {figures['mrr@10']:.3f}; "
            f"{figures['mean_prompt_tokens']:.0f} prompt tokens/query = "
            f"${figures['cost_per_1k_queries_usd']:.3f} per 1k queries",
            flush=True,
        )
    p = report["pipelines"]
    if "llama-index" in p and "ragjet" in p:
        t, r = p["llama-index"], p["ragjet"]
        ratios = {
            "ingest_speedup": t["ingest_s"] / r["ingest_s"],
            "p50_ratio": r["p50_ms"] / t["p50_ms"],
            "p95_ratio": r["p95_ms"] / t["p95_ms"],
            "p99_ratio": r["p99_ms"] / t["p99_ms"],
            "throughput_ratio": {
                c: r["throughput"][c]["qps"] / t["throughput"][c]["qps"] for c in r["throughput"]
            },
        }
        report["ratios"] = ratios
        print(
            f"ragjet vs usual setup: ingest {ratios['ingest_speedup']:.2f}x faster; latency "
            f"p50 {ratios['p50_ratio']:.2f}x, p95 {ratios['p95_ratio']:.2f}x, p99 "
            f"{ratios['p99_ratio']:.2f}x; throughput "
            + ", ".join(f"c={c}: {v:.2f}x" for c, v in ratios["throughput_ratio"].items())
        )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
