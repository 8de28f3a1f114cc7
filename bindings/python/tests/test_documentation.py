"""The Python examples a newcomer copies first (the README's and the
getting-started guide's) run as written, against a temporary directory."""

import re

import pytest
from conftest import ROOT

PAGES = ["README.md", "docs/getting-started.md"]


def python_blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES)
def test_the_python_examples_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page)
    assert blocks, f"{page} has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        code = block.replace("/tmp/store", str(tmp_path / "store"))
        namespace: dict = {}
        exec(compile(code, page, "exec"), namespace)  # noqa: S102 - the repository's own docs
        if "engine" in namespace:
            hits = namespace["answer"]["hits"]
            assert hits and "kludge" in hits[0].text
