"""index: the library on disk (catalog, segments, faiss vectors, manifest), search returning
time spans, span parsing and grounding metrics, and grounded-caption export.

Unusual here: importing ``index`` does not import torch; ``index.MiniLMEmbedder`` (the only
torch user) is loaded on first access. Nothing here imports ``vidlm``, ``ingest`` or ``app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .atomic import atomic_open, atomic_write_bytes, atomic_write_parquet, atomic_write_text
from .changes import content_hash, file_changes, video_id_for_path
from .embedder import Embedder, SegmentDocument, SegmentEmbedder, query_vectors, segment_vectors
from .errors import (
    EmbedderError,
    LibraryCorruptError,
    LibraryError,
    LibraryMismatchError,
    LibraryNotFoundError,
)
from .export import export_captions, to_srt, to_webvtt
from .metrics import (
    EventScores,
    event_scores,
    grounding_scores,
    mean_iou,
    recall_at_1,
    temporal_iou,
)
from .rebuild import rebuild_vectors
from .schema import (
    CATALOG_SCHEMA,
    SCHEMA_VERSION,
    SEGMENTS_SCHEMA,
    Segment,
    VideoEntry,
    VideoStatus,
)
from .spans import Span, parse_dense_captions, parse_spans, parse_time
from .store import DEFAULT_APPROXIMATE_ABOVE, Library

if TYPE_CHECKING:
    from .embed import MiniLMEmbedder

__all__ = [
    "CATALOG_SCHEMA",
    "DEFAULT_APPROXIMATE_ABOVE",
    "SCHEMA_VERSION",
    "SEGMENTS_SCHEMA",
    "Embedder",
    "EmbedderError",
    "EventScores",
    "Library",
    "LibraryCorruptError",
    "LibraryError",
    "LibraryMismatchError",
    "LibraryNotFoundError",
    "MiniLMEmbedder",
    "Segment",
    "SegmentDocument",
    "SegmentEmbedder",
    "Span",
    "VideoEntry",
    "VideoStatus",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_parquet",
    "atomic_write_text",
    "content_hash",
    "event_scores",
    "export_captions",
    "file_changes",
    "grounding_scores",
    "mean_iou",
    "parse_dense_captions",
    "parse_spans",
    "parse_time",
    "query_vectors",
    "rebuild_vectors",
    "recall_at_1",
    "segment_vectors",
    "temporal_iou",
    "to_srt",
    "to_webvtt",
    "video_id_for_path",
]


def __getattr__(name: str) -> Any:
    if name == "MiniLMEmbedder":
        from .embed import MiniLMEmbedder

        return MiniLMEmbedder
    raise AttributeError(f"module 'index' has no attribute {name!r}")
