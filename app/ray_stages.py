"""The stages of the Ray ingest and export pipelines, and the rows that flow between them.

Unusual here: nothing in this module imports Ray. The stages are plain functions and a plain
class over pyarrow tables (Ray Data runs them as tasks and actors), so their logic is the
local engine's (``app.ingesting``) and can be tested without a cluster. Rows carry pixels as
raw bytes plus a shape (``large_binary``: one window's frames may exceed 2 GiB) and catalog
rows as JSON, so every block has one fixed Arrow schema whatever the file turned out to be.

Ingest rows: ``decode_files`` sends one row per decoded window (kind "window") and then one
closing row per file (kind "file": its catalog row and how many windows it sent);
``CaptionWorker`` turns windows into captions + vectors and passes closing rows through;
``Assembler`` (on the driver) puts each file back together, in whatever order rows arrive.
"""

from __future__ import annotations

import io
import logging
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

import index
import ingest
from app.ingesting import (
    DecodedWindow,
    caption_window,
    decoded_windows,
    error_entry,
    now,
    ok_entry,
    segment_vectors,
)
from app.pipeline import Pipeline, PipelineOptions
from app.ray_shards import FileResult, entry_from_json, entry_to_json

log = logging.getLogger(__name__)

# Decoded windows (kind "window") and one closing row per file (kind "file", with its catalog
# row and how many windows it sent), then the same rows captioned; both start with these fields.
# large_binary: one window's pixels may exceed 2 GiB.
_ROW_HEAD = [
    ("kind", pa.string()),
    ("video_id", pa.string()),
    ("path", pa.string()),
    ("number", pa.int64()),
    ("count", pa.int64()),
    ("entry_json", pa.string()),
]
DECODED_SCHEMA = pa.schema(
    [
        *_ROW_HEAD,
        ("start_seconds", pa.float64()),
        ("end_seconds", pa.float64()),
        ("duration_seconds", pa.float64()),
        ("content_id", pa.string()),
        ("frames", pa.large_binary()),
        ("frame_shape", pa.list_(pa.int64())),
        ("seconds", pa.list_(pa.float64())),
    ]
)

CAPTIONED_SCHEMA = pa.schema(
    [
        *_ROW_HEAD,
        ("start_seconds", pa.list_(pa.float64())),
        ("end_seconds", pa.list_(pa.float64())),
        ("caption", pa.list_(pa.string())),
        ("source", pa.list_(pa.string())),
        ("vectors", pa.large_binary()),  # float32 [segments, D]
    ]
)

RENDERED_SCHEMA = pa.schema([("order", pa.int64()), ("payload", pa.large_binary())])


def decode_files(
    batch: pa.Table, *, policy: ingest.SamplingPolicy, window_seconds: float, model_id: str
) -> Iterator[pa.Table]:
    """Ray task: probe, window, plan and decode files; a window per table, then the file's row."""
    for row in batch.to_pylist():
        yield from _decode_file(row, policy, window_seconds, model_id)


def _decode_file(
    row: dict, policy: ingest.SamplingPolicy, window_seconds: float, model_id: str
) -> Iterator[pa.Table]:
    path = Path(row["path"])
    started = now()
    digest = row["content_hash"] or index.content_hash(path)
    sent = 0
    try:
        info = ingest.probe(path)
        plans: list[str] = []
        partial: str | None = None
        for item in decoded_windows(path, info, policy, window_seconds=window_seconds):
            plans.append(item.plan_text)
            partial = item.partial_reason or partial
            if len(item.batch):
                yield _window_table(row, item, sent, info.duration_seconds)
                sent += 1
        entry = ok_entry(
            model_id,
            row,
            digest,
            info,
            plan_description="; ".join(plans),
            partial_reason=partial,
            started=started,
        )
    except ingest.VideoError as err:
        log.info("%s: %s", path, err)
        entry = error_entry(model_id, row, digest, err, started)
    closing = {"kind": "file", "video_id": row["video_id"], "path": row["path"], "number": -1}
    yield pa.Table.from_pylist(
        [{**closing, "count": sent, "entry_json": entry_to_json(entry)}], schema=DECODED_SCHEMA
    )


def _window_table(row: dict, item: DecodedWindow, number: int, duration_seconds: float) -> pa.Table:
    frames = np.ascontiguousarray(item.batch.frames)
    record = {
        "kind": "window",
        "video_id": row["video_id"],
        "path": row["path"],
        "number": number,
        "start_seconds": item.window.start_seconds,
        "end_seconds": item.window.end_seconds,
        "duration_seconds": duration_seconds,
        "content_id": item.batch.video_id,
        "frames": frames.tobytes(),
        "frame_shape": list(frames.shape),
        "seconds": item.batch.seconds.tolist(),
    }
    return pa.Table.from_pylist([record], schema=DECODED_SCHEMA)


