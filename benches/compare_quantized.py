"""Quantized flat search: ragjet's int8 / binary FlatIndex against faiss.

Same data as benches/compare_search.py (imported from it). Peers with the
same rescoring: faiss IndexScalarQuantizer (QT_8bit, inner product) and
IndexBinaryFlat (sign bits of the mean-centred vectors, as ragjet's binary
codes) each return depth x 10 candidates that are rescored exactly from the
f32 rows by faiss's own re-ranking kernel (knn_inner_products_by_idx, the one
IndexRefineFlat uses: C++, one exact inner product per candidate and a top-10
heap, OpenMP over the queries), the same work as ragjet's rescore. (Until
2026-11-30 the rescore was a numpy loop in Python, one query at a time, which
made faiss's side slower than the work it stands for.) Prints, per engine and
storage: bytes per vector scanned, bytes per vector kept for the rescore (f32
rows: for ragjet int8 / binary in a mapped file, for faiss in RAM), resident
memory per vector (RSS growth over the build), recall@10, batch queries/s (all
queries in one call, best of 3, --threads threads) and single-query queries/s
(200 queries, one call each, best of 3: for faiss one search plus one rescore
call each, the better of --threads and one OpenMP thread).
The machine may be shared: compare ratios from one run.
`--storages hnsw_f32,hnsw_int8,hnsw_binary` adds ragjet's HnswIndex on each
storage (cosine, M 16, ef_construction 200, ef_search 64; not in the default
list, the builds take minutes); its batch q/s answers the queries one after
another, and its resident memory includes the graph's links.

    pip install faiss-cpu numpy
    cargo build --release -p ragjet-retrieval --example quantized_search
    python3 benches/compare_quantized.py [--n 100000] [--data synthetic|real] \
        [--int8-depth 4] [--binary-depth 64] [--storages int8,binary] [--json OUT.json]
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from compare_search import exact_top10, make_data, make_real, rss_bytes  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def recall(found, gt):
    return float(np.mean([len(set(f) & set(g)) / 10.0 for f, g in zip(found, gt)]))


def rescore(base, queries, cand):
    """Exact inner products of each query's candidates, best 10 kept (faiss's
    re-ranking kernel; see the module docs)."""
    import faiss

    nq, depth = cand.shape
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    vals = np.empty((nq, 10), dtype=np.float32)
    out = np.empty((nq, 10), dtype=np.int64)
    # ld_ids given explicitly: faiss 1.15's default (-1) reads only the
    # first query's candidates for every query.
    faiss.knn_inner_products_by_idx(
        faiss.swig_ptr(queries),
        faiss.swig_ptr(base),
        faiss.swig_ptr(cand),
        base.shape[1],
        nq,
        len(base),
        depth,
        10,
        faiss.swig_ptr(vals),
        faiss.swig_ptr(out),
        depth,
    )
    return out


def single_qps(search, queries, threads, count=200):
    """Queries/s answering `count` queries one call each, best of 3 rounds,
    the better of faiss on `threads` OpenMP threads and on one: one query gives OpenMP
    little to split, and on a busy machine its thread team's barriers can
    cost faiss 10-20x (measured 28 ms against 1.4 ms per query)."""
    import faiss

    count = min(count, len(queries))
    best = 0.0
    for t in sorted({threads, 1}):
        faiss.omp_set_num_threads(t)
        for _ in range(3):
            start = time.perf_counter()
            for i in range(count):
                search(queries[i : i + 1])
            best = max(best, count / (time.perf_counter() - start))
    faiss.omp_set_num_threads(threads)
    return best


def best_of_3(f):
    best, res = float("inf"), None
    for _ in range(3):
        t = time.perf_counter()
        res = f()
        best = min(best, time.perf_counter() - t)
    return best, res


def run_faiss(base, queries, gt, depth8, depthb, kinds, threads):
    d = base.shape[1]
    rows, mem = [], {}
    if "int8" in kinds:
        run_sq8(base, queries, gt, depth8, threads, rows, mem)
    if "binary" in kinds:
        run_binary(base, queries, gt, depthb, threads, rows, mem)
    return [
        {
            "engine": e,
            "depth": dp,
            "scan_bytes": float(b),
            "rescore_bytes": 4.0 * d,
            "recall": r,
            "qps": q,
            "qps_single": q1,
            "rss_bytes": mem[e],
        }
        for e, dp, b, r, q, q1 in rows
    ]


def run_sq8(base, queries, gt, depth8, threads, rows, mem):
    import faiss

    n, d = base.shape
    rss0 = rss_bytes()
    sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq.train(base)
    sq.add(base)
    # The index's growth; the f32 rows it rescores from (`base`) stay in RAM.
    mem["faiss SQ8"] = (rss_bytes() - rss0) / n

    def search_sq(qs=queries):
        _, cand = sq.search(qs, 10 * depth8)
        return rescore(base, qs, cand)

    t, found = best_of_3(search_sq)
    rows.append(
        (
            "faiss SQ8",
            depth8,
            sq.sa_code_size(),
            recall(found, gt),
            len(queries) / t,
            single_qps(search_sq, queries, threads),
        )
    )


def run_binary(base, queries, gt, depthb, threads, rows, mem):
    import faiss

    n, d = base.shape
    mean = base.mean(axis=0)
    pack = lambda x: np.packbits(x > mean, axis=1, bitorder="little")  # noqa: E731
    rss0 = rss_bytes()
    bi = faiss.IndexBinaryFlat(d)
    bi.add(pack(base))
    mem["faiss binary"] = (rss_bytes() - rss0) / n

    def search_bin(qs=queries):
        _, cand = bi.search(pack(qs), 10 * depthb)
        return rescore(base, qs, cand)

    t, found = best_of_3(search_bin)
    rows.append(
        (
            "faiss binary",
            depthb,
            d // 8,
            recall(found, gt),
            len(queries) / t,
            single_qps(search_bin, queries, threads),
        )
    )


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--data", choices=["synthetic", "real"], default="synthetic")
    p.add_argument("--int8-depth", type=int, default=4)
    p.add_argument("--binary-depth", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--workdir", default="/tmp/ragjet_compare_quantized")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument("--exe", default=None, help="prebuilt quantized_search example")
    p.add_argument(
        "--storages",
        default="f32,f16,int8,binary",
        help="comma-separated ragjet storages to run (faiss runs the peers of int8 / binary)",
    )
    args = p.parse_args()
    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.data == "real":
        base, queries, source = make_real(workdir)
        queries = np.tile(queries, (max(1, 1000 // len(queries)), 1))
    else:
        base, queries, source = make_data(args.n, args.queries, args.dim, args.seed)
    n, d = base.shape
    gt = exact_top10(base, queries)
    base.tofile(workdir / "base.f32")
    queries.tofile(workdir / "queries.f32")
    gt.astype("<i4").tofile(workdir / "gt.i32")
    print(f"data: {n} x {d} ({source}), {len(queries)} queries, {args.threads} threads")

    import faiss

    faiss.omp_set_num_threads(args.threads)
    results = []
    exe = args.exe or ROOT / "target" / "release" / "examples" / "quantized_search"
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run(
        [
            str(exe),
            str(workdir),
            str(d),
            str(args.int8_depth),
            str(args.binary_depth),
            args.storages,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    for line in out.splitlines():
        r = json.loads(line)
        r["engine"] = f"ragjet {r['storage'].lower()}"
        results.append(r)
    kinds = args.storages.split(",")
    results += run_faiss(base, queries, gt, args.int8_depth, args.binary_depth, kinds, args.threads)
    if args.json:
        report = {
            "args": vars(args),
            "data": {"n": int(n), "dim": int(d), "source": source},
            "queries": int(len(queries)),
            "engines": results,
        }
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    print()
    print(
        "| engine | rescore depth | scanned B/vector | rescore rows B/vector | recall@10 "
        "| batch q/s | single q/s | resident B/vector |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['engine']} | {r['depth']}·k | {r['scan_bytes']:,.1f} | "
            f"{r['rescore_bytes']:,.0f} | {r['recall']:.4f} | {r['qps']:,.0f} | "
            f"{r.get('qps_single', 0):,.0f} | {r.get('rss_bytes', 0):,.0f} |"
        )
    by = {r["engine"]: r for r in results}
    for mine, peer in [("ragjet int8", "faiss SQ8"), ("ragjet binary", "faiss binary")]:
        if mine in by and peer in by:
            a, b = by[mine], by[peer]
            print(
                f"{mine} / {peer}: batch {a['qps'] / b['qps']:.2f}x, "
                f"single {a['qps_single'] / b['qps_single']:.2f}x"
            )
    print(
        "resident: RSS growth per vector over the build (ragjet: from before its entries "
        "exist; int8 / binary rows in a mapped file, `FlatConfig::with_rows_dir`); faiss: the "
        "index alone, its rescore rows (numpy, 4·dim B) stay in RAM on top. ragjet private "
        "memory (RssAnon) after the queries: "
        + ", ".join(f"{r['engine']} {r['anon_bytes']:,.0f}" for r in results if "anon_bytes" in r)
    )


if __name__ == "__main__":
    main()
