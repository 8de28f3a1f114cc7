"""Embedding throughput and latency: ragjet against sentence-transformers.

One run, same machine, same corpus, same batch size and thread count:

    pip install ./bindings/python            # a release build of ragjet
    pip install sentence-transformers         # the peer (PyTorch CPU)
    python3 benches/compare_embed.py [--corpus FILE.jsonl] [--limit N] \
        [--threads 2] [--batch-size 32]

Prints passages/s, tokens/s, single short text latency p50/p95, the ratio
to sentence-transformers, and the parity (minimum cosine) between the two.
"""

import argparse
import json
import os
import pathlib
import statistics
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "fixtures" / "corpus.jsonl"
SHORT_QUERIES = [
    "how do I reverse a list",
    "what is a vector database",
    "capital of France",
    "retrieval augmented generation",
    "fix a segfault in C",
]


def read_texts(path, limit):
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    return texts[:limit] if limit else texts


def latency_ms(embed_one, repeats):
    for q in SHORT_QUERIES:  # warm-up
        embed_one(q)
    samples = []
    for i in range(repeats):
        q = SHORT_QUERIES[i % len(SHORT_QUERIES)]
        start = time.perf_counter()
        embed_one(q)
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument("--limit", type=int, default=800, help="first N passages (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-repeats", type=int, default=200)
    args = ap.parse_args()

    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import ragjet

    torch.set_num_threads(args.threads)
    model_dir = str(ragjet.default_model_dir())
    texts = read_texts(args.corpus, args.limit)

    rj = ragjet.Embedder(model_dir, num_threads=args.threads, batch_size=args.batch_size)
    tokens = sum(min(rj.count_tokens(t) + 2, rj.max_seq_length) for t in texts)
    st = SentenceTransformer(model_dir, device="cpu")

    rows, outputs = [], {}
    engines = [
        (
            "sentence-transformers (PyTorch CPU)",
            lambda: st.encode(
                texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True
            ),
            lambda q: st.encode([q], normalize_embeddings=True),
        ),
        ("ragjet", lambda: rj.embed(texts), rj.embed_one),
    ]
    for name, embed_all, embed_one in engines:
        embed_all_start = time.perf_counter()
        outputs[name] = np.asarray(embed_all(), dtype=np.float32)
        secs = time.perf_counter() - embed_all_start
        p50, p95 = latency_ms(embed_one, args.latency_repeats)
        rows.append((name, len(texts) / secs, tokens / secs, p50, p95))

    base = rows[0]
    a, b = outputs[rows[0][0]], outputs[rows[1][0]]
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    print(
        f"corpus: {args.corpus} ({len(texts)} passages, {tokens} tokens), "
        f"batch {args.batch_size}, {args.threads} threads, cpu count {os.cpu_count()}"
    )
    print(
        f"{'engine':<38} {'passages/s':>11} {'tokens/s':>10} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'throughput ×ST':>15} {'p50 ×ST':>8}"
    )
    for name, pps, tps, p50, p95 in rows:
        print(
            f"{name:<38} {pps:>11.1f} {tps:>10.0f} {p50:>8.2f} {p95:>8.2f} "
            f"{pps / base[1]:>15.2f} {p50 / base[3]:>8.2f}"
        )
    print(f"parity: min cosine ragjet vs sentence-transformers = {cos.min():.7f}")


if __name__ == "__main__":
    main()
