"""The ``Embedder`` protocol: anything with an id, a dimension and ``embed(texts)``.

Unusual here: nothing. It lives apart from ``index.embed`` so that the store, search and
rebuild code can name the protocol without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors for the library.

    ``id`` names the model and its weights (it is stored in the manifest, and a library
    refuses to mix ids); ``dim`` is the vector width D.
    """

    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``[len(texts), dim]``, one row per text."""
        ...


def check_embeddings(out: object, count: int, dim: int, embedder_id: str) -> np.ndarray:
    """``out`` as a float32 array, checked to be ``[count, dim]``.

    Raises:
        ValueError: another shape or a non-float result.
    """
    x = np.asarray(out)
    if x.shape != (count, dim) or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"embedder {embedder_id!r} returned {x.dtype} {list(x.shape)}, expected float32 "
            f"[{count}, {dim}]"
        )
    return x.astype(np.float32, copy=False)
