"""Ingest of files into a library: change detection, per-window captions, one commit per file.

Unusual here: the library is committed after every file, so killing the process loses at
most the file in progress, and a re-run (which skips what is unchanged) ends with the same
library as one uninterrupted run. Only ``ingest.VideoError`` (a bad file) becomes an error
row; any other exception is a bug and stops the batch with everything before it kept.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

import index
import ingest
from app.prompts import CAPTION_PROMPT, EMPTY_CAPTION, question_messages
from app.results import FileOutcome, PipelineEvent

if TYPE_CHECKING:
    from app.pipeline import Pipeline, PipelineProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Captioned:
    """The model's output for one file: segments (absolute seconds) and how decoding went."""

    info: ingest.VideoInfo
    segments: list[index.Segment]
    plan_description: str
    partial_reason: str | None


def ingest_paths(
    pipe: Pipeline,
    lib: index.Library,
    root: Path,
    paths: list[Path],
    *,
    progress: PipelineProgress | None,
    retry_failed: bool,
) -> list[FileOutcome]:
    """Bring the library up to date with ``paths`` (the files now under ``root``)."""
    changes = lib.changes(paths)
    outcomes = []
    for row in missing_under(changes, root):
        outcomes.append(remove_missing(lib, row))
        lib.commit()
    todo = changes.filter(changes["change"] != "missing").to_dicts()
    for done, row in enumerate(todo, start=1):
        outcome = _one_file(pipe, lib, row, progress=progress, retry_failed=retry_failed)
        outcomes.append(outcome)
        if progress is not None:
            progress(
                PipelineEvent("file", Path(row["path"]), done, len(todo), detail=outcome.action)
            )
    return outcomes


def missing_under(changes: pl.DataFrame, root: Path) -> list[dict]:
    """The "missing" rows of ``lib.changes(...)`` whose path lies under ``root``."""
    rows = changes.filter(changes["change"] == "missing").to_dicts()
    return [r for r in rows if Path(r["path"]).is_relative_to(root)]


def remove_missing(lib: index.Library, row: dict) -> FileOutcome:
    """Stage the removal of a file gone from disk (the caller commits)."""
    lib.remove_video(row["video_id"])
    log.info("%s: gone from disk; removed from the library", row["path"])
    return FileOutcome(row["path"], row["video_id"], "removed", None)


def needs_ingest(
    previous: dict | None, change: str, model_id: str, *, retry_failed: bool
) -> bool:
    """False when a file's catalog row can stand: same bytes, same model, no retry asked."""
    same_model = previous is not None and previous["model_id"] == model_id
    failed_before = previous is not None and previous["status"] != "ok"
    unchanged = change in ("unchanged", "touched")
    return not (unchanged and same_model and not (retry_failed and failed_before))


def _one_file(
    pipe: Pipeline,
    lib: index.Library,
    row: dict,
    *,
    progress: PipelineProgress | None,
    retry_failed: bool,
) -> FileOutcome:
    path, video_id, change = Path(row["path"]), row["video_id"], row["change"]
    previous = lib.entry(video_id)
    if not needs_ingest(previous, change, pipe.model_id, retry_failed=retry_failed):
        outcome = skip_file(lib, row, previous, touched=change == "touched")
        lib.commit()
        return outcome
    started = now()
    digest = row["content_hash"] or index.content_hash(path)
    try:
        result = caption_file(pipe, path, progress=progress)
    except ingest.VideoError as err:
        entry = error_entry(pipe.model_id, row, digest, err, started)
        lib.upsert_video(entry)
        lib.commit()
        return FileOutcome(str(path), video_id, "failed", "error", entry.error_message)
    vectors = segment_vectors(pipe, path, result.segments)
    entry = ok_entry(
        pipe.model_id,
        row,
        digest,
        result.info,
        plan_description=result.plan_description,
        partial_reason=result.partial_reason,
        started=started,
    )
    lib.upsert_video(entry, result.segments, vectors)
    lib.commit()
    action = "failed" if entry.status != "ok" else "ingested"
    return FileOutcome(
        str(path), video_id, action, entry.status, entry.error_message, len(result.segments)
    )


