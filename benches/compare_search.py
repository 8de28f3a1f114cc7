"""Vector search: ragjet against hnswlib and faiss-cpu on one data set.

One run builds the same data set in all three and prints, for each: HNSW
build time and memory per vector (resident-set growth over the build
divided by n, vectors included: for ragjet from before its entries are
made, so the records and their metadata count too); for HNSW at each
ef, recall@10 and single-thread queries/s (one query at a time); for exact search, single-query and
1000-query-batch queries/s (best of 3 calls); plus the machine's measured memory bandwidth
and the share of it ragjet's flat scan reaches.

    pip install hnswlib faiss-cpu numpy
    python3 benches/compare_search.py [--data synthetic|real] [--n 100000] \
        [--queries 1000] [--m 16] [--ef-construction 200] [--ef 16,32,...] [--threads 2] \
        [--json OUT.json]

Data sets:
- synthetic (default): with --dim 384 and the fixture embeddings present,
  the 4,000 real MiniLM vectors of ../shared/fixtures plus synthetic points
  around them (Gaussian noise, then normalised); otherwise random unit
  centres. Queries are held-out points drawn the same way.
- real: ragjet's embeddings (the installed `ragjet` wheel, all-MiniLM-L6-v2)
  of ../shared/fixtures/corpus.jsonl plus the Jargon File prose passages of
  benches/prose_corpus.py (`apt-get install jargon-text`); queries are
  ../shared/fixtures/queries.jsonl. Cached in the work directory.
Ground truth is exact top-10 by inner product (numpy). The base vectors
reach hnswlib in a shuffled order (data order costs it most of its recall
on the synthetic set: 0.74 against 0.97 at ef 64); faiss shuffles inside
`add`, and ragjet inside `upsert`. ragjet runs through the release example
`crates/ragjet-retrieval/examples/compare_search.rs`.
"""

import argparse
import ctypes
import gc
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
FIXTURE = FIXTURES / "minilm_reference.npy"
# The exact batch takes tens of milliseconds on small sets: every engine
# gets the best of this many calls, so thread wake-up and first-touch page
# faults of one call do not decide the figure.
BATCH_RUNS = 3


