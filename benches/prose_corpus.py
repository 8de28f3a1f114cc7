"""A real-prose benchmark corpus with long passages, built from the Jargon File.

    apt-get install jargon-text       # Jargon File 4.4.7, public domain (Debian main)
    python3 benches/prose_corpus.py [--source PATH] [--limit N] > prose.jsonl

The fixture corpus (`../shared/fixtures/corpus.jsonl`) is synthetic and no
passage in it reaches 256 tokens, so it never exercises truncation. This
corpus is real English prose of very uneven length: each glossary entry of
the Jargon File in full (`term: pronunciation, part of speech. definition`,
entries under 40 words, the bare cross-references, left out), plus the
narrative chapters and appendices (the introduction, "Hacker Folklore",
"A Portrait of J. Random Hacker") cut at paragraph boundaries into passages
of at least 150 words. Roughly one passage in six is longer than
all-MiniLM-L6-v2's 256-token window, so truncation is exercised, and
because the long passages cost 256 tokens each they carry a much larger
share of the work.

The passages are shuffled with a fixed seed, so the first N are a
representative sample of the whole (the file itself is alphabetical) and
every run sees the same texts. Cross-reference braces (`{term}`) are
dropped and white space is collapsed; nothing else is changed.
"""

import argparse
import gzip
import json
import pathlib
import random
import re
import sys

DEFAULT_SOURCE = pathlib.Path("/usr/share/doc/jargon-text/jargon.txt.gz")
SEED = 20261125
MIN_ENTRY_WORDS = 40
MIN_CHUNK_WORDS = 150

# The file uses no-break spaces in headings ("Appendix\u00a0A."), hence \s.
_APPENDIX_A = re.compile(r"^Appendix\sA\.")
_BIBLIOGRAPHY = re.compile(r"^Bibliography\s*$")
_CHAPTER_1 = re.compile(r"^Chapter\s1\.")
_GLOSSARY = re.compile(r"^Glossary\s*$")
_ENTRY = re.compile(r"^   :(.+?):(.*)$")
_BOX = re.compile("[\u2500-\u257f]")  # box-drawing: the revision-history table


class ProseSourceMissing(RuntimeError):
    """The Jargon File text is not installed."""


def _clean(text):
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def _read_lines(source):
    source = pathlib.Path(source)
    if not source.exists():
        raise ProseSourceMissing(
            f"{source} not found: install the Jargon File with `apt-get install jargon-text` "
            "(or pass the path of jargon.txt[.gz])"
        )
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as f:
        return f.read().split("\n")


def _index(lines, pattern, start=0):
    for i in range(start, len(lines)):
        if pattern.match(lines[i]):
            return i
    raise ValueError(f"unexpected Jargon File layout: no line matches {pattern.pattern!r}")


def _entries(lines):
    """Glossary entries: from the first `   :term:` line to Appendix A."""
    start = next(i for i, line in enumerate(lines) if _ENTRY.match(line))
    end = _index(lines, _APPENDIX_A, start)
    out, term, body = [], None, []
    for line in lines[start:end]:
        m = _ENTRY.match(line)
        if m:
            if term is not None:
                out.append((term, body))
            term, body = m.group(1), [m.group(2)]
        else:
            body.append(line)
    if term is not None:
        out.append((term, body))
    texts = []
    for term, body in out:
        text = _clean(f"{term}: " + " ".join(body))
        if len(text.split()) >= MIN_ENTRY_WORDS:
            texts.append((f"entry:{_clean(term)}", text))
    return texts


def _paragraphs(lines):
    """Indented prose paragraphs; headings (column 0), tables and one-liners are skipped."""
    para = []
    for line in lines + [""]:
        if line.startswith("   ") and line.strip():
            para.append(line)
            continue
        if para:
            text = " ".join(para)
            if not _BOX.search(text) and len(text.split()) >= 8:
                yield _clean(text)
        para = []


def _narrative(lines):
    """Chapters 1-12 and Appendices A-B, in passages of >= MIN_CHUNK_WORDS words."""
    intro = lines[_index(lines, _CHAPTER_1) : _index(lines, _GLOSSARY)]
    a = _index(lines, _APPENDIX_A, _index(lines, _GLOSSARY))
    folklore = lines[a : _index(lines, _BIBLIOGRAPHY, a)]
    texts = []
    for part, block in (("intro", intro), ("appendix", folklore)):
        chunk = []
        for para in _paragraphs(block):
            chunk.append(para)
            if sum(len(p.split()) for p in chunk) >= MIN_CHUNK_WORDS:
                texts.append((f"{part}:{len(texts)}", " ".join(chunk)))
                chunk = []
        if chunk:
            texts.append((f"{part}:{len(texts)}", " ".join(chunk)))
    return texts


def load(limit=0, source=DEFAULT_SOURCE):
    """Return `[(id, text)]`, shuffled with a fixed seed; the first `limit` (0 = all)."""
    lines = _read_lines(source)
    passages = _entries(lines) + _narrative(lines)
    random.Random(SEED).shuffle(passages)
    return passages[:limit] if limit else passages


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default=str(DEFAULT_SOURCE))
    ap.add_argument("--limit", type=int, default=0, help="first N passages (0 = all)")
    args = ap.parse_args()
    for pid, text in load(args.limit, args.source):
        print(json.dumps({"id": pid, "text": text}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
