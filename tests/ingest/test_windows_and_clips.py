"""Windows from shot boundaries, and clips cut by the ffmpeg binary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import ingest

SHOT_COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 220), (230, 230, 60)]
CUTS = [1.5, 3.0, 4.2]  # seconds where a new shot starts


@pytest.fixture(scope="module")
def shots_video(tmp_path_factory, video_tools) -> Path:
    """10 fps, 6 s, four solid shots with textured noise, cut at CUTS."""
    rng = np.random.default_rng(0)

    def image(i: int, w: int, h: int) -> np.ndarray:
        shot = sum(i / 10 >= c for c in CUTS)
        noise = rng.integers(-12, 12, (h, w, 1))
        return np.clip(np.array(SHOT_COLOURS[shot]) + noise, 0, 255).astype(np.uint8)

    path = tmp_path_factory.mktemp("shots") / "shots.mp4"
    return video_tools.write_video(path, [i / 10 for i in range(60)], size=(160, 96), image=image)


def test_detect_shots_finds_the_cuts(shots_video) -> None:
    cuts = ingest.detect_shots(shots_video, min_shot_seconds=0.3)
    assert cuts == pytest.approx(CUTS, abs=0.051)


def test_segment_merges_shots_into_bounded_windows(shots_video) -> None:
    windows = ingest.segment(shots_video, max_window_seconds=3.0)
    bounds = [t for w in windows for t in (w.start_seconds, w.end_seconds)]
    assert bounds == pytest.approx([0.0, 3.0, 3.0, 6.0], abs=0.051)


def test_make_windows_pure() -> None:
    w = ingest.make_windows([10.0, 20.0, 70.0, 75.0], duration_seconds=100.0, max_window_seconds=30.0)
    spans = [(x.start_seconds, x.end_seconds) for x in w]
    assert spans == [(0.0, 20.0), (20.0, 45.0), (45.0, 75.0), (75.0, 100.0)]  # 20..70 split, cuts kept
    assert [x.index for x in w] == [0, 1, 2, 3]
    assert all(x.duration_seconds <= 30.0 for x in w)
    assert ingest.make_windows([], duration_seconds=5.0) == [ingest.Window(0, 0.0, 5.0)]
    long = ingest.make_windows([], duration_seconds=100.0, max_window_seconds=40.0)
    assert [round(x.end_seconds, 6) for x in long] == [33.333333, 66.666667, 100.0]
    with pytest.raises(ValueError, match="positive"):
        ingest.make_windows([], duration_seconds=0.0)


def test_window_slicing_of_a_batch(cfr_video) -> None:
    path, _ = cfr_video
    batch = ingest.decode(path, ingest.plan(ingest.probe(path)))
    windows = ingest.make_windows([2.5], duration_seconds=6.0)
    parts = [batch.between(w.start_seconds, w.end_seconds) for w in windows]
    assert sum(len(p) for p in parts) == len(batch)
    assert all(np.shares_memory(p.frames, batch.frames) for p in parts if len(p))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="no ffmpeg binary")
@pytest.mark.parametrize("suffix", ["mp4", "ts"])
def test_cut_clip_starts_at_the_span(tmp_path, video_tools, suffix) -> None:
    # The .ts source starts at 10 s on its clock: span times are from the stream start.
    times = [(10.0 if suffix == "ts" else 0.0) + i / 10 for i in range(60)]
    source = video_tools.write_video(tmp_path / f"src.{suffix}", times, options={"g": "30"})
    clip = ingest.cut_clip(source, 2.0, 3.5, tmp_path / "clip.mp4")
    info = ingest.probe(clip)
    assert info.codec == "h264" and info.duration_seconds == pytest.approx(1.5, abs=0.12)
    batch = ingest.decode(clip, ingest.plan(info, ingest.SamplingPolicy(fps=10.0)))
    first = video_tools.index_of(batch.frames[0])
    assert first == 20  # the frame shown at 2.0 s of the source
    assert batch.seconds[0] == 0.0


def test_cut_clip_rejects_bad_spans_and_files(tmp_path, cfr_video) -> None:
    path, _ = cfr_video
    with pytest.raises(ValueError, match="span"):
        ingest.cut_clip(path, 3.0, 2.0, tmp_path / "x.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"")
    with pytest.raises(ingest.EmptyFileError):
        ingest.cut_clip(bad, 0.0, 1.0, tmp_path / "y.mp4")


def test_widen_span_keeps_its_middle_inside_the_video():
    from ingest import widen_span

    assert widen_span(4.0, 4.6, min_seconds=2.0, last_seconds=10.0) == pytest.approx((3.3, 5.3))
    assert widen_span(0.0, 0.4, min_seconds=2.0, last_seconds=10.0) == pytest.approx((0.0, 2.0))
    assert widen_span(9.8, 10.0, min_seconds=2.0, last_seconds=10.0) == pytest.approx((8.0, 10.0))
    assert widen_span(1.0, 6.0, min_seconds=2.0, last_seconds=10.0) == (1.0, 6.0)
    assert widen_span(0.5, 1.0, min_seconds=4.0, last_seconds=3.0) == (0.0, 3.0)