def segment_vectors(pipe: Pipeline, path: Path, segments: list[index.Segment]) -> np.ndarray:
    """The embedder's vectors ``[len(segments), D]`` for a file's segments."""
    docs = [index.SegmentDocument(str(path), s.start_seconds, s.end_seconds, s.caption) for s in segments]
    return index.segment_vectors(pipe.embedder, docs)


def skip_file(lib: index.Library, row: dict, previous: dict, *, touched: bool) -> FileOutcome:
    """Keep a file's catalog row; a touched file gets its new mtime staged (the caller commits)."""
    segments = lib.segments_of(row["video_id"]).height
    if touched:
        entry = index.VideoEntry(**{**entry_fields(previous), "mtime_ns": row["mtime_ns"]})
        lib.update_entry(entry)
    action = "touched" if touched else "skipped"
    return FileOutcome(
        row["path"],
        row["video_id"],
        action,
        previous["status"],
        previous["error_message"],
        segments,
    )


def entry_fields(row: dict) -> dict:
    """A catalog row (dict) as ``VideoEntry`` keyword arguments."""
    fields = {k: v for k, v in row.items() if k != "probe_json"}
    fields["probe"] = json.loads(row["probe_json"]) if row["probe_json"] else {}
    return fields


def caption_file(pipe: Pipeline, path: Path, *, progress: PipelineProgress | None) -> Captioned:
    """Probe, window, decode and caption one file.

    Raises:
        ingest.VideoError: the file cannot be probed or decoded.
    """
    info = pipe.probe(path)
    segments: list[index.Segment] = []
    plans: list[str] = []
    partial: str | None = None
    decoded = decoded_windows(
        path,
        info,
        pipe.policy(),
        window_seconds=pipe.options.window_seconds,
        progress=_inner(progress),
    )
    for item in decoded:
        plans.append(item.plan_text)
        partial = item.partial_reason or partial
        if len(item.batch):
            segments += caption_window(
                pipe, item.batch, item.window, duration_seconds=info.duration_seconds
            )
        if progress is not None:
            progress(PipelineEvent("caption", path, item.number, item.count))
    return Captioned(info, segments, "; ".join(plans), partial)


@dataclass(frozen=True)
class DecodedWindow:
    """One window of a file with its decoded frames; ``number`` counts from 1 to ``count``."""

    window: ingest.Window
    plan: ingest.SamplingPlan
    batch: ingest.FrameBatch
    number: int
    count: int

    @property
    def plan_text(self) -> str:
        """How the window was sampled, for the catalog's ``plan_description``."""
        w, p = self.window, self.plan
        return (
            f"[{w.start_seconds:.3f},{w.end_seconds:.3f}] {p.num_frames}f "
            f"{p.width}x{p.height} {p.tokens}tok"
        )

    @property
    def partial_reason(self) -> str | None:
        """Why decoding stopped early in this window, or None."""
        if not self.batch.partial:
            return None
        return f"decoding stopped at {self.batch.stopped_at_seconds:.3f} s"


def decoded_windows(
    path: Path,
    info: ingest.VideoInfo,
    policy: ingest.SamplingPolicy,
    *,
    window_seconds: float,
    progress: ingest.ProgressCallback | None = None,
) -> Iterator[DecodedWindow]:
    """Plan and decode a file window by window, stopping after a window cut short by damage.

    Raises:
        ingest.VideoError: the file cannot be windowed or decoded.
    """
    windows = file_windows(path, info, window_seconds=window_seconds)
    for number, window in enumerate(windows, start=1):
        plan = ingest.plan(
            info, policy, start_seconds=window.start_seconds, end_seconds=window.end_seconds
        )
        batch = ingest.decode(path, plan, progress=progress)
        yield DecodedWindow(window, plan, batch, number, len(windows))
        if batch.partial:
            return


