#!/usr/bin/env python3
"""Builds the tiny cross-encoder that ragjet-inference's CrossEncoder is tested
against, and the scores Hugging Face transformers computes with it.

No cross-encoder weights can be installed from a package registry, so the
test model is a random `BertForSequenceClassification` (hidden 32, 2 layers,
2 heads, intermediate 64, one label) with a hand-made WordPiece vocabulary of
a few hundred tokens, made here once with a fixed seed. Its outputs are
committed; run this again only to change the fixture:

    python -m venv /tmp/ce-venv
    /tmp/ce-venv/bin/pip install transformers torch
    /tmp/ce-venv/bin/python scripts/make_tiny_cross_encoder.py

It writes crates/ragjet-inference/tests/fixtures/tiny-cross-encoder/:
config.json, model.safetensors, tokenizer.json, tokenizer_config.json (as
`save_pretrained` writes them) and reference.json: for every (query,
passage) pair, the token ids the pair was encoded to and the logits and
sigmoid scores of the model, at the default maximum length (64, the
tokenizer's `model_max_length`) and at max_length 20. The pairs include long
ones that are truncated (longest first), an empty passage, upper case and
words outside the vocabulary.

Weights are drawn wider than BERT's initialiser (std 0.02) and layer norms
are randomised too: with the stock initialiser every logit would sit within
0.01 of the bias and a 1e-4 comparison would prove little.
"""

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

SEED = 20240516
MAX_POSITIONS = 64
SHORT_MAX_LENGTH = 20
OUT = (
    Path(__file__).resolve().parent.parent
    / "crates/ragjet-inference/tests/fixtures/tiny-cross-encoder"
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """
the a an of to in on at for with from by is are was were be been what which who how
why when where does do did can could should would will not no yes and or but if than
cat cats dog dogs bird fish horse mouse sat sit ran run runs running fast slow quick
red blue green black white house tree river stone light dark night day sun moon star
water fire earth wind city town road bridge car train ship plane book page word words
search engine query answer passage document index vector model token tokens rank
ranking rerank score scores retrieval generation language large small big little
paris france london england berlin germany capital country population people
python rust code program computer memory cache speed time year years first second
hello world good bad best better new old long short high low open close
""".split()
SUFFIXES = ["##s", "##ed", "##ing", "##er", "##ly", "##es", "##al"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
DIGITS = [str(d) for d in range(10)]
PUNCT = list(".,;:!?'\"()-")

PAIRS = [
    ("what is the capital of france", "paris is the capital of france"),
    ("what is the capital of france", "berlin is the capital of germany"),
    ("what is the capital of france", "the cat sat on the mat"),
    ("how fast does a train run", "a train runs fast on a long road"),
    ("how fast does a train run", "the river is long and dark at night"),
    ("Who wrote the Book?", "The first page of the BOOK was written by people."),
    ("search engine ranking", "a search engine ranks documents by score"),
    ("search engine ranking", ""),
    ("", "an empty query still gets a score"),
    ("vector index retrieval", "retrieval with a vector index is fast"),
    ("zebra xylophone quantum", "unknown words become pieces or unknown tokens"),
    ("rust code speed", "rust programs run fast; python code is slower."),
    ("memory cache", "a cache keeps the answer in memory for the second query"),
    ("the sun and the moon", "the sun is a star; the moon is not a star"),
    ("dogs and cats", "dogs, cats, birds and fish live in the house"),
    ("red green blue", "red, green and blue light"),
    # Long passage: truncated on the passage side only.
    (
        "which city is the capital",
        " ".join(["the capital city of the country has a large population"] * 8),
    ),
    # Long query and long passage: longest-first truncates both.
    (
        " ".join(["what is the best model for ranking passages"] * 6),
        " ".join(["a small model ranks each passage with a score"] * 7),
    ),
    # Query longer than the passage.
    (
        " ".join(["how does the search engine rank a document"] * 9),
        "it ranks it",
    ),
    ("1 2 3", "numbers 4 5 6 and 7"),
]


def build_tokenizer() -> Tokenizer:
    vocab_list = SPECIALS + WORDS + SUFFIXES + LETTERS + ["##" + c for c in LETTERS]
    vocab_list += DIGITS + PUNCT
    seen = []
    for token in vocab_list:
        if token not in seen:
            seen.append(token)
    vocab = {token: i for i, token in enumerate(seen)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def randomise(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))


def main() -> int:
    torch.manual_seed(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    raw = build_tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
        # As BertTokenizer: the model must see the pair's segment ids.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    config = BertConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
        type_vocab_size=2,
        hidden_act="gelu",
        num_labels=1,
        architectures=["BertForSequenceClassification"],
    )
    model = BertForSequenceClassification(config).eval()
    randomise(model)
    model.save_pretrained(OUT, safe_serialization=True)
    tokenizer.save_pretrained(OUT)

    references = []
    for max_length in (None, SHORT_MAX_LENGTH):
        queries = [q for q, _ in PAIRS]
        passages = [p for _, p in PAIRS]
        # As sentence-transformers' CrossEncoder.predict tokenises.
        features = tokenizer(
            queries,
            passages,
            padding=True,
            truncation="longest_first",
            max_length=max_length or tokenizer.model_max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            logits = model(**features).logits[:, 0]
        scores = torch.sigmoid(logits)
        rows = []
        for i, (q, p) in enumerate(PAIRS):
            mask = features["attention_mask"][i].bool()
            rows.append(
                {
                    "query": q,
                    "passage": p,
                    "input_ids": features["input_ids"][i][mask].tolist(),
                    "token_type_ids": features["token_type_ids"][i][mask].tolist(),
                    "logit": float(logits[i]),
                    "sigmoid": float(scores[i]),
                }
            )
        references.append({"max_length": max_length, "pairs": rows})
    spread = float(torch.tensor([r["logit"] for r in references[0]["pairs"]]).std())
    doc = {
        "made_by": "scripts/make_tiny_cross_encoder.py",
        "seed": SEED,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "tokenizers": __import__("tokenizers").__version__,
        "logit_std": spread,
        "references": references,
    }
    (OUT / "reference.json").write_text(json.dumps(doc, indent=1) + "\n")
    sizes = {f.name: f.stat().st_size for f in sorted(OUT.iterdir())}
    print(json.dumps(sizes, indent=1))
    print(f"logit std {spread:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
