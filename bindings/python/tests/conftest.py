"""Builds and installs the ragjet wheel with maturin before the tests import it.

Set RAGJET_SKIP_BUILD=1 to test an already installed ragjet instead.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = pathlib.Path(os.environ.get("RAGJET_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def pytest_configure(config):
    if os.environ.get("RAGJET_SKIP_BUILD"):
        return
    manifest = ROOT / "bindings" / "python" / "Cargo.toml"
    with tempfile.TemporaryDirectory() as out:
        # The dev profile reuses what `cargo test` compiled (dependencies are
        # optimised in it), so the wheel builds in seconds after the Rust tests.
        subprocess.run(
            ["maturin", "build", "--profile", "dev", "--manifest-path", str(manifest), "-o", out],
            check=True,
        )
        wheels = list(pathlib.Path(out).glob("ragjet-*.whl"))
        assert len(wheels) == 1, wheels
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--force-reinstall",
                "--no-deps",
                str(wheels[0]),
            ],
            check=True,
        )


@pytest.fixture(scope="session")
def fixtures() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="session")
def embedder():
    import ragjet

    return ragjet.Embedder(num_threads=2)
