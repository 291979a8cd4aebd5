"""Finished files of a Ray ingest: parquet shards beside the library, merged in batches.

Unusual here: the Ray engine writes each finished file (its catalog row, segments and
vectors) at once as one small parquet shard under ``<library>/ray-shards/``, and merges the
shards into the library with the ordinary ``index.Library`` upsert + journaled commit only
every ``commit_every_seconds`` and at the end. A library commit rewrites the tables and the
vectors file, so committing per file, as the local engine does, would cost O(library) per
file at cluster scale; the shards keep the local engine's guarantee anyway: a kill loses at
most the files in flight, because the next run merges the shards left behind before it looks
for work. A shard is dropped instead of merged when its file changed on disk since, or when
the library already holds a row for that video written at or after it (merged already, or
superseded by a later run). Only the driver touches the shards and the library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

import index
from app.ingesting import now
from app.results import FileOutcome

log = logging.getLogger(__name__)

SHARDS_DIR = "ray-shards"
_TIME_FIELDS = ("ingest_started_at", "ingest_finished_at")

SHARD_SCHEMA = pl.Schema(
    {
        "entry_json": pl.String,
        "start_seconds": pl.List(pl.Float64),
        "end_seconds": pl.List(pl.Float64),
        "caption": pl.List(pl.String),
        "source": pl.List(pl.String),
        "vectors": pl.List(pl.List(pl.Float32)),
    }
)


@dataclass(frozen=True)
class FileResult:
    """One ingested file: its catalog row, segments (absolute seconds) and their vectors.

    Attributes:
        entry: the catalog row ("error" rows carry no segments).
        segments: in window order, then in the model's order within a window.
        vectors: float32 ``[len(segments), D]``, or None when there are no segments.
    """

    entry: index.VideoEntry
    segments: tuple[index.Segment, ...]
    vectors: np.ndarray | None

    def outcome(self) -> FileOutcome:
        """What the ingest report says about this file (as the local engine reports it)."""
        e = self.entry
        action = "ingested" if e.status == "ok" else "failed"
        return FileOutcome(
            e.path, e.video_id, action, e.status, e.error_message, len(self.segments)
        )


def entry_to_json(entry: index.VideoEntry) -> str:
    """A catalog row as JSON (times as ISO 8601), for shipping between processes."""
    fields = asdict(entry)
    for key in _TIME_FIELDS:
        if fields[key] is not None:
            fields[key] = fields[key].isoformat()
    return json.dumps(fields, sort_keys=True)


def entry_from_json(text: str) -> index.VideoEntry:
    """The inverse of ``entry_to_json``."""
    fields = json.loads(text)
    for key in _TIME_FIELDS:
        if fields[key] is not None:
            fields[key] = datetime.fromisoformat(fields[key])
    return index.VideoEntry(**fields)


def shard_frame(result: FileResult) -> pl.DataFrame:
    """One file's result as a one-row ``SHARD_SCHEMA`` frame."""
    vectors = result.vectors.tolist() if result.vectors is not None else []
    return pl.DataFrame(
        {
            "entry_json": [entry_to_json(result.entry)],
            "start_seconds": [[s.start_seconds for s in result.segments]],
            "end_seconds": [[s.end_seconds for s in result.segments]],
            "caption": [[s.caption for s in result.segments]],
            "source": [[s.source for s in result.segments]],
            "vectors": [vectors],
        },
        schema=SHARD_SCHEMA,
    )


def read_shard(path: Path) -> FileResult:
    """A shard written by ``ShardStore.add``.

    Raises:
        ValueError: the file is not a shard of this schema.
    """
    frame = pl.read_parquet(path)
    problem = index.schema.check_schema(frame, SHARD_SCHEMA, path.name)
    if problem or frame.height != 1:
        raise ValueError(f"{path}: not a Ray ingest shard ({problem or f'{frame.height} rows'})")
    row = frame.row(0, named=True)
    segments = tuple(
        index.Segment(s, e, c, source)
        for s, e, c, source in zip(
            row["start_seconds"], row["end_seconds"], row["caption"], row["source"], strict=True
        )
    )
    vectors = np.asarray(row["vectors"], dtype=np.float32) if segments else None
    return FileResult(entry_from_json(row["entry_json"]), segments, vectors)


class ShardStore:
    """Shards of finished files under ``<library>/ray-shards/``, merged into ``lib`` in batches.

    Args:
        lib: the open library (only this object writes to it while the store is in use).
        commit_every_seconds: merge and commit when the oldest unmerged shard is this old.
    """

    def __init__(self, lib: index.Library, *, commit_every_seconds: float) -> None:
        self.lib = lib
        self.folder = Path(lib.path) / SHARDS_DIR
        self.commit_every_seconds = commit_every_seconds
        self._pending: list[tuple[Path, FileResult]] = []
        self._oldest: float | None = None

    def recover(self) -> int:
        """Merge the shards a killed run left behind (see the module docstring); returns how many."""
        if not self.folder.is_dir():
            return 0
        merged = 0
        for path in sorted(self.folder.glob("*.parquet")):
            try:
                result = read_shard(path)
            except (ValueError, OSError, pl.exceptions.PolarsError) as err:
                log.warning("%s: unreadable shard dropped (%s)", path, err)
                path.unlink()
                continue
            if self._still_current(result.entry):
                _upsert(self.lib, result)
                merged += 1
            self._pending.append((path, result))
        self._merge_pending()
        if merged:
            log.warning(
                "library %s: merged %d files finished by an interrupted run", self.lib.path, merged
            )
        return merged

    def add(self, result: FileResult) -> None:
        """Write ``result`` as a shard now; merge every pending shard when the batch is due."""
        entry = replace(result.entry, ingest_finished_at=now())
        result = replace(result, entry=entry)
        path = self.folder / f"{entry.video_id}.parquet"
        index.atomic_write_parquet(path, shard_frame(result))
        self._pending.append((path, result))
        if self._oldest is None:
            self._oldest = time.monotonic()
        if time.monotonic() - self._oldest >= self.commit_every_seconds:
            self.flush()

    def flush(self) -> None:
        """Merge every pending shard into the library in one commit, then delete them."""
        for _, result in self._pending:
            _upsert(self.lib, result)
        self._merge_pending()

    def _merge_pending(self) -> None:
        self.lib.commit()
        for path, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._pending:
            log.info("library %s: merged %d shards", self.lib.path, len(self._pending))
        self._pending.clear()
        self._oldest = None

    def _still_current(self, entry: index.VideoEntry) -> bool:
        try:
            stat = os.stat(entry.path)
        except OSError:
            return False
        if stat.st_size != entry.size_bytes or stat.st_mtime_ns != entry.mtime_ns:
            return False
        previous = self.lib.entry(entry.video_id)
        if previous is None or previous["ingest_finished_at"] is None:
            return True
        return previous["ingest_finished_at"] < entry.ingest_finished_at


def _upsert(lib: index.Library, result: FileResult) -> None:
    lib.upsert_video(result.entry, list(result.segments), result.vectors)
