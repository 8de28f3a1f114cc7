"""Ray's overhead against one process, for docs/scale-out.md.

Embeds a corpus with one ``ragjet.Embedder`` in this process, then with
``ragjet.ray.embed`` on a local Ray (actor pools of 1×N and N×1 cores),
and searches the reference vectors with one ``FlatIndex`` against a
4-shard ``ragjet.ray.ShardedIndex`` (in process and one actor per shard).

    python3 benches/ray_overhead.py                                  # fixtures/ (300 passages)
    python3 benches/ray_overhead.py --fixtures ../shared/fixtures    # 4,000 passages

Needs ``ray[data]`` and the installed ragjet wheel. Each Ray figure is one
whole ``Dataset`` execution: actor start and model load included, as a
batch job pays them. Embedding figures are medians of interleaved rounds.
"""

import argparse
import json
import os
import pathlib
import statistics
import tempfile
import time

import numpy as np
import ray
import ray.data

import ragjet
import ragjet.ray as rr


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def process_cpu_seconds() -> float:
    """CPU seconds of this process, all threads: the embedder's work, which
    unlike wall time hardly moves when other work shares the machine.
    (Ray's workers exit with their Dataset, taking their counts along, so
    only the single process has this figure.)"""
    t = os.times()
    return t.user + t.system


def ray_embed(rows: list[dict], actors: int, cores: int) -> list[dict]:
    ds = ray.data.from_items(rows)
    return rr.embed(ds, concurrency=actors, num_cpus=cores, batch_size=64).take_all()


def main() -> None:
    root = pathlib.Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", type=pathlib.Path, default=root / "fixtures")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians)")
    args = ap.parse_args()
    reps = args.repeats
    with open(args.fixtures / "corpus.jsonl") as f:
        rows = [json.loads(line) for line in f]
    texts = [r["text"] for r in rows]
    n, cpus = len(rows), args.cpus
    print(
        f"corpus: {n} passages from {args.fixtures}; {cpus} CPUs; "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    load, embedder = timed(lambda: ragjet.Embedder(num_threads=cpus))
    start, _ = timed(lambda: ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False))
    print(f"model load in process {load:.2f} s; ray.init(num_cpus={cpus}) {start:.2f} s")
    pools = sorted({(1, cpus), (cpus, 1)})
    variants = ["single", *pools]
    wall = {v: [] for v in variants}
    fixed = {p: [] for p in pools}
    cpu = []
    # Interleaved rounds, medians: other work on the machine hits every
    # variant alike. A two-passage job is Ray's fixed cost (actor start,
    # model load, the Dataset's own scheduling).
    for _ in range(reps):
        c = process_cpu_seconds()
        wall["single"].append(timed(lambda: embedder.embed(texts))[0])
        cpu.append(process_cpu_seconds() - c)
        for p in pools:
            wall[p].append(timed(lambda p=p: ray_embed(rows, *p))[0])
            fixed[p].append(timed(lambda p=p: ray_embed(rows[:2], *p))[0])
    med = statistics.median
    base, base_cpu = med(wall["single"]), med(cpu)
    print(
        f"single process, {cpus} threads: {base:.2f} s = {n / base:,.1f} passages/s; "
        f"{base_cpu:.2f} CPU s = {n / base_cpu:,.1f} passages per CPU second"
    )
    for actors, per in pools:
        w, f = med(wall[(actors, per)]), med(fixed[(actors, per)])
        print(
            f"ray.embed, {actors} actor(s) x {per} core(s): {w:.2f} s = {n / w:,.1f} passages/s "
            f"({w / base:.2f}x the single process's time); a 2-passage job {f:.2f} s"
        )

    vectors = np.load(args.fixtures / "minilm_reference.npy")
    queries = np.load(args.fixtures / "queries_reference.npy")
    items = [{"id": r["id"], "embedding": vectors[i]} for i, r in enumerate(rows)]
    one = ragjet.FlatIndex(vectors.shape[1])
    flat, _ = timed(lambda: one.add([r["id"] for r in rows], vectors))
    with tempfile.TemporaryDirectory() as tmp:
        built, _ = timed(
            lambda: rr.build_index(
                ray.data.from_items(items), shards=4, path=f"{tmp}/idx", text_column=None
            )
        )
        print(
            f"index of {n}: one FlatIndex {flat * 1e3:.1f} ms; build_index(shards=4) {built:.2f} s"
        )
        q = len(queries)
        base = min(timed(lambda: one.search(queries, k=10))[0] for _ in range(reps))
        one_q = min(timed(lambda: one.search(queries[0], k=10))[0] for _ in range(20))
        print(
            f"search {q} queries, k=10: one FlatIndex {base * 1e3:.1f} ms for the batch, "
            f"{one_q * 1e3:.2f} ms for one query"
        )
        for actors in (False, True):
            sharded = rr.ShardedIndex(f"{tmp}/idx", ray_actors=actors)
            batch = min(timed(lambda s=sharded: s.search(queries, k=10))[0] for _ in range(reps))
            single_q = min(
                timed(lambda s=sharded: s.search(queries[0], k=10))[0] for _ in range(20)
            )
            where = "one actor per shard" if actors else "in process"
            print(
                f"  4 shards, {where}: {batch * 1e3:.1f} ms for the batch, "
                f"{single_q * 1e3:.2f} ms for one query"
            )
            sharded.close()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
