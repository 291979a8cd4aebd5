"""Table schemas of the library: the catalog (one row per video file found) and the segments
(time spans with grounded captions; a segment's ``segment_id`` is its faiss id).

Unusual here: probe facts that the fixed columns do not cover travel as one JSON string
(``probe_json``), so a new probe field never needs a schema migration; and ``status`` is a
plain string checked against ``VideoStatus`` rather than a polars Enum, so the parquet files
stay readable by any parquet tool.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, get_args

import polars as pl

SCHEMA_VERSION = 1

VideoStatus = Literal["ok", "partial", "error"]
VIDEO_STATUSES: tuple[str, ...] = get_args(VideoStatus)

TIME = pl.Datetime("us", "UTC")

CATALOG_SCHEMA = pl.Schema(
    {
        "video_id": pl.String,
        "path": pl.String,
        "size_bytes": pl.Int64,
        "mtime_ns": pl.Int64,
        "content_hash": pl.String,
        "status": pl.String,
        "error_message": pl.String,
        "duration_seconds": pl.Float64,
        "fps": pl.Float64,
        "width": pl.Int32,
        "height": pl.Int32,
        "rotation_degrees": pl.Int32,
        "codec": pl.String,
        "probe_json": pl.String,
        "plan_description": pl.String,
        "model_id": pl.String,
        "ingest_started_at": TIME,
        "ingest_finished_at": TIME,
    }
)

SEGMENTS_SCHEMA = pl.Schema(
    {
        "segment_id": pl.Int64,
        "video_id": pl.String,
        "start_seconds": pl.Float64,
        "end_seconds": pl.Float64,
        "caption": pl.String,
        "source": pl.String,
    }
)


@dataclass(frozen=True)
class VideoEntry:
    """One catalog row: a video file, its probe facts and how its ingest went.

    Args:
        video_id: stable id chosen by the caller (see ``index.video_id_for_path``).
        path: the file's path as found (absolute recommended).
        size_bytes, mtime_ns: file facts used to notice changes cheaply.
        content_hash: hex digest of the bytes (``index.content_hash``); None if unreadable.
        status: "ok", "partial" (some windows failed) or "error" (nothing usable).
        error_message: the specific reason for "partial"/"error".
        probe: extra probe facts, stored as JSON in ``probe_json``.
    """

    video_id: str
    path: str
    size_bytes: int
    status: VideoStatus
    mtime_ns: int | None = None
    content_hash: str | None = None
    error_message: str | None = None
    duration_seconds: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    rotation_degrees: int | None = None
    codec: str | None = None
    probe: Mapping[str, Any] = field(default_factory=dict)
    plan_description: str | None = None
    model_id: str | None = None
    ingest_started_at: datetime | None = None
    ingest_finished_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.video_id:
            raise ValueError("video_id must be a non-empty string")
        if self.status not in VIDEO_STATUSES:
            raise ValueError(f"status must be one of {VIDEO_STATUSES}, got {self.status!r}")
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {self.size_bytes}")
        if self.duration_seconds is not None and not (
            math.isfinite(self.duration_seconds) and self.duration_seconds >= 0
        ):
            raise ValueError(
                f"duration_seconds must be finite and >= 0, got {self.duration_seconds}"
            )

    def to_row(self) -> dict[str, Any]:
        """The catalog row as a dict matching ``CATALOG_SCHEMA``."""
        row = asdict(self)
        probe = row.pop("probe")
        row["probe_json"] = json.dumps(dict(probe), sort_keys=True, default=str) if probe else None
        for key in ("ingest_started_at", "ingest_finished_at"):
            if row[key] is not None and row[key].tzinfo is None:
                row[key] = row[key].replace(tzinfo=timezone.utc)
        return row


@dataclass(frozen=True)
class Segment:
    """A time span of one video with its grounded caption.

    Args:
        start_seconds, end_seconds: from the stream start, ``0 <= start <= end``.
        caption: the grounded caption text.
        source: what produced it, e.g. "dense_caption", "ocr", "speech".
    """

    start_seconds: float
    end_seconds: float
    caption: str
    source: str = "dense_caption"

    def __post_init__(self) -> None:
        s, e = self.start_seconds, self.end_seconds
        if not (math.isfinite(s) and math.isfinite(e) and 0 <= s <= e):
            raise ValueError(
                f"segment span must be finite with 0 <= start <= end, got [{s}, {e}] "
                f"for caption {self.caption[:40]!r}"
            )


def empty_catalog() -> pl.DataFrame:
    return CATALOG_SCHEMA.to_frame()


def empty_segments() -> pl.DataFrame:
    return SEGMENTS_SCHEMA.to_frame()


def catalog_frame(entries: Sequence[VideoEntry]) -> pl.DataFrame:
    """Catalog rows for ``entries``, typed by ``CATALOG_SCHEMA``."""
    return pl.DataFrame([e.to_row() for e in entries], schema=CATALOG_SCHEMA)


def segments_frame(
    video_id: str, segments: Sequence[Segment] | pl.DataFrame, segment_ids: Sequence[int]
) -> pl.DataFrame:
    """Segments rows for one video with the given ids, typed by ``SEGMENTS_SCHEMA``.

    A DataFrame input needs ``start_seconds``, ``end_seconds``, ``caption`` and may have
    ``source``; every row is validated like a ``Segment``.
    """
    items = as_segments(segments)
    if len(items) != len(segment_ids):
        raise ValueError(f"{len(items)} segments but {len(segment_ids)} ids")
    rows = {
        "segment_id": list(segment_ids),
        "video_id": [video_id] * len(items),
        "start_seconds": [s.start_seconds for s in items],
        "end_seconds": [s.end_seconds for s in items],
        "caption": [s.caption for s in items],
        "source": [s.source for s in items],
    }
    return pl.DataFrame(rows, schema=SEGMENTS_SCHEMA)


def as_segments(segments: Sequence[Segment] | pl.DataFrame) -> list[Segment]:
    """Normalise a list of ``Segment`` or a DataFrame of segment columns to ``Segment``s."""
    if isinstance(segments, pl.DataFrame):
        missing = {"start_seconds", "end_seconds", "caption"} - set(segments.columns)
        if missing:
            raise ValueError(f"segments frame lacks columns {sorted(missing)}")
        has_source = "source" in segments.columns
        return [
            Segment(
                float(r["start_seconds"]),
                float(r["end_seconds"]),
                str(r["caption"]),
                str(r["source"]) if has_source and r["source"] is not None else "dense_caption",
            )
            for r in segments.iter_rows(named=True)
        ]
    out = list(segments)
    bad = [type(s).__name__ for s in out if not isinstance(s, Segment)]
    if bad:
        raise TypeError(f"segments must be index.Segment or a DataFrame, got {bad[0]}")
    return out


def check_schema(frame: pl.DataFrame, expected: pl.Schema, what: str) -> str | None:
    """None when ``frame`` has exactly ``expected``'s columns and types, else the difference."""
    got = frame.schema
    if list(got.keys()) != list(expected.keys()):
        return f"{what} columns {list(got.keys())} differ from {list(expected.keys())}"
    for name, dtype in expected.items():
        if got[name] != dtype:
            return f"{what} column {name!r} has type {got[name]}, expected {dtype}"
    return None
