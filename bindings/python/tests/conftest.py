"""Fixtures for the ragjet tests, which test the ragjet installed in this
interpreter: ``scripts/test.sh`` builds and installs the wheel before it runs
them (see ``bindings/python/README.md`` for doing it by hand). Nothing here
builds or installs anything.

The tests stop at once when ragjet is not installed, or when the installed
extension is older than a source file it is built from (a stale build would
test code that is no longer there). ``RAGJET_ALLOW_STALE=1`` skips that check,
for a run against sources others are editing.
"""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = pathlib.Path(os.environ.get("RAGJET_FIXTURES", ROOT / "fixtures"))
REBUILD = (
    "cd bindings/python && maturin build --profile dev -o /tmp/wheels && "
    "pip install --force-reinstall --no-deps /tmp/wheels/ragjet-*.whl"
)
# What the wheel is compiled from; the Python files travel in it too.
SOURCES = ["bindings/python/src", "bindings/python/python", "crates", "Cargo.toml", "Cargo.lock"]


def newest_source() -> tuple[float, pathlib.Path]:
    newest = (0.0, ROOT)
    for name in SOURCES:
        top = ROOT / name
        paths = [top] if top.is_file() else top.rglob("*")
        for path in paths:
            if (
                path.suffix in (".rs", ".py", ".pyi", ".toml", ".lock")
                and "target" not in path.parts
            ):
                newest = max(newest, (path.stat().st_mtime, path))
    return newest


def pytest_configure(config):
    try:
        import ragjet._ragjet as extension
    except ImportError as err:
        pytest.exit(
            f"ragjet is not installed in {sys.executable} ({err}); build and install it: {REBUILD}",
            2,
        )
    built = pathlib.Path(extension.__file__).stat().st_mtime
    when, path = newest_source()
    if when > built and not os.environ.get("RAGJET_ALLOW_STALE"):
        pytest.exit(
            f"the installed ragjet ({extension.__file__}) is older than {path.relative_to(ROOT)}; "
            f"rebuild and reinstall it: {REBUILD} (or set RAGJET_ALLOW_STALE=1)",
            2,
        )


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
    """The repository's reference data: passages, queries and their
    sentence-transformers embeddings (see fixtures/README.md)."""
    return FIXTURES


@pytest.fixture(scope="session")
def embedder():
    """The default model on two threads, shared by the tests."""
    import ragjet

    return ragjet.Embedder(num_threads=2)
