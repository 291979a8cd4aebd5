"""Decoding generated videos whose frame times and contents are known.

For every case the sampled frames' seconds equal the true times of the frames whose content
they show, and each is the decoded frame nearest to its planned instant.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import ingest

DENSE = ingest.SamplingPolicy(fps=5.0, min_tokens_per_pair=4, max_tokens_per_pair=16)


def check_times_and_content(tools, batch: ingest.FrameBatch, plan: ingest.SamplingPlan, true_seconds) -> None:
    """Each frame shows the frame whose true time it reports, the one nearest its plan time."""
    assert len(batch) == plan.num_frames and not batch.partial
    assert batch.frames.shape[1:] == (3, plan.height, plan.width)
    for k, frame in enumerate(batch.frames):
        shown = tools.index_of(frame)
        assert abs(true_seconds[shown] - batch.seconds[k]) < 1e-3, (k, shown)
        target = plan.seconds[k]
        best = min(abs(t - target) for t in true_seconds)
        assert abs(batch.seconds[k] - target) <= best + 1e-6


def run(path: Path, policy: ingest.SamplingPolicy = DENSE, **plan_kw):
    info = ingest.probe(path)
    p = ingest.plan(info, policy, **plan_kw)
    return info, p, ingest.decode(path, p)


CODECS = [  # (codec, container suffix, pix_fmt, options, time base)
    ("libx264", "mp4", "yuv420p", {"crf": "12"}, Fraction(1, 90000)),
    ("mpeg4", "mp4", "yuv420p", {"qscale": "2"}, Fraction(1, 1000)),
    ("libvpx-vp9", "webm", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}, Fraction(1, 1000)),
    ("mjpeg", "avi", "yuvj444p", {}, Fraction(1, 10)),
    ("libsvtav1", "mkv", "yuv420p", {"preset": "12"}, Fraction(1, 1000)),
]


@pytest.mark.parametrize(("codec", "suffix", "pix_fmt", "options", "tb"), CODECS, ids=[c[0] for c in CODECS])
def test_codecs_give_true_times_and_frames(tmp_path, video_tools, codec, suffix, pix_fmt, options, tb) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    times = [i / 10 for i in range(40)]
    path = video_tools.write_video(tmp_path / f"v.{suffix}", times, codec=codec, pix_fmt=pix_fmt,
                                   options=options, time_base=tb)
    info, p, batch = run(path)
    assert (info.width, info.height) == (64, 48) and info.rotation == 0
    assert info.duration_seconds == pytest.approx(4.0, abs=0.11)
    assert p.num_frames == 20
    check_times_and_content(video_tools, batch, p, times)


def test_variable_frame_rate(tmp_path, video_tools) -> None:
    rng = np.random.default_rng(0)
    times = np.cumsum(np.r_[0.0, rng.choice([0.01, 0.04, 0.1, 0.35, 0.8], size=49)]).round(4).tolist()
    path = video_tools.write_video(tmp_path / "vfr.mp4", times)
    info, p, batch = run(path)
    assert info.duration_seconds == pytest.approx(times[-1], abs=0.81)
    check_times_and_content(video_tools, batch, p, times)
    # index / average fps would be wrong: frames are not where uniform spacing puts them.
    uniform = np.arange(len(times)) * (times[-1] / (len(times) - 1))
    assert np.abs(uniform - np.array(times)).max() > 0.5


@pytest.mark.parametrize("suffix", ["mkv", "ts"])
def test_start_offset_is_removed(tmp_path, video_tools, suffix) -> None:
    times = [5.0 + i / 10 for i in range(30)]
    path = video_tools.write_video(tmp_path / f"offset.{suffix}", times)
    info, p, batch = run(path)
    with av.open(str(path)) as c:
        raw_first = float(next(c.decode(video=0)).time)
    assert raw_first >= 5.0 and info.start_seconds == pytest.approx(raw_first)
    relative = [t - times[0] for t in times]
    check_times_and_content(video_tools, batch, p, relative)
    assert batch.seconds[0] == 0.0


def test_odd_sizes_and_one_frame(tmp_path, video_tools) -> None:
    for size in [(1, 1), (321, 241)]:
        times = [i / 10 for i in range(12)]
        path = video_tools.write_video(tmp_path / f"{size[0]}x{size[1]}.mkv", times, size=size, pix_fmt="yuv444p")
        info, p, batch = run(path, ingest.SamplingPolicy())
        assert (info.width, info.height) == size
        assert p.height % 32 == 0 and p.width % 32 == 0
        check_times_and_content(video_tools, batch, p, times)
    one = video_tools.write_video(tmp_path / "one.mp4", [0.0], size=(64, 64))
    info, p, batch = run(one, ingest.SamplingPolicy())
    assert len(batch) == 2 and list(batch.seconds) == [0.0, 0.0]
    assert video_tools.index_of(batch.frames[0]) == 0


def upright_by_ffmpeg(path: Path, width: int, height: int) -> np.ndarray:
    """The first frame as the ffmpeg CLI shows it (it applies the display matrix itself)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-vf", f"scale={width}:{height}",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3)


