"""Creates a random-weight model with all-MiniLM-L6-v2's architecture.

The real model's 91 MB of weights cannot travel to the GPU host (what is sent
there is limited to ~64 MiB in all), so the GPU check compares ragjet and
sentence-transformers on a model of the same shape built there from
config.json + tokenizer.json, with a fixed seed, saved as safetensors next to
the sentence-transformers files (modules.json, 1_Pooling/, ...), so both load
the same folder.

Weights are not BERT's default initialisation (normal(0, 0.02), LayerNorm
1/0): with those, every text gets nearly the same embedding and a wrong
pooling or mask would still score a cosine of 0.999 (mean pairwise cosine
of different passages: 0.986). Instead word embeddings are N(0, 1), position
and token-type embeddings N(0, 0.1), each linear layer N(0, 1/fan_in),
LayerNorm gains 1 + N(0, 0.2): different passages then have a mean pairwise
cosine of about 0.85 (the real model: 0.44 on this corpus). gpu_check also
reports the centred cosine (after removing the reference's mean embedding),
which no common direction can inflate.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
]


def randomize(model: BertModel, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif "LayerNorm.bias" in name:
                p.zero_()
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            elif "word_embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "embeddings" in name:
                # Positions are shared by all texts: kept small, or they
                # dominate every mean-pooled embedding.
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--src", required=True, type=Path, help="folder with config.json, tokenizer.json, ..."
    )
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=20261125)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        src = args.src / f
        if src.exists():
            (args.out / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, args.out / f)
    for f in ("config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        if not (args.out / f).exists():
            raise SystemExit(f"make_model: {args.src / f} is missing")

    config = BertConfig.from_json_file(str(args.src / "config.json"))
    torch.manual_seed(args.seed)
    model = BertModel(config, add_pooling_layer=False)
    randomize(model, args.seed)
    model.eval()
    model.save_pretrained(str(args.out), safe_serialization=True)
    # save_pretrained rewrote config.json; keep the original so both tools
    # read exactly what travelled.
    shutil.copy(args.src / "config.json", args.out / "config.json")
    n = sum(p.numel() for p in model.parameters())
    print(
        json.dumps({"step": "make_model", "out": str(args.out), "seed": args.seed, "parameters": n})
    )


if __name__ == "__main__":
    main()