def make_data(n, nq, dim, seed):
    rng = np.random.default_rng(seed)
    if dim == 384 and FIXTURE.exists():
        centres = np.load(FIXTURE).astype(np.float32)
        source = f"{len(centres)} MiniLM fixture vectors + synthetic points around them"
    else:
        centres = rng.standard_normal((max(n // 25, 1), dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        source = f"{len(centres)} random unit centres + synthetic points around them"

    def around(count):
        idx = rng.integers(0, len(centres), count)
        pts = centres[idx] + rng.standard_normal((count, dim)).astype(np.float32) * (
            0.6 / np.sqrt(dim)
        )
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        return pts.astype(np.float32)

    real = (
        centres[: min(len(centres), n)]
        if source.startswith(str(len(centres)) + " MiniLM")
        else centres[:0]
    )
    base = np.concatenate([real, around(n - len(real))]).astype(np.float32)
    queries = around(nq)
    return base, queries, source


def make_real(workdir):
    """ragjet embeddings of the fixture corpus + Jargon File prose (cached)."""
    cache = workdir / "real.npz"
    if cache.exists():
        z = np.load(cache)
        return z["base"], z["queries"], str(z["source"])
    import ragjet

    sys.path.insert(0, str(ROOT / "benches"))
    import prose_corpus

    def read(path):
        with open(path) as f:
            return [json.loads(line)["text"] for line in f]

    corpus = read(FIXTURES / "corpus.jsonl")
    prose = [t for _, t in prose_corpus.load()]
    queries = read(FIXTURES / "queries.jsonl")
    emb = ragjet.Embedder(ragjet.default_model_dir(), num_threads=2)
    base = np.asarray(emb.embed(corpus + prose), dtype=np.float32)
    q = np.asarray(emb.embed(queries), dtype=np.float32)
    source = (
        f"ragjet all-MiniLM-L6-v2 embeddings: {len(corpus)} fixture passages + "
        f"{len(prose)} Jargon File passages; {len(queries)} fixture queries"
    )
    np.savez(cache, base=base, queries=q, source=source)
    return base, q, source


def rss_bytes():
    """Resident set size, after handing freed heap pages back to the OS so
    that an earlier engine's freed memory does not hide the next one's."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def exact_top10(base, queries):
    gt = np.empty((len(queries), 10), dtype=np.int32)
    for s in range(0, len(queries), 100):
        scores = queries[s : s + 100] @ base.T
        part = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        gt[s : s + 100] = np.take_along_axis(part, order, axis=1)
    return gt


def recall(found, gt):
    return float(np.mean([len(set(f) & set(g)) / 10.0 for f, g in zip(found, gt)]))


def bandwidth(base):
    """Bytes/s of a full read of a 512 MiB array (numpy sum, 1 thread) and of
    a BLAS matrix-vector product over the base matrix (all BLAS threads)."""
    a = np.ones(128 * 1024 * 1024, dtype=np.float32)
    best = min(_timed(lambda: a.sum()) for _ in range(3))
    sum_bw = a.nbytes / best
    q = base[0].copy()
    best = min(_timed(lambda: base @ q) for _ in range(5))
    return sum_bw, base.nbytes / best


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def run_hnswlib(base, queries, gt, args, efs):
    import hnswlib

    order = np.random.default_rng(args.seed).permutation(len(base))
    shuffled = np.ascontiguousarray(base[order])
    rss0 = rss_bytes()
    idx = hnswlib.Index(space="ip", dim=base.shape[1])
    t = time.perf_counter()
    idx.init_index(max_elements=len(base), ef_construction=args.ef_construction, M=args.m)
    idx.add_items(shuffled, order, num_threads=args.threads)
    build = time.perf_counter() - t
    mem = (rss_bytes() - rss0) / len(base)
    del shuffled
    idx.set_num_threads(1)
    rows = []
    for ef in efs:
        idx.set_ef(ef)
        t = time.perf_counter()
        found = [idx.knn_query(q[None, :], k=10)[0][0] for q in queries]
        rows.append((ef, recall(found, gt), len(queries) / (time.perf_counter() - t)))
    return {"build": build, "mem": mem, "hnsw": rows}


def run_faiss(base, queries, gt, args, efs):
    import faiss

    faiss.omp_set_num_threads(args.threads)
    rss0 = rss_bytes()
    idx = faiss.IndexHNSWFlat(base.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = args.ef_construction
    t = time.perf_counter()
    idx.add(base)
    build = time.perf_counter() - t
    mem = (rss_bytes() - rss0) / len(base)
    faiss.omp_set_num_threads(1)
    rows = []
    for ef in efs:
        idx.hnsw.efSearch = ef
        t = time.perf_counter()
        found = [idx.search(q[None, :], 10)[1][0] for q in queries]
        rows.append((ef, recall(found, gt), len(queries) / (time.perf_counter() - t)))
    faiss.omp_set_num_threads(args.threads)
    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(base)
    n1 = min(200, len(queries))
    t = time.perf_counter()
    for q in queries[:n1]:
        flat.search(q[None, :], 10)
    single = n1 / (time.perf_counter() - t)
    nb = min(1000, len(queries))
    best = float("inf")
    for _ in range(BATCH_RUNS):
        t = time.perf_counter()
        flat.search(queries[:nb], 10)
        best = min(best, time.perf_counter() - t)
    batch = nb / best
    return {"build": build, "mem": mem, "hnsw": rows, "flat_single": single, "flat_batch": batch}


def run_ragjet(workdir, args, efs):
    binary = args.ragjet_bin
    if binary is None:
        subprocess.run(
            [
                "cargo",
                "build",
                "--release",
                "-p",
                "ragjet-retrieval",
                "--example",
                "compare_search",
            ],
            cwd=ROOT,
            check=True,
        )
        binary = ROOT / "target" / "release" / "examples" / "compare_search"
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    out = subprocess.run(
        [
            str(binary),
            str(workdir),
            str(args.dim),
            str(args.m),
            str(args.ef_construction),
            ",".join(map(str, efs)),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {
        "build": r["hnsw_build_s"],
        "mem": r["hnsw_rss_per_vector"],
        "hnsw": [(e["ef"], e["recall"], e["qps"]) for e in r["hnsw"]],
        "flat_single": r["flat_single_qps"],
        "flat_batch": r["flat_batch_qps"],
        "flat_recall": r["flat_single_recall"],
        "flat16": (r.get("flat16_single_qps"), r.get("flat16_single_recall")),
        "save_load": (r["hnsw_save_s"], r["hnsw_load_s"], r["reload_identical"]),
        "filtered": [(e["ef"], e["recall"], e["qps"]) for e in r.get("hnsw_filtered_10pct", [])],
    }


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--data", choices=["synthetic", "real"], default="synthetic")
    p.add_argument("--ef", default="16,24,32,40,48,56,64,80,96,112,128,192,256,384,512")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--workdir", default="/tmp/ragjet_compare_search")
    p.add_argument("--ragjet-bin", default=None, help="prebuilt compare_search example")
    p.add_argument("--only", default="ragjet,hnswlib,faiss")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()
    efs = [int(x) for x in args.ef.split(",")]
    engines = args.only.split(",")

    workdir = pathlib.Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.data == "real":
        base, queries, source = make_real(workdir)
        # 200 real queries: repeated to 1,000 so that queries/s is timed
        # over more than a few milliseconds (recall is unchanged).
        queries = np.tile(queries, (max(1, 1000 // len(queries)), 1))
        args.n, args.dim = base.shape
        args.queries = len(queries)
    else:
        base, queries, source = make_data(args.n, args.queries, args.dim, args.seed)
    gt = exact_top10(base, queries)
    base.tofile(workdir / "base.f32")
    queries.tofile(workdir / "queries.f32")
    gt.astype("<i4").tofile(workdir / "gt.i32")
    print(f"data: {args.n} x {args.dim} ({source}), {args.queries} queries, seed {args.seed}")
    print(
        f"HNSW: M={args.m}, ef_construction={args.ef_construction}, build on {args.threads} "
        "threads, queries single-threaded one at a time; exact: all threads"
    )

    results = {}
    if "ragjet" in engines:
        results["ragjet"] = run_ragjet(workdir, args, efs)
    if "hnswlib" in engines:
        results["hnswlib"] = run_hnswlib(base, queries, gt, args, efs)
    if "faiss" in engines:
        results["faiss"] = run_faiss(base, queries, gt, args, efs)

    print()
    print("| engine | HNSW build | memory / vector | exact 1 query | exact 1000 batch |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        single = f"{r['flat_single']:,.1f} q/s" if "flat_single" in r else "—"
        batch = f"{r['flat_batch']:,.0f} q/s" if "flat_batch" in r else "—"
        print(f"| {name} | {r['build']:.1f} s | {r['mem']:,.0f} B | {single} | {batch} |")
    print()
    print("HNSW recall@10 @ single-thread queries/s:")
    print()
    print("| ef | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for i, ef in enumerate(efs):
        cells = [f"{r['hnsw'][i][1]:.3f} @ {r['hnsw'][i][2]:,.0f}" for r in results.values()]
        print(f"| {ef} | " + " | ".join(cells) + " |")
    print()
    for target in (0.95, 0.99):
        best = {}
        for name, r in results.items():
            ok = [qps for _, rec, qps in r["hnsw"] if rec >= target]
            best[name] = max(ok) if ok else None
        cells = ", ".join(f"{n} {q:,.0f} q/s" if q else f"{n} never" for n, q in best.items())
        line = f"best queries/s at recall@10 >= {target}: {cells}"
        peers = [q for n, q in best.items() if n != "ragjet" and q]
        if best.get("ragjet") and peers:
            line += f"; ragjet / best peer = {best['ragjet'] / max(peers):.2f}x"
        print(line)

    sum_bw, gemv_bw = bandwidth(base)
    if args.json:
        report = {
            "args": vars(args),
            "data": {"n": int(len(base)), "dim": int(base.shape[1]), "source": source},
            "queries": int(len(queries)),
            "bandwidth": {"numpy_sum_Bps": sum_bw, "gemv_Bps": gemv_bw},
            "engines": results,
        }
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    print()
    print(
        f"memory bandwidth: numpy sum of 512 MiB (1 thread) {sum_bw / 1e9:.1f} GB/s; "
        f"BLAS gemv over the base matrix {gemv_bw / 1e9:.1f} GB/s"
    )
    if "ragjet" in results:
        r = results["ragjet"]
        scan = base.nbytes * r["flat_single"]
        print(
            f"ragjet flat scan, single query: {scan / 1e9:.1f} GB/s = "
            f"{100 * scan / max(sum_bw, gemv_bw):.0f}% of the best measured bandwidth "
            f"(exact recall@10 {r['flat_recall']:.3f})"
        )
        save_s, load_s, same = r["save_load"]
        f16_qps, f16_rec = r["flat16"]
        if f16_qps:
            print(
                f"ragjet flat f16 storage, single query: {f16_qps:,.1f} q/s "
                f"({f16_qps / r['flat_single']:.2f}x f32), "
                f"recall@10 vs exact f32 truth {f16_rec:.3f}"
            )
        if r["filtered"]:
            print(
                "ragjet HNSW filtered (bucket == 3, 10 % of points; 200 queries; "
                "truth = exact filtered top-10): "
                + ", ".join(f"ef={e}: {rec:.3f} @ {qps:,.0f} q/s" for e, rec, qps in r["filtered"])
            )
        print(
            f"ragjet HNSW save {save_s:.2f} s, load {load_s:.2f} s (graph reloaded, not rebuilt; "
            f"answers identical after reload: {same})"
        )


if __name__ == "__main__":
    sys.exit(main())
