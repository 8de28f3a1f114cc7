"""Semantic caching: ragjet's SemanticCache against GPTCache on one paraphrase stream.

    pip install gptcache sqlalchemy faiss-cpu        # the peer and its stores
    python3 benches/cache_bench.py [--intents 150] [--variants 4] \
        [--thresholds 0.7,0.75,0.8,0.85,0.9,0.95] [--json OUT.json]

The stream: `--intents` Jargon File terms of the labelled set
(benches/data/jargon-ict), each asked `--variants` ways from fixed
templates ("What does X mean?", "Define X.", "X meaning", ...), shuffled
with a fixed seed. The answer stored for a question is its term. Every
question is looked up; a miss stores the question and its answer (as an
application would after calling its LLM); a hit is *correct* when the
answer is for the same term and *false* otherwise (the user would get
another question's answer; nothing is stored then, in both caches).

`gptcache` is GPTCache with its default scalar store, sqlite in a file;
`gptcache-memory` the same with sqlite in memory (its fastest local
setup); faiss runs on one thread (its OpenMP threads cost milliseconds of
wake-up per single-query search). Only the cache differs: both get the
same vectors, ragjet's all-MiniLM-L6-v2 embeddings of every question
computed once up front (GPTCache's `embedding_func` is a lookup into
them), and the same cosine threshold.
GPTCache keeps its vectors in faiss `IDMap,Flat` (squared L2) with
`SearchDistanceEvaluation`, whose score is 4 - d²; for unit vectors
d² = 2 - 2·cos, so a cosine threshold c is GPTCache's
`similarity_threshold` (1 + c) / 2. ragjet's cache has no TTL here.

Per threshold: hit rate (hits / lookups), false-hit rate (false hits /
hits), repeat recall (correct hits / lookups whose term was asked before),
and lookup latency p50 / p99 in µs (the cache call only; a GPTCache `get`
includes its embedding lookup, a dict access).
"""

import argparse
import atexit
import json
import pathlib
import random
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_qrels  # noqa: E402
from report import percentile  # noqa: E402

SEED = 20261125
TEMPLATES = [
    "What does {t} mean?",
    "Define {t}.",
    "{t} meaning",
    "Can you explain what {t} is?",
    "what is the definition of {t}",
    "Explain the hacker jargon term {t}.",
    "Tell me about {t}",
    "I keep hearing '{t}', what is it?",
]


def stream(n_intents, n_variants):
    """`[(question, term)]`, deterministic."""
    corpus, _ = make_qrels.load()
    terms = sorted({d["id"].split(":", 1)[1] for d in corpus})
    rng = random.Random(SEED)
    picked = rng.sample(terms, min(n_intents, len(terms)))
    out = []
    for t in picked:
        for tpl in rng.sample(TEMPLATES, min(n_variants, len(TEMPLATES))):
            out.append((tpl.format(t=t), t))
    rng.shuffle(out)
    return out


def run_ragjet(questions, vectors, threshold):
    import ragjet

    cache = ragjet.SemanticCache(
        vectors.shape[1], threshold=threshold, ttl_seconds=None, max_entries_per_scope=100_000
    )

    def get(i):
        hit = cache.get(vectors[i])
        return None if hit is None else hit[0]

    def put(i, answer):
        cache.put(vectors[i], answer)

    return get, put


def run_gptcache(questions, vectors, threshold, tmp, sql_url):
    import faiss
    from gptcache import Cache, Config
    from gptcache.adapter.api import get as g_get
    from gptcache.adapter.api import put as g_put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    # One query against a few thousand vectors: faiss's OpenMP threads only
    # add wake-up time (5 ms a search on the shared 2-core machine).
    faiss.omp_set_num_threads(1)
    index = {q: vectors[i] for i, q in enumerate(questions)}
    tmp = pathlib.Path(tmp)
    dm = get_data_manager(
        CacheBase("sqlite", sql_url=sql_url or f"sqlite:///{tmp / 'gptcache.db'}"),
        VectorBase("faiss", dimension=vectors.shape[1], index_path=str(tmp / "faiss.index")),
    )
    cache = Cache()
    cache.init(
        pre_embedding_func=get_prompt,
        embedding_func=lambda text, **_: index[text],
        data_manager=dm,
        similarity_evaluation=SearchDistanceEvaluation(),
        config=Config(similarity_threshold=(1.0 + threshold) / 2.0),
    )

    def get(i):
        return g_get(questions[i], cache_obj=cache)

    def put(i, answer):
        g_put(questions[i], answer, cache_obj=cache)

    return get, put


