"""ragjet: the Rust hot path for retrieval-augmented generation.

>>> import ragjet
>>> embedder = ragjet.Embedder()          # bundled all-MiniLM-L6-v2
>>> vectors = embedder.embed(["a passage", "another one"])
>>> vectors.shape
(2, 384)
"""

from ragjet._ragjet import (
    Embedder,
    InvalidInputError,
    ModelLoadError,
    RagjetError,
    __version__,
    default_model_dir,
)

__all__ = [
    "Embedder",
    "InvalidInputError",
    "ModelLoadError",
    "RagjetError",
    "__version__",
    "default_model_dir",
]
