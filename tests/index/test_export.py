"""Caption export: JSONL fields, SRT parsed back by the srt package, WebVTT escaping and
times, parquet round trip, one file per video for subtitle formats, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import index.atomic as atomic
from index import (
    Library,
    Segment,
    VideoEntry,
    atomic_write_text,
    export_captions,
    to_srt,
    to_webvtt,
)


@pytest.fixture
def captioned(lib_path: Path) -> Library:
    lib = Library.open(lib_path, create=True, embedder_id="e", dimension=4)
    rng = np.random.default_rng(0)
    a = [
        Segment(12.5, 18.0, "a red circle enters"),
        Segment(0.0, 2.25, "title <b> & intro"),
        Segment(3723.5, 3725.0, "late --> event"),
        Segment(30.0, 30.0, "a flash"),
    ]
    lib.upsert_video(
        VideoEntry(
            video_id="va", path="/v/clip.mp4", size_bytes=1, status="ok", duration_seconds=4000.0
        ),
        a,
        rng.normal(size=(4, 4)),
    )
    lib.upsert_video(
        VideoEntry(
            video_id="vb", path="/w/clip.mp4", size_bytes=1, status="ok", duration_seconds=9.0
        ),
        [Segment(1, 2, "second video")],
        rng.normal(size=(1, 4)),
    )
    lib.commit()
    return lib


def test_jsonl_qvhighlights_fields(captioned: Library, tmp_path: Path) -> None:
    [out] = export_captions(captioned, tmp_path / "caps.jsonl")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5
    first = records[0]
    assert set(first) >= {"qid", "vid", "query", "duration", "relevant_windows"}
    assert (first["vid"], first["query"], first["relevant_windows"], first["duration"]) == (
        "va",
        "title <b> & intro",
        [[0.0, 2.25]],
        4000.0,
    )
    only_b = export_captions(captioned, tmp_path / "b.jsonl", video_id="vb")[0]
    assert [json.loads(x)["vid"] for x in only_b.read_text().splitlines()] == ["vb"]


def test_srt_parses_back_in_order(captioned: Library, tmp_path: Path) -> None:
    srt = pytest.importorskip("srt")
    [out] = export_captions(captioned, tmp_path / "a.srt", video_id="va")
    subs = list(srt.parse(out.read_text()))
    assert [s.content for s in subs] == [
        "title <b> & intro",
        "a red circle enters",
        "a flash",
        "late --> event",
    ]
    assert [s.start.total_seconds() for s in subs] == [0.0, 12.5, 30.0, 3723.5]
    assert subs[2].end.total_seconds() == 30.5, "zero-length cue stretched to min_cue_seconds"
    assert "01:02:03,500 --> 01:02:05,000" in out.read_text()


def test_own_srt_writer_equals_srt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("srt")
    cues = [(0.0, 1.5, "one"), (61.0, 62.001, "two\n\nlines")]
    with_package = to_srt(cues)
    monkeypatch.setitem(__import__("sys").modules, "srt", None)  # import srt -> ImportError
    assert to_srt(cues) == with_package


def test_webvtt_header_escaping_and_milliseconds(captioned: Library, tmp_path: Path) -> None:
    [out] = export_captions(captioned, tmp_path / "a.vtt", video_id="va")
    text = out.read_text()
    assert text.startswith("WEBVTT\n\n")
    assert "00:00:00.000 --> 00:00:02.250\ntitle &lt;b&gt; &amp; intro\n" in text
    assert "late --&gt; event" in text and "late -->" not in text
    assert "01:02:03.500 --> 01:02:05.000" in text
    assert to_webvtt([]) == "WEBVTT\n"


def test_parquet_round_trip(captioned: Library, tmp_path: Path) -> None:
    [out] = export_captions(captioned, tmp_path / "caps.parquet")
    frame = pl.read_parquet(out)
    assert frame.height == 5
    assert {
        "video_id",
        "path",
        "start_seconds",
        "end_seconds",
        "caption",
        "duration_seconds",
    } <= set(frame.columns)


def test_whole_library_subtitles_one_file_per_video(captioned: Library, tmp_path: Path) -> None:
    written = export_captions(captioned, tmp_path / "subs", format="vtt")
    # both videos are named clip.mp4: the video id keeps the files apart
    assert sorted(p.name for p in written) == ["clip-va.vtt", "clip-vb.vtt"]
    assert "second video" in (tmp_path / "subs" / "clip-vb.vtt").read_text()


def test_export_errors(captioned: Library, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot tell the export format"):
        export_captions(captioned, tmp_path / "caps.txt")
    with pytest.raises(ValueError, match="format must be one of"):
        export_captions(captioned, tmp_path / "x", format="docx")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="'nope' is not in library"):
        export_captions(captioned, tmp_path / "x.srt", video_id="nope")


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.vtt"
    atomic_write_text(target, "old")

    def failing_replace(src, dst):  # noqa: ANN001, ANN202
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    leftovers = [p for p in os.listdir(tmp_path) if p != "out.vtt"]
    assert leftovers == [p for p in leftovers if p.endswith(".tmp")]  # only a temp may remain
