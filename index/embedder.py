"""The ``Embedder`` protocol: anything with an id, a dimension and ``embed(texts)``.

Unusual here: a ``SegmentEmbedder`` (a multimodal model) embeds a segment from what it
points at, its span of the video file with the caption, and words queries its own way;
``segment_vectors`` and ``query_vectors`` take either kind, so ingest, search and rebuild
have one path. It lives apart from ``index.embed`` so that the store, search and rebuild code
can name the protocols without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SegmentDocument:
    """What one segment's vector is made from: its caption and its span of a video file."""

    path: str
    start_seconds: float
    end_seconds: float
    caption: str


@runtime_checkable
class SegmentEmbedder(Embedder, Protocol):
    """An embedder that sees the segments themselves (e.g. a clip with its caption).

    ``embed`` embeds texts as documents; ``embed_queries`` embeds search queries (a model with
    instructions words them as queries); ``embed_segments`` embeds segments from their spans.
    """

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``[len(texts), dim]``."""
        ...

    def embed_segments(self, documents: Sequence[SegmentDocument]) -> np.ndarray:
        """float32 ``[len(documents), dim]``."""
        ...


def segment_vectors(embedder: Embedder, documents: Sequence[SegmentDocument]) -> np.ndarray:
    """float32 ``[N, dim]`` for segments: their spans for a ``SegmentEmbedder``, else captions."""
    if isinstance(embedder, SegmentEmbedder):
        out = embedder.embed_segments(documents)
    else:
        out = embedder.embed([d.caption for d in documents])
    return check_embeddings(out, len(documents), embedder.dim, embedder.id)


def query_vectors(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """float32 ``[N, dim]`` for search queries, worded as queries where the embedder says how."""
    out = embedder.embed_queries(texts) if isinstance(embedder, SegmentEmbedder) else embedder.embed(texts)
    return check_embeddings(out, len(texts), embedder.dim, embedder.id)


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