class CaptionWorker:
    """Ray actor: one model replica and one embedder, each loaded once.

    Args:
        model: checkpoint folder or hub id as the workers see it; None for the built-in model.
        model_id: the id the driver expects (the model must be the same everywhere).
        device, dtype: passed to ``vidlm.load``.
        options: the pipeline's knobs (caption length, ...).
        embedder_id: the library's embedder id.
        embedder_model: the Qwen3-VL-Embedding checkpoint as the workers see it; None: MiniLM.

    Raises:
        RuntimeError: this worker has another model or embedder than the driver expects.
    """

    def __init__(
        self,
        *,
        model: str | None,
        model_id: str,
        device: str,
        dtype: str,
        options: PipelineOptions,
        embedder_id: str,
        embedder_model: str | None = None,
    ) -> None:
        import vidlm

        lm = vidlm.load(model, device=device, dtype=dtype, compile_decoding=options.compile_decoding)
        self.pipe = Pipeline(
            model=model, device=device, dtype=dtype, options=options, lm=lm, embedder_model=embedder_model
        )
        embedder = self.pipe.embedder
        if lm.model_id != model_id or embedder.id != embedder_id:
            raise RuntimeError(
                f"worker on {platform.node()} loaded model {lm.model_id!r} and embedder "
                f"{embedder.id!r}; the driver expects {model_id!r} and {embedder_id!r}"
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(
            [self._caption(r) for r in batch.to_pylist()], schema=CAPTIONED_SCHEMA
        )

    def _caption(self, row: dict) -> dict:
        out = {k: row[k] for k in ("kind", "video_id", "path", "number", "count", "entry_json")}
        if row["kind"] != "window":
            return {
                **out,
                "start_seconds": [],
                "end_seconds": [],
                "caption": [],
                "source": [],
                "vectors": b"",
            }
        frames = np.frombuffer(row["frames"], dtype=np.uint8).reshape(row["frame_shape"]).copy()
        batch = ingest.FrameBatch(frames, np.asarray(row["seconds"], np.float64), row["content_id"])
        window = ingest.Window(int(row["number"]), row["start_seconds"], row["end_seconds"])
        segments = caption_window(
            self.pipe, batch, window, duration_seconds=row["duration_seconds"]
        )
        vectors = segment_vectors(self.pipe, Path(row["path"]), segments)
        return {
            **out,
            "start_seconds": [s.start_seconds for s in segments],
            "end_seconds": [s.end_seconds for s in segments],
            "caption": [s.caption for s in segments],
            "source": [s.source for s in segments],
            "vectors": vectors.tobytes(),
        }


class DatasetStream:
    """Ray actor: executes a Ray Data pipeline on the cluster and hands its rows out in batches.

    Ray Data's executor needs a process with a full Ray core worker, which a Ray Client driver
    (``--address ray://...``) does not have, so the pipeline always runs in this actor and the
    driver only pulls the (small) result rows; frames never travel to the driver.

    Args:
        build: makes the dataset (called here, on the cluster).
        verbose: keep Ray Data's INFO lines (its own progress bars stay off: the driver has one).
    """

    def __init__(self, build: Callable[[], Any], *, verbose: bool) -> None:
        dataset = build()
        dataset.context.enable_progress_bars = False
        if not verbose:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            # It warns that its bars are off, which is the point.
            logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        self._batches = iter(dataset.iter_batches(batch_format="pyarrow", batch_size=None))

    def next_rows(self) -> list[dict] | None:
        """The next batch of result rows; None once the pipeline is done."""
        batch = next(self._batches, None)
        return None if batch is None else batch.to_pylist()


def render_captions(batch: pa.Table, *, fmt: str, min_cue_seconds: float) -> pa.Table:
    """Ray task: one video's caption rows (parquet bytes) -> its bytes in ``fmt``."""
    out = []
    for row in batch.to_pylist():
        rows = pl.read_parquet(io.BytesIO(row["rows"]))
        if fmt == "jsonl":
            payload = index.export.jsonl_text(rows).encode("utf-8")
        elif fmt == "parquet":
            payload = row["rows"]
        else:
            payload = index.export.subtitles_text(rows, fmt, min_cue_seconds).encode("utf-8")
        out.append({"order": row["order"], "payload": payload})
    return pa.Table.from_pylist(out, schema=RENDERED_SCHEMA)


@dataclass
class _PartialFile:
    entry: index.VideoEntry | None = None
    count: int = -1
    windows: dict[int, tuple[list[index.Segment], np.ndarray]] = field(default_factory=dict)

    def done(self) -> bool:
        return self.entry is not None and len(self.windows) >= self.count


class Assembler:
    """Collects the captioned windows and the closing row of each file, in any order."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._files: dict[str, _PartialFile] = {}

    def add(self, row: dict) -> FileResult | None:
        """Take one row; the file's result once its closing row and every window are in."""
        part = self._files.setdefault(row["video_id"], _PartialFile())
        if row["kind"] == "file":
            part.entry, part.count = entry_from_json(row["entry_json"]), int(row["count"])
        else:
            segments = [
                index.Segment(s, e, c, source)
                for s, e, c, source in zip(
                    row["start_seconds"],
                    row["end_seconds"],
                    row["caption"],
                    row["source"],
                    strict=True,
                )
            ]
            vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(-1, self.dimension)
            part.windows[int(row["number"])] = (segments, vectors)
        if not part.done():
            return None
        del self._files[row["video_id"]]
        return self._result(part)

    def _result(self, part: _PartialFile) -> FileResult:
        assert part.entry is not None
        if part.entry.status == "error" or not part.windows:
            return FileResult(part.entry, (), None)
        ordered = [part.windows[n] for n in sorted(part.windows)]
        segments = tuple(s for segs, _ in ordered for s in segs)
        vectors = np.concatenate([v for _, v in ordered]) if segments else None
        return FileResult(part.entry, segments, vectors)

    def check_done(self) -> None:
        """Raises RuntimeError when the pipeline ended with a file still incomplete (a bug)."""
        if self._files:
            raise RuntimeError(f"Ray ingest ended with incomplete files: {sorted(self._files)[:5]}")
