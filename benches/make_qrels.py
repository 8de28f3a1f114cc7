"""Build the labelled retrieval set of benches/data/jargon-ict/ from the Jargon File.

    apt-get install jargon-text               # Jargon File 4.4.7, public domain
    python3 benches/make_qrels.py [--out benches/data/jargon-ict]

No BEIR-style set with relevance labels installs from a package registry
reachable here (see docs/benchmarks.md), so this one is made with the
inverse cloze task (Lee, Chang and Toutanova, ACL 2019): a sentence is cut
out of a passage and becomes the query; the passage it was cut from, now
without that sentence, is the one relevant passage. The query therefore
shares no sentence with its answer, only its topic, vocabulary and
context, which is what a semantic retriever should find.

Method, deterministic (seed 20261125):
1. The glossary entries of `benches/prose_corpus.py` (every Jargon File
   entry of at least 40 words, `term: pronunciation, part of speech.
   definition`), in file order.
2. Each entry is split into sentences; an entry qualifies when it has at
   least 3 and one of its sentences after the first (the first holds the
   headword and the part of speech) has 8 to 40 words.
3. QUERIES entries are drawn from the qualifying ones; in each, one such
   sentence is drawn. The query is that sentence with the headword replaced
   by "it" (so the term's name does not give the answer away); the passage
   is the entry without it.
4. DISTRACTORS further entries, drawn from all the others, join unchanged.
5. The passages are shuffled; ids are `jargon:<term>`.

Files: `corpus.jsonl` (`{"id", "text"}`), `queries.jsonl` (`{"id", "text",
"relevant": {passage id: 1}}`).
"""

import argparse
import json
import pathlib
import random
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import prose_corpus  # noqa: E402

SEED = 20261125
QUERIES = 250
DISTRACTORS = 550
DEFAULT_OUT = HERE / "data" / "jargon-ict"
_SENTENCE_END = re.compile(r"(?<=[.!?\u201d])\s+(?=[A-Z\u201c\"(])")


def sentences(text):
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def mask(sentence, term):
    pattern = re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)", re.IGNORECASE)
    return re.sub(r"\s+", " ", pattern.sub("it", sentence)).strip()


def build(source=prose_corpus.DEFAULT_SOURCE, n_queries=QUERIES, n_distractors=DISTRACTORS):
    """`(corpus, queries)` as lists of dicts; the same for the same source."""
    entries = prose_corpus._entries(prose_corpus._read_lines(source))
    rng = random.Random(SEED)
    qualifying = []
    for i, (_pid, text) in enumerate(entries):
        sents = sentences(text)
        picks = [j for j in range(1, len(sents)) if 8 <= len(sents[j].split()) <= 40]
        if len(sents) >= 3 and picks:
            qualifying.append((i, sents, picks))
    chosen = rng.sample(qualifying, min(n_queries, len(qualifying)))
    used = {i for i, _, _ in chosen}
    corpus, queries = [], []
    for n, (i, sents, picks) in enumerate(chosen):
        pid, _ = entries[i]
        term = pid.split(":", 1)[1]
        j = rng.choice(picks)
        doc_id = f"jargon:{term}"
        corpus.append({"id": doc_id, "text": " ".join(sents[:j] + sents[j + 1 :])})
        queries.append({"id": f"q{n:04d}", "text": mask(sents[j], term), "relevant": {doc_id: 1}})
    others = [i for i in range(len(entries)) if i not in used]
    for i in rng.sample(others, min(n_distractors, len(others))):
        pid, text = entries[i]
        corpus.append({"id": f"jargon:{pid.split(':', 1)[1]}", "text": text})
    rng.shuffle(corpus)
    ids = [d["id"] for d in corpus]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate passage ids: the Jargon File layout changed")
    return corpus, queries


def load(directory=DEFAULT_OUT):
    """The committed set: `(corpus, queries)`."""
    directory = pathlib.Path(directory)

    def read(name):
        with open(directory / name, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    return read("corpus.jsonl"), read("queries.jsonl")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=str(prose_corpus.DEFAULT_SOURCE))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    try:
        corpus, queries = build(args.source)
    except prose_corpus.ProseSourceMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        with open(out / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(corpus)} passages, {len(queries)} queries -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