@pytest.mark.parametrize(("ccw", "hflip"), [(90, False), (180, False), (270, False), (0, True), (90, True)])
def test_rotation_and_mirroring_make_frames_upright(tmp_path, video_tools, ccw, hflip) -> None:
    path = video_tools.write_video(tmp_path / "rot.mp4", [i / 10 for i in range(6)], size=(128, 64),
                                   pix_fmt="yuv444p", rotation=ccw, hflip=hflip,
                                   image=lambda i, w, h: video_tools.quadrant_image(w, h))
    info, p, batch = run(path)
    assert info.rotation == (-ccw) % 360 and info.mirrored == hflip
    assert (info.width, info.height) == ((64, 128) if ccw in (90, 270) else (128, 64))
    assert (p.width < p.height) == (ccw in (90, 270))
    ours = batch.to_hwc()[0].astype(int)
    if shutil.which("ffmpeg"):
        theirs = upright_by_ffmpeg(path, p.width, p.height).astype(int)
        # Compare quadrant means (resamplers differ at the edges).
        h2, w2 = p.height // 2, p.width // 2
        for rows in (slice(2, h2 - 2), slice(h2 + 2, -2)):
            for cols in (slice(2, w2 - 2), slice(w2 + 2, -2)):
                diff = np.abs(ours[rows, cols].mean((0, 1)) - theirs[rows, cols].mean((0, 1)))
                assert diff.max() < 12, (rows, cols, diff)
    if ccw == 90 and not hflip:  # counter-clockwise: the coded top-right corner goes top-left
        top_left = ours[:8, :8].mean((0, 1))
        assert np.abs(top_left - video_tools.QUADRANT_COLOURS["tr"]).max() < 20


def test_window_plan_seeks_and_keeps_true_times(tmp_path, video_tools) -> None:
    times = [i / 10 for i in range(300)]
    path = video_tools.write_video(tmp_path / "long.mp4", times, options={"g": "25"})
    info, p, batch = run(path, start_seconds=20.0, end_seconds=25.0)
    assert batch.seconds[0] == pytest.approx(20.0) and batch.seconds[-1] == pytest.approx(25.0)
    check_times_and_content(video_tools, batch, p, times)


def test_progress_is_reported(cfr_video, video_tools) -> None:
    path, _ = cfr_video
    events: list[ingest.ProgressEvent] = []
    p = ingest.plan(ingest.probe(path))
    ingest.decode(path, p, progress=events.append)
    assert [e.done for e in events] == list(range(1, p.num_frames + 1))
    assert events[-1].fraction == 1.0 and events[-1].stage == "decode"


def test_time_budget_stops_decoding(cfr_video) -> None:
    path, _ = cfr_video
    p = ingest.plan(ingest.probe(path))
    with pytest.raises(ingest.DecodeTimeoutError, match="budget") as err:
        ingest.decode(path, p, budget_seconds=0.0)
    assert err.value.path == path


def test_truncated_stream_yields_frames_before_the_damage(tmp_path, video_tools) -> None:
    times = [i / 10 for i in range(100)]
    good = video_tools.write_video(tmp_path / "full.mkv", times, options={"g": "10"})
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    info = ingest.probe(cut)
    assert info.header_duration_seconds == pytest.approx(10.0, abs=0.11)  # the header says 10 s
    assert info.truncated and 3.0 < info.duration_seconds < 8.0  # the packets stop earlier
    p = ingest.plan(info)  # so the plan covers what is there, densely
    assert p.seconds[-1] <= info.duration_seconds
    batch = ingest.decode(cut, p)
    assert batch.partial and batch.stopped_at_seconds == pytest.approx(p.seconds[-1], abs=0.15)
    for sec, frame in zip(batch.seconds, batch.frames, strict=True):
        assert times[video_tools.index_of(frame)] == pytest.approx(sec, abs=1e-3)
        assert sec <= batch.stopped_at_seconds