def file_windows(
    path: Path, info: ingest.VideoInfo, *, window_seconds: float
) -> list[ingest.Window]:
    """One window for a short video; shot-aligned windows of at most ``window_seconds`` else."""
    if info.duration_seconds <= window_seconds:
        return [ingest.Window(0, 0.0, info.duration_seconds)]
    windows = ingest.segment(path, max_window_seconds=window_seconds)
    return [w for w in windows if w.start_seconds <= info.last_frame_seconds]


def caption_window(
    pipe: Pipeline, batch: ingest.FrameBatch, window: ingest.Window, *, duration_seconds: float
) -> list[index.Segment]:
    """Dense grounded captions of one window, in absolute seconds, clamped to the window.

    When the model's text holds no span, the window itself becomes one segment carrying that
    text, so every decoded window stays searchable.
    """
    text = str(
        pipe.lm.generate(
            question_messages([batch], CAPTION_PROMPT),
            max_new_tokens=pipe.options.caption_max_new_tokens,
            do_sample=False,
        )
    )
    spans = index.parse_dense_captions(text, duration_seconds=duration_seconds)
    segments = [s for s in (clamp_to_window(span, window) for span in spans) if s is not None]
    if segments:
        return segments
    caption = text.strip() or EMPTY_CAPTION
    return [index.Segment(window.start_seconds, window.end_seconds, caption, source="window_text")]


def clamp_to_window(span: index.Span, window: ingest.Window) -> index.Segment | None:
    """The span cut to the window; None when it lies outside."""
    start = max(span.start_seconds, window.start_seconds)
    end = min(span.end_seconds, window.end_seconds)
    if start > end or not span.caption:
        return None
    return index.Segment(float(start), float(end), span.caption, source="dense_caption")


def _inner(progress: PipelineProgress | None):  # noqa: ANN202 - an ingest.ProgressCallback
    if progress is None:
        return None
    return lambda event: progress(
        PipelineEvent("ingest", event.path, event.done, event.total, inner=event)
    )


def _base_fields(model_id: str, row: dict, digest: str | None, started: datetime) -> dict:
    return {
        "video_id": row["video_id"],
        "path": str(row["path"]),
        "size_bytes": int(row["size_bytes"]),
        "mtime_ns": row["mtime_ns"],
        "content_hash": digest,
        "model_id": model_id,
        "ingest_started_at": started,
        "ingest_finished_at": now(),
    }


def error_entry(
    model_id: str, row: dict, digest: str | None, err: ingest.VideoError, started: datetime
) -> index.VideoEntry:
    """The catalog row of a file that could not be read: status "error", kind and reason."""
    return index.VideoEntry(
        **_base_fields(model_id, row, digest, started),
        status="error",
        error_message=f"{err.kind}: {err.reason}",
    )


def ok_entry(
    model_id: str,
    row: dict,
    digest: str | None,
    info: ingest.VideoInfo,
    *,
    plan_description: str,
    partial_reason: str | None,
    started: datetime,
) -> index.VideoEntry:
    """The catalog row of a decoded file: probe facts, sampling plans, "ok" or "partial"."""
    probe = {
        "container": info.container,
        "start_seconds": info.start_seconds,
        "last_frame_seconds": info.last_frame_seconds,
        "frame_count": info.frame_count,
        "has_audio": info.has_audio,
        "truncated": info.truncated,
        "mirrored": info.mirrored,
    }
    return index.VideoEntry(
        **_base_fields(model_id, row, digest, started),
        status="partial" if partial_reason else "ok",
        error_message=partial_reason,
        duration_seconds=float(info.duration_seconds),
        fps=float(info.fps),
        width=int(info.width),
        height=int(info.height),
        rotation_degrees=int(info.rotation),
        codec=info.codec,
        probe=probe,
        plan_description=plan_description,
    )


def now() -> datetime:
    """The current UTC time (catalog timestamps)."""
    return datetime.now(timezone.utc)
