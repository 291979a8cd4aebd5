"""Ingest of files into a library: change detection, per-window captions, one commit per file.

Unusual here: the library is committed after every file, so killing the process loses at
most the file in progress, and a re-run (which skips what is unchanged) ends with the same
library as one uninterrupted run. Only ``ingest.VideoError`` (a bad file) becomes an error
row; any other exception is a bug and stops the batch with everything before it kept.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

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
    outcomes = [_remove_missing(lib, row) for row in _missing_under(changes, root)]
    todo = changes.filter(changes["change"] != "missing").to_dicts()
    for done, row in enumerate(todo, start=1):
        outcome = _one_file(pipe, lib, row, progress=progress, retry_failed=retry_failed)
        outcomes.append(outcome)
        if progress is not None:
            progress(
                PipelineEvent("file", Path(row["path"]), done, len(todo), detail=outcome.action)
            )
    return outcomes


def _missing_under(changes, root: Path) -> list[dict]:
    rows = changes.filter(changes["change"] == "missing").to_dicts()
    return [r for r in rows if Path(r["path"]).is_relative_to(root)]


def _remove_missing(lib: index.Library, row: dict) -> FileOutcome:
    lib.remove_video(row["video_id"])
    lib.commit()
    log.info("%s: gone from disk; removed from the library", row["path"])
    return FileOutcome(row["path"], row["video_id"], "removed", None)


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
    same_model = previous is not None and previous["model_id"] == pipe.model_id
    failed_before = previous is not None and previous["status"] != "ok"
    if change in ("unchanged", "touched") and same_model and not (retry_failed and failed_before):
        return _skip(lib, row, previous, touched=change == "touched")
    started = _now()
    digest = row["content_hash"] or index.content_hash(path)
    try:
        result = caption_file(pipe, path, progress=progress)
    except ingest.VideoError as err:
        entry = _error_entry(pipe, row, digest, err, started)
        lib.upsert_video(entry)
        lib.commit()
        return FileOutcome(str(path), video_id, "failed", "error", entry.error_message)
    vectors = pipe.embedder.embed([s.caption for s in result.segments]) if result.segments else None
    entry = _ok_entry(pipe, row, digest, result, started)
    lib.upsert_video(entry, result.segments, vectors)
    lib.commit()
    action = "failed" if entry.status != "ok" else "ingested"
    return FileOutcome(
        str(path), video_id, action, entry.status, entry.error_message, len(result.segments)
    )


def _skip(lib: index.Library, row: dict, previous: dict, *, touched: bool) -> FileOutcome:
    segments = lib.segments_of(row["video_id"]).height
    if touched:
        entry = index.VideoEntry(**{**_entry_fields(previous), "mtime_ns": row["mtime_ns"]})
        lib.update_entry(entry)
        lib.commit()
    action = "touched" if touched else "skipped"
    return FileOutcome(
        row["path"],
        row["video_id"],
        action,
        previous["status"],
        previous["error_message"],
        segments,
    )


def _entry_fields(row: dict) -> dict:
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
    windows = file_windows(path, info, window_seconds=pipe.options.window_seconds)
    policy = pipe.policy()
    segments: list[index.Segment] = []
    plans: list[str] = []
    partial: str | None = None
    for done, window in enumerate(windows, start=1):
        plan = ingest.plan(
            info, policy, start_seconds=window.start_seconds, end_seconds=window.end_seconds
        )
        batch = ingest.decode(path, plan, progress=_inner(progress))
        plans.append(
            f"[{window.start_seconds:.3f},{window.end_seconds:.3f}] {plan.num_frames}f {plan.width}x{plan.height} {plan.tokens}tok"
        )
        if batch.partial:
            partial = f"decoding stopped at {batch.stopped_at_seconds:.3f} s"
        if len(batch):
            segments += caption_window(pipe, batch, window, duration_seconds=info.duration_seconds)
        if progress is not None:
            progress(PipelineEvent("caption", path, done, len(windows)))
        if batch.partial:
            break
    return Captioned(info, segments, "; ".join(plans), partial)


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


def _base_fields(pipe: Pipeline, row: dict, digest: str | None, started) -> dict:
    return {
        "video_id": row["video_id"],
        "path": str(row["path"]),
        "size_bytes": int(row["size_bytes"]),
        "mtime_ns": row["mtime_ns"],
        "content_hash": digest,
        "model_id": pipe.model_id,
        "ingest_started_at": started,
        "ingest_finished_at": _now(),
    }


def _error_entry(
    pipe: Pipeline, row: dict, digest: str | None, err: ingest.VideoError, started
) -> index.VideoEntry:
    return index.VideoEntry(
        **_base_fields(pipe, row, digest, started),
        status="error",
        error_message=f"{err.kind}: {err.reason}",
    )


def _ok_entry(
    pipe: Pipeline, row: dict, digest: str | None, result: Captioned, started
) -> index.VideoEntry:
    info = result.info
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
        **_base_fields(pipe, row, digest, started),
        status="partial" if result.partial_reason else "ok",
        error_message=result.partial_reason,
        duration_seconds=float(info.duration_seconds),
        fps=float(info.fps),
        width=int(info.width),
        height=int(info.height),
        rotation_degrees=int(info.rotation),
        codec=info.codec,
        probe=probe,
        plan_description=result.plan_description,
    )


def _now() -> datetime:
    return datetime.now(timezone.utc)
