"""Export grounded captions: JSONL (QVHighlights-style), SRT, WebVTT and parquet.

Unusual here: SRT and WebVTT are per-video formats, so a whole-library export to them writes
one file per video into a folder (named after the video file, with the video id added when two
files share a stem), while JSONL and parquet write one file for everything. Every file is
written atomically. Zero-length spans are stretched to ``min_cue_seconds`` in subtitle
formats, because players (and the ``srt`` package) drop empty cues. SRT is written by the
``srt`` package when installed, else by an equivalent small writer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from .atomic import atomic_open, atomic_write_parquet, atomic_write_text

if TYPE_CHECKING:
    from .store import Library

log = logging.getLogger(__name__)

ExportFormat = Literal["jsonl", "srt", "vtt", "parquet"]
FORMATS: tuple[str, ...] = ("jsonl", "srt", "vtt", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".srt": "srt", ".vtt": "vtt", ".parquet": "parquet"}


def caption_rows(library: Library, *, video_id: str | None = None) -> pl.DataFrame:
    """Segments joined to their video (path, duration), ordered by path then time.

    Raises:
        KeyError: ``video_id`` is not in the library.
    """
    segments = library.segments
    catalog = library.catalog.select("video_id", "path", "duration_seconds")
    if video_id is not None:
        if library.entry(video_id) is None:
            raise KeyError(f"video {video_id!r} is not in library {library.path}")
        segments = segments.filter(pl.col("video_id") == video_id)
    return segments.join(catalog, on="video_id", how="left").sort(
        "path", "video_id", "start_seconds", "end_seconds", "segment_id"
    )


def export_captions(
    library: Library,
    out: str | os.PathLike[str],
    *,
    format: ExportFormat | None = None,
    video_id: str | None = None,
    min_cue_seconds: float = 0.5,
) -> list[Path]:
    """Write the grounded captions of the library (or one video) to ``out``.

    Args:
        library: an open ``index.Library``.
        out: the file to write; for srt/vtt of the whole library, a folder.
        format: "jsonl", "srt", "vtt" or "parquet"; default from ``out``'s suffix.
        video_id: export only this video.
        min_cue_seconds: shortest cue in srt/vtt.

    Returns:
        The files written.

    Raises:
        ValueError: unknown format, or none given and the suffix does not say.
        KeyError: ``video_id`` is not in the library.
    """
    target = Path(out)
    fmt = export_format(target, format)
    rows = caption_rows(library, video_id=video_id)
    if fmt == "jsonl":
        return [write_jsonl(rows, target)]
    if fmt == "parquet":
        return [atomic_write_parquet(target, rows)]
    if video_id is not None:
        return [atomic_write_text(target, subtitles_text(rows, fmt, min_cue_seconds))]
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, group in per_video_files(rows, fmt):
        text = subtitles_text(group, fmt, min_cue_seconds)
        written.append(atomic_write_text(target / name, text))
    log.info("exported %d %s files to %s", len(written), fmt, target)
    return written


def export_format(target: Path, format: str | None) -> str:
    """The format to write: ``format`` when given, else from ``target``'s suffix.

    Raises:
        ValueError: unknown format, or none given and the suffix does not say.
    """
    if format is None:
        fmt = _SUFFIXES.get(target.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"cannot tell the export format of {target} from its suffix; pass format= one "
                f"of {FORMATS}"
            )
        return fmt
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    return format


def per_video_files(rows: pl.DataFrame, fmt: str) -> list[tuple[str, pl.DataFrame]]:
    """(file name, that video's rows) for a per-video export, names unique within the folder."""
    groups = rows.partition_by("video_id", maintain_order=True)
    stems = [Path(str(g["path"][0] or g["video_id"][0])).stem for g in groups]
    out = []
    for stem, group in zip(stems, groups, strict=True):
        name = stem if stems.count(stem) == 1 else f"{stem}-{group['video_id'][0]}"
        out.append((f"{name}.{fmt}", group))
    return out


def jsonl_records(rows: pl.DataFrame) -> list[dict[str, object]]:
    """QVHighlights-style records: qid, vid, query (the caption), duration, relevant_windows."""
    return [
        {
            "qid": r["segment_id"],
            "vid": r["video_id"],
            "query": r["caption"],
            "duration": r["duration_seconds"],
            "relevant_windows": [[r["start_seconds"], r["end_seconds"]]],
            "path": r["path"],
            "source": r["source"],
        }
        for r in rows.iter_rows(named=True)
    ]


def jsonl_text(rows: pl.DataFrame) -> str:
    """The JSONL lines of ``rows`` (one record per segment, each ending in a newline)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in jsonl_records(rows))


def write_jsonl(rows: pl.DataFrame, target: Path) -> Path:
    with atomic_open(target, "w") as f:
        for record in jsonl_records(rows):
            f.write(json.dumps(record, ensure_ascii=False) + "\n")  # type: ignore[arg-type]
    return target


def _cues(rows: pl.DataFrame, min_cue_seconds: float) -> list[tuple[float, float, str]]:
    cues = []
    for r in rows.sort("start_seconds", "end_seconds").iter_rows(named=True):
        start, end = float(r["start_seconds"]), float(r["end_seconds"])
        cues.append((start, max(end, start + min_cue_seconds), str(r["caption"])))
    return cues


def subtitles_text(rows: pl.DataFrame, fmt: str, min_cue_seconds: float) -> str:
    """SRT or WebVTT text of one video's rows (cues in time order)."""
    cues = _cues(rows, min_cue_seconds)
    return to_srt(cues) if fmt == "srt" else to_webvtt(cues)


# ----- formats -------------------------------------------------------------------------------


def _clock(seconds: float, separator: str) -> str:
    total_ms = max(0, round(seconds * 1000))
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def _single_block(text: str) -> str:
    """Cue text without blank lines (a blank line ends a cue in both formats)."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\n".join(line for line in lines if line) or " "


def to_srt(cues: Sequence[tuple[float, float, str]]) -> str:
    """SRT text for (start_seconds, end_seconds, text) cues, numbered from 1."""
    try:
        import srt
    except ImportError:
        return "".join(
            f"{i}\n{_clock(s, ',')} --> {_clock(e, ',')}\n{_single_block(t)}\n\n"
            for i, (s, e, t) in enumerate(cues, start=1)
        )
    subtitles = [
        srt.Subtitle(
            index=i,
            start=timedelta(milliseconds=round(s * 1000)),
            end=timedelta(milliseconds=round(e * 1000)),
            content=_single_block(t),
        )
        for i, (s, e, t) in enumerate(cues, start=1)
    ]
    return srt.compose(subtitles, reindex=False)


def escape_webvtt(text: str) -> str:
    """Escape the characters WebVTT cue text reserves: & < > (so '-->' cannot end a cue)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_webvtt(cues: Sequence[tuple[float, float, str]]) -> str:
    """WebVTT text ("WEBVTT" header, millisecond times, escaped cue text)."""
    blocks = ["WEBVTT\n"]
    for s, e, t in cues:
        blocks.append(f"{_clock(s, '.')} --> {_clock(e, '.')}\n{escape_webvtt(_single_block(t))}\n")
    return "\n".join(blocks)
