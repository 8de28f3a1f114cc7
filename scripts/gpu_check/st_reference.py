"""sentence-transformers side of the GPU check.

1. The parity reference: f32 embeddings of the corpus computed on the CPU
   (the issue's "CPU reference"), saved as .npy for gpu_check.
2. sentence-transformers fp16 throughput on the GPU at batch 32 and 256, on
   the corpus and on the "short passages" (first 12 words of each passage,
   the corpus 8 times over: the same list gpu_check builds), timed after a
   warm-up pass, with the GPU synchronised.

Prints one JSON object a line and writes them all to --out-json.
`--cpu-dry-run` proves the plumbing on a machine without a GPU: a slice of
the corpus, the "GPU" figures measured on the CPU in f32.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer


def read_corpus(path: Path, limit: int | None) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
                if limit is not None and len(texts) >= limit:
                    break
    return texts


def short_passages(texts: list[str]) -> list[str]:
    short = [" ".join(t.split()[:12]) for t in texts]
    return short * 8


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(model: SentenceTransformer, texts: list[str], batch: int, device: str) -> float:
    model.encode(texts[:512], batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
    sync(device)
    t = time.perf_counter()
    out = model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
    sync(device)
    secs = time.perf_counter() - t
    assert out.shape[0] == len(texts)
    return len(texts) / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True, type=Path)
    ap.add_argument("--out-npy", required=True, type=Path)
    ap.add_argument("--out-json", required=True, type=Path)
    ap.add_argument("--limit", type=int, default=None, help="first N passages only")
    ap.add_argument("--cpu-dry-run", action="store_true")
    args = ap.parse_args()

    lines = []

    def emit(obj: dict) -> None:
        print(json.dumps(obj), flush=True)
        lines.append(obj)

    texts = read_corpus(args.corpus, args.limit)
    torch.set_num_threads(os.cpu_count() or 1)

    # 1. CPU f32 reference.
    t = time.perf_counter()
    cpu = SentenceTransformer(args.model, device="cpu")
    ref = cpu.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
    np.save(args.out_npy, ref.astype(np.float32))
    emit(
        {
            "check": "st_reference",
            "device": "cpu",
            "precision": "f32",
            "passages": len(texts),
            "seconds": time.perf_counter() - t,
            "dim": int(ref.shape[1]),
            "mean_pairwise_cosine": float(np.mean(ref[:256] @ ref[:256].T)),
        }
    )
    del cpu

    # 2. fp16 throughput on the GPU.
    if args.cpu_dry_run:
        device, dtype = "cpu", torch.float32
    else:
        if not torch.cuda.is_available():
            raise SystemExit(
                "st_reference: no CUDA GPU visible to torch (use --cpu-dry-run without one)"
            )
        device, dtype = "cuda", torch.float16
    model = SentenceTransformer(args.model, device=device)
    model = model.to(dtype)
    short = short_passages(texts)
    for batch in (32, 256):
        for name, lst in (("corpus", texts), ("short", short)):
            pps = throughput(model, lst, batch, device)
            emit(
                {
                    "check": "st_throughput",
                    "device": device,
                    "precision": str(dtype).removeprefix("torch."),
                    "batch": batch,
                    "set": name,
                    "passages": len(lst),
                    "passages_per_s": pps,
                }
            )
    if device == "cuda":
        emit({"check": "st_gpu", "name": torch.cuda.get_device_name(0), "torch": torch.__version__})
    with open(args.out_json, "w", encoding="utf-8") as f:
        for obj in lines:
            f.write(json.dumps(obj) + "\n")


if __name__ == "__main__":
    main()