def replay(items, get, put):
    seen = set()
    hits = false_hits = correct = repeats = 0
    lat = []
    for i, (_, term) in enumerate(items):
        repeat = term in seen
        repeats += repeat
        t = time.perf_counter()
        answer = get(i)
        lat.append((time.perf_counter() - t) * 1e6)
        if answer is None:
            put(i, term)
            seen.add(term)
        else:
            hits += 1
            if answer == term:
                correct += 1
            else:
                false_hits += 1
    n = len(items)
    return {
        "lookups": n,
        "hits": hits,
        "false_hits": false_hits,
        "hit_rate": hits / n,
        "false_hit_rate": false_hits / hits if hits else 0.0,
        "repeat_recall": correct / repeats if repeats else 0.0,
        "lookup_p50_us": percentile(lat, 50),
        "lookup_p99_us": percentile(lat, 99),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--intents", type=int, default=150)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--thresholds", default="0.7,0.75,0.8,0.85,0.9,0.95")
    ap.add_argument(
        "--only",
        default="ragjet,gptcache,gptcache-memory",
        help="ragjet, gptcache (its default: sqlite file), gptcache-memory (sqlite in memory)",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.intents < 1 or not 1 <= args.variants <= len(TEMPLATES):
        ap.error(f"--intents >= 1 and 1 <= --variants <= {len(TEMPLATES)}")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    engines = args.only.split(",")

    import ragjet

    items = stream(args.intents, args.variants)
    questions = [q for q, _ in items]
    emb = ragjet.Embedder()
    vectors = np.ascontiguousarray(emb.embed(questions, normalize=True), dtype=np.float32)
    print(
        f"{len(items)} questions: {args.intents} terms x {args.variants} phrasings; "
        f"embeddings: ragjet {emb.precision}, computed once for both caches"
    )
    # GPTCache writes its faiss index at exit: its directories must outlive
    # it (atexit runs the last registered first, so this cleanup runs last).
    tmp_root = pathlib.Path(tempfile.mkdtemp(prefix="ragjet-cache-bench-"))
    atexit.register(shutil.rmtree, tmp_root, True)
    report = {"args": vars(args), "stream": len(items), "engines": {}}
    versions = {"ragjet": ragjet.__version__}
    for name in engines:
        rows = []
        for th in thresholds:
            tmp = tmp_root / f"{name}-{th}"
            tmp.mkdir()
            if name == "ragjet":
                get, put = run_ragjet(questions, vectors, th)
            elif name in ("gptcache", "gptcache-memory"):
                import gptcache

                versions["gptcache"] = gptcache.__version__
                sql = "sqlite:///:memory:" if name == "gptcache-memory" else None
                get, put = run_gptcache(questions, vectors, th, tmp, sql)
            else:
                ap.error(f"unknown cache {name}")
            r = replay(items, get, put)
            r["threshold"] = th
            rows.append(r)
        report["engines"][name] = rows
    report["versions"] = versions
    print()
    print(
        "| threshold | cache | hit rate | false-hit rate | repeat recall | lookup p50 µs "
        "| lookup p99 µs | GPTCache p50 / this p50 |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for i, th in enumerate(thresholds):
        base = report["engines"].get("gptcache", [None] * len(thresholds))[i]
        for name, rows in report["engines"].items():
            r = rows[i]
            ratio = f"{base['lookup_p50_us'] / r['lookup_p50_us']:,.1f}×" if base else "—"
            print(
                f"| {th:.2f} | {name} | {r['hit_rate']:.3f} | {r['false_hit_rate']:.3f} "
                f"| {r['repeat_recall']:.3f} | {r['lookup_p50_us']:.1f} "
                f"| {r['lookup_p99_us']:.1f} | {ratio} |"
            )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
