"""Shared pieces of the benchmark harness: the machine and commit a run is
tagged with, percentiles, ranking metrics, and the PNG plots of a results file.

    python3 benches/report.py RESULTS.json [--out-dir DIR]    # plots only

Each plot's title names the CPU model, the host and the git commit, so a
PNG copied out of context still says where its figures come from.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    """Short commit of the tree, with `+dirty` when it has uncommitted changes."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "commit": git_commit(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def ndcg_at_10(ranked, relevant):
    """nDCG@10 of a ranked id list against `{id: gain}`."""
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(relevant.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mrr_at_10(ranked, relevant):
    for i, d in enumerate(ranked[:10]):
        if relevant.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def retrieval_quality(rankings, queries):
    """Mean nDCG@10, MRR@10 and recall@10 of `{query id: ranked ids}`."""
    n = len(queries)
    nd = sum(ndcg_at_10(rankings[q["id"]], q["relevant"]) for q in queries) / n
    mrr = sum(mrr_at_10(rankings[q["id"]], q["relevant"]) for q in queries) / n
    rec = (
        sum(
            len(set(rankings[q["id"]][:10]) & set(q["relevant"])) / len(q["relevant"])
            for q in queries
        )
        / n
    )
    return {"ndcg@10": nd, "mrr@10": mrr, "recall@10": rec}


# -- Markdown summary ----------------------------------------------------------------


def _f(v, fmt=".1f"):
    return "—" if v is None else format(v, fmt)


def _summary_embedding(emb):
    lines = []
    names = emb["engine_names"]
    lat = emb["latency"]
    for cname, corpus in emb["corpora"].items():
        lines.append(
            f"**Embedding**, {cname} corpus ({corpus['passages']} passages, "
            f"{corpus['tokens']:,} tokens); ratios against sentence-transformers (ST) "
            "in the same run."
        )
        lines.append("")
        sizes = list(corpus["by_batch"])
        head = "| engine | " + " | ".join(f"batch {b}: passages/s (× ST)" for b in sizes)
        lines.append(head + " | tokens/s (batch 32) | 1 text p50 / p95 / p99 ms | min cos |")
        lines.append("|---|" + "---:|" * len(sizes) + "---:|---:|---:|")
        for k in names:
            cells = []
            for b in sizes:
                r = corpus["by_batch"][b][k]
                st = corpus["by_batch"][b].get("st")
                ratio = f" ({r['pps'] / st['pps']:.2f}×)" if st else ""
                cells.append(f"{r['pps']:.1f}{ratio}")
            b32 = corpus["by_batch"].get("32", corpus["by_batch"][sizes[0]])[k]
            cos = [v for v in (b32["cos_ref"], b32["cos_st"]) if v is not None]
            lines.append(
                f"| {names[k]} | "
                + " | ".join(cells)
                + f" | {b32['tps']:,.0f} | {lat[k]['p50_ms']:.2f} / {lat[k]['p95_ms']:.2f} / "
                f"{lat[k]['p99_ms']:.2f} | {_f(min(cos) if cos else None, '.5f')} |"
            )
        lines.append("")
    return lines


def _best_qps(rows, target):
    ok = [qps for _ef, rec, qps in rows if rec >= target]
    return max(ok) if ok else None


def _summary_search(search, quantized):
    lines = []
    for label, run in search.items():
        lines.append(
            f"**Search**, {run['data']['n']:,} × {run['data']['dim']} ({run['data']['source']}), "
            f"{run['queries']} queries; HNSW M={run['args']['m']}, "
            f"ef_construction={run['args']['ef_construction']}, queries one at a time on 1 thread."
        )
        lines.append("")
        lines.append(
            "| engine | build s | memory / vector B | q/s at recall@10 ≥ 0.95 | ≥ 0.99 "
            "| exact: 1 query q/s | exact: batch q/s |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, r in run["engines"].items():
            lines.append(
                f"| {name} | {r['build']:.2f} | {r['mem']:,.0f} | "
                f"{_f(_best_qps(r['hnsw'], 0.95), ',.0f')} | "
                f"{_f(_best_qps(r['hnsw'], 0.99), ',.0f')} | "
                f"{_f(r.get('flat_single'), ',.1f')} | {_f(r.get('flat_batch'), ',.0f')} |"
            )
        peers = {n: r for n, r in run["engines"].items() if n != "ragjet"}
        if "ragjet" in run["engines"] and peers:
            for target in (0.95, 0.99):
                mine = _best_qps(run["engines"]["ragjet"]["hnsw"], target)
                best = [_best_qps(r["hnsw"], target) for r in peers.values()]
                best = [b for b in best if b]
                if mine and best:
                    lines.append("")
                    lines.append(
                        f"ragjet HNSW / best peer at recall@10 ≥ {target}: {mine / max(best):.2f}×"
                    )
        q = quantized.get(label)
        if q:
            lines.append("")
            lines.append(
                "| quantized flat | scanned B / vector | recall@10 | batch q/s | 1 query q/s |"
            )
            lines.append("|---|---:|---:|---:|---:|")
            for r in q["engines"]:
                lines.append(
                    f"| {r['engine']} (rescore {r['depth']}·k) | {r['scan_bytes']:,.1f} | "
                    f"{r['recall']:.4f} | {r['qps']:,.0f} | {_f(r.get('qps_single'), ',.0f')} |"
                )
        lines.append("")
    return lines


def _summary_cache(cache):
    lines = [
        f"**Semantic cache**, {cache['stream']} lookups (paraphrase stream), same embeddings.",
        "",
        "| threshold | cache | hit rate | false-hit rate | lookup p50 µs | p99 µs |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    engines = cache["engines"]
    first = next(iter(engines.values()))
    for i, row in enumerate(first):
        for name, rows in engines.items():
            r = rows[i]
            lines.append(
                f"| {row['threshold']:.2f} | {name} | {r['hit_rate']:.3f} | "
                f"{r['false_hit_rate']:.3f} | {r['lookup_p50_us']:,.1f} | "
                f"{r['lookup_p99_us']:,.1f} |"
            )
    lines.append("")
    return lines


def _summary_e2e(e2e):
    pipes = e2e["pipelines"]
    first = next(iter(pipes.values()))
    levels = list(first["throughput"])
    lines = [
        f"**End to end** (LlamaIndex retriever, top {e2e['args']['top_k']}):",
        "",
        "| pipeline | ingest s | p50 / p95 / p99 ms | "
        + " | ".join(f"q/s at {c}" for c in levels)
        + " | nDCG@10 | MRR@10 | $ / 1k queries |",
        "|---|---:|---:|" + "---:|" * len(levels) + "---:|---:|---:|",
    ]
    for p in pipes.values():
        lines.append(
            f"| {p['label']} | {p['ingest_s']:.2f} | {p['p50_ms']:.2f} / {p['p95_ms']:.2f} / "
            f"{p['p99_ms']:.2f} | "
            + " | ".join(f"{p['throughput'][c]['qps']:.1f}" for c in levels)
            + f" | {p['ndcg@10']:.3f} | {p['mrr@10']:.3f} | {p['cost_per_1k_queries_usd']:.3f} |"
        )
    r = e2e.get("ratios")
    if r:
        lines.append("")
        lines.append(
            f"ragjet vs the usual setup: ingest {r['ingest_speedup']:.2f}× faster; latency p50 "
            f"{r['p50_ratio']:.2f}×, p95 {r['p95_ratio']:.2f}×, p99 {r['p99_ratio']:.2f}×; "
            "throughput " + ", ".join(f"{c}: {v:.2f}×" for c, v in r["throughput_ratio"].items())
        )
    lines.append("")
    return lines


def _summary_configs(cfg):
    lines = [
        "**Engine configurations** (labelled set; efficiency = nDCG@10 per mean ms):",
        "",
        "| configuration | nDCG@10 | MRR@10 | recall@10 | p50 ms | mean ms | nDCG@10 / ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in cfg["rows"]:
        mark = " **best**" if r["name"] == cfg["best"] else ""
        lines.append(
            f"| {r['name']}{mark} | {r['ndcg@10']:.3f} | {r['mrr@10']:.3f} | "
            f"{r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['mean_ms']:.2f} | "
            f"{r['efficiency']:.3f} |"
        )
    lines.append("")
    lines.append(
        f"Best (most nDCG@10 per ms within {cfg['quality_floor']:.0%} of the best nDCG@10): "
        f"{cfg['best']}; most efficient overall: {cfg['most_efficient_overall']}."
    )
    lines.append("")
    return lines


def summary(results):
    """Markdown tables of a results file's headline figures."""
    m = results["meta"]
    lines = [
        f"# Benchmarks: {results['profile']} profile, {results['started']}",
        "",
        f"`{results['command']}` on {m['host']}: {m['cpu']}, {m['cores']} cores, "
        f"commit {m['commit']}; load average {m['load_average']:.1f} at the start, "
        f"{_f(m.get('load_average_end'))} at the end.",
        "",
    ]
    if results.get("embedding"):
        lines += _summary_embedding(results["embedding"])
    if results.get("search"):
        lines += _summary_search(results["search"], results.get("quantized") or {})
    if results.get("cache"):
        lines += _summary_cache(results["cache"])
    if results.get("e2e"):
        lines += _summary_e2e(results["e2e"])
    if results.get("configs"):
        lines += _summary_configs(results["configs"])
    if results.get("failures"):
        lines.append(
            "Failed workloads: " + "; ".join(f"{k}: {v}" for k, v in results["failures"].items())
        )
        lines.append("")
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------


def _title(ax_or_fig, what, meta):
    text = (
        f"{what}\n{meta['cpu']} ({meta['cores']} cores) · {meta['host']} · commit {meta['commit']}"
    )
    if hasattr(ax_or_fig, "suptitle"):
        ax_or_fig.suptitle(text, fontsize=9)
    else:
        ax_or_fig.set_title(text, fontsize=9)


def _plot_embedding(plt, res, meta, out):
    emb = res["embedding"]
    corpus = next(iter(emb["corpora"].values()))
    names = emb["engine_names"]
    keys = list(names)
    sizes = [str(b) for b in emb["batch_sizes"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(keys))
    for i, k in enumerate(keys):
        vals = [corpus["by_batch"][b][k]["pps"] for b in sizes]
        a1.bar([j + i * width for j in range(len(sizes))], vals, width, label=names[k])
    a1.set_xticks([j + width * (len(keys) - 1) / 2 for j in range(len(sizes))])
    a1.set_xticklabels([f"batch {b}" for b in sizes])
    a1.set_ylabel("passages/s (higher is better)")
    a1.legend(fontsize=7)
    lat = emb["latency"]
    for i, p in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        a2.bar(
            [j + i * 0.27 for j in range(len(keys))],
            [lat[k][p] for k in keys],
            0.27,
            label=p.split("_")[0],
        )
    a2.set_xticks([j + 0.27 for j in range(len(keys))])
    a2.set_xticklabels([names[k] for k in keys], rotation=20, ha="right", fontsize=7)
    a2.set_ylabel("single short text, ms (lower is better)")
    a2.legend(fontsize=7)
    _title(fig, f"Embedding, all-MiniLM-L6-v2 ({corpus['source']})", meta)
    fig.tight_layout()
    path = out / "embedding.png"
    fig.savefig(path, dpi=110)
    return path


def _plot_search(plt, res, meta, out):
    runs = res["search"]
    fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 5), squeeze=False)
    for ax, (label, run) in zip(axes[0], runs.items()):
        for name, r in run["engines"].items():
            pts = sorted((qps, rec) for _ef, rec, qps in r["hnsw"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=f"{name} HNSW")
            if "flat_single" in r:
                rec = r.get("flat_recall", 1.0)
                ax.plot([r["flat_single"]], [rec], "s", label=f"{name} flat (1 query)")
        for q in res.get("quantized", {}).get(label, {}).get("engines", []):
            if q.get("qps_single"):
                ax.plot([q["qps_single"]], [q["recall"]], "^", label=q["engine"])
        ax.set_xscale("log")
        ax.set_xlabel("queries/s, one query at a time, 1 thread (log)")
        ax.set_ylabel("recall@10")
        ax.set_title(f"n = {run['data']['n']:,} × {run['data']['dim']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _title(fig, "Search: recall@10 against queries/s (up and right is better)", meta)
    fig.tight_layout()
    path = out / "search.png"
    fig.savefig(path, dpi=110)
    return path


def _plot_cache(plt, res, meta, out):
    cache = res["cache"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, rows in cache["engines"].items():
        t = [r["threshold"] for r in rows]
        a1.plot(t, [r["hit_rate"] for r in rows], "o-", label=f"{name}: hit rate")
        a1.plot(t, [r["false_hit_rate"] for r in rows], "x--", label=f"{name}: false-hit rate")
        a2.plot(t, [r["lookup_p50_us"] for r in rows], "o-", label=f"{name}: lookup p50")
    a1.set_xlabel("cosine similarity threshold")
    a1.set_ylabel("hit rate (of lookups), false-hit rate (of hits)")
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.set_xlabel("cosine similarity threshold")
    a2.set_ylabel("µs per lookup (log)")
    a2.set_yscale("log")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    rates = {
        tuple((r["hit_rate"], r["false_hit_rate"]) for r in rows)
        for rows in cache["engines"].values()
    }
    same = (
        " (hit curves identical: every cache finds the same neighbour)" if len(rates) == 1 else ""
    )
    _title(fig, "Semantic cache on a paraphrase stream, same embeddings" + same, meta)
    fig.tight_layout()
    path = out / "cache.png"
    fig.savefig(path, dpi=110)
    return path


def _plot_e2e(plt, res, meta, out):
    e2e = res["e2e"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8))
    names = list(e2e["pipelines"])
    for i, name in enumerate(names):
        p = e2e["pipelines"][name]
        a1.bar(
            [j + i * 0.4 for j in range(3)],
            [p["p50_ms"], p["p95_ms"], p["p99_ms"]],
            0.4,
            label=name,
        )
        levels = sorted(p["throughput"], key=int)
        a2.plot(
            [int(c) for c in levels],
            [p["throughput"][c]["qps"] for c in levels],
            "o-",
            label=name,
        )
    a1.set_xticks([0.2, 1.2, 2.2])
    a1.set_xticklabels(["p50", "p95", "p99"])
    a1.set_ylabel("query latency, ms (log; lower is better)")
    a1.set_yscale("log")
    a1.legend(fontsize=7)
    a2.set_xlabel("concurrent callers")
    a2.set_xticks([int(c) for c in levels])
    a2.set_ylabel("queries/s (higher is better)")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    _title(fig, "LlamaIndex retrieval pipeline, usual local setup vs ragjet's classes", meta)
    fig.tight_layout()
    path = out / "e2e.png"
    fig.savefig(path, dpi=110)
    return path


def _plot_configs(plt, res, meta, out):
    rows = res["configs"]["rows"]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    markers = "osD^v<>p*h"
    for i, r in enumerate(rows):
        ax.plot([r["mean_ms"]], [r["ndcg@10"]], markers[i % len(markers)], ms=8, label=r["name"])
    ax.legend(fontsize=7, loc="best")
    best = res["configs"]["best"]
    ax.set_xscale("log")
    ax.set_xlabel("mean query latency, ms (log; left is better)")
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    ax.set_ylabel("nDCG@10 (up is better)")
    ax.grid(alpha=0.3)
    _title(ax, f"Engine configurations; best quality per ms: {best}", meta)
    fig.tight_layout()
    path = out / "configs.png"
    fig.savefig(path, dpi=110)
    return path


PLOTS = {
    "embedding": _plot_embedding,
    "search": _plot_search,
    "cache": _plot_cache,
    "e2e": _plot_e2e,
    "configs": _plot_configs,
}


def plot_all(results, out_dir):
    """One PNG per workload present in `results`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, fn in PLOTS.items():
        if results.get(key):
            paths.append(fn(plt, results, results["meta"], out_dir))
            plt.close("all")
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--out-dir", default=None, help="default: beside the results file")
    args = ap.parse_args()
    path = pathlib.Path(args.results)
    results = json.loads(path.read_text())
    out = pathlib.Path(args.out_dir) if args.out_dir else path.with_suffix("")
    for p in plot_all(results, out):
        print(p)
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
