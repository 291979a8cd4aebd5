"""The decord path gives the PyAV path's frames and seconds, and is used only where it can.

On eligible files (generated constant-rate videos in several codecs, a window plan, and the
eligible shared files) `backend="decord"` and `backend="pyav"` return exactly the same seconds
and the same frames (the encoded frame number matches; pixels differ by the scalers only).
Ineligible files (VFR, edit list, start offset, AV1, 1x1, rotation, AVI/FLV, ...) go to PyAV under
"auto" (`FrameBatch.backend` says which ran) and raise `DecordUnavailableError` naming the
reason under "decord". Tests that need decord skip without it.
"""

from __future__ import annotations

import logging
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import ingest
from ingest.decord_path import nearest_frames

DENSE = ingest.SamplingPolicy(fps=5.0, min_tokens_per_pair=4, max_tokens_per_pair=16)
SHARED_DENSE = ingest.SamplingPolicy(
    fps=1000.0, max_frames=4096, min_tokens_per_pair=4, max_tokens_per_pair=16
)
MAX_MEAN_PIXEL_DIFF = 6.0  # per frame, in uint8 levels: decord's scaler is not swscale's bicubic


@pytest.fixture(scope="module")
def decord():
    return pytest.importorskip("decord")


def both(path: Path, plan: ingest.SamplingPlan) -> tuple[ingest.FrameBatch, ingest.FrameBatch]:
    return ingest.decode(path, plan, backend="pyav"), ingest.decode(path, plan, backend="decord")


def assert_same(ours: ingest.FrameBatch, theirs: ingest.FrameBatch) -> None:
    assert ours.backend == "pyav" and theirs.backend == "decord"
    np.testing.assert_array_equal(theirs.seconds, ours.seconds)  # exactly, not approximately
    assert theirs.frames.shape == ours.frames.shape
    assert (theirs.partial, theirs.stopped_at_seconds) == (ours.partial, ours.stopped_at_seconds)
    diff = np.abs(theirs.frames.astype(np.int16) - ours.frames.astype(np.int16))
    assert diff.reshape(len(ours), -1).mean(axis=1).max() < MAX_MEAN_PIXEL_DIFF


def centred(frames: np.ndarray) -> np.ndarray:
    flat = frames.reshape(len(frames), -1).astype(np.float32)
    return flat - flat.mean(axis=1, keepdims=True)


CODECS = [  # (codec, container suffix, pix_fmt, options, time base)
    ("libx264", "mp4", "yuv420p", {"crf": "12"}, Fraction(1, 90000)),
    ("libx265", "mp4", "yuv420p", {"crf": "12", "preset": "ultrafast"}, Fraction(1, 90000)),
    ("mpeg4", "mp4", "yuv420p", {"qscale": "2"}, Fraction(1, 1000)),
    ("libvpx", "webm", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}, Fraction(1, 1000)),
    ("libvpx-vp9", "webm", "yuv420p", {"deadline": "realtime", "cpu-used": "8"}, Fraction(1, 1000)),
    ("mjpeg", "mkv", "yuvj444p", {}, Fraction(1, 1000)),
]


@pytest.mark.parametrize(("codec", "suffix", "pix_fmt", "options", "tb"), CODECS, ids=[c[0] for c in CODECS])
def test_same_frames_and_seconds_as_pyav(tmp_path, video_tools, decord, codec, suffix, pix_fmt, options, tb) -> None:
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    times = [i / 10 for i in range(40)]
    path = video_tools.write_video(tmp_path / f"v.{suffix}", times, codec=codec, pix_fmt=pix_fmt,
                                   options=options, time_base=tb, size=(96, 64))
    plan = ingest.plan(ingest.probe(path), DENSE)
    ours, theirs = both(path, plan)
    assert_same(ours, theirs)
    shown = [video_tools.index_of(f) for f in theirs.frames]
    assert shown == [video_tools.index_of(f) for f in ours.frames]
    assert [times[i] for i in shown] == pytest.approx(list(theirs.seconds), abs=1e-9)
    assert ingest.decode(path, plan).backend == "decord"  # "auto" takes the fast path here


def test_window_plan_and_default_policy(tmp_path, video_tools, decord) -> None:
    times = [i / 10 for i in range(300)]
    path = video_tools.write_video(tmp_path / "long.mp4", times, options={"g": "25"}, size=(96, 64))
    info = ingest.probe(path)
    for plan in (ingest.plan(info, DENSE, start_seconds=20.0, end_seconds=25.0), ingest.plan(info)):
        ours, theirs = both(path, plan)
        assert_same(ours, theirs)
        assert [video_tools.index_of(f) for f in theirs.frames] == [round(t * 10) % 256 for t in theirs.seconds]


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_progress_and_budget_on_each_path(cfr_video, backend) -> None:
    # The other tests call decode with "auto", which takes decord on this file when installed.
    if backend == "decord":
        pytest.importorskip("decord")
    path, _ = cfr_video
    plan = ingest.plan(ingest.probe(path))
    events: list[ingest.ProgressEvent] = []
    batch = ingest.decode(path, plan, backend=backend, progress=events.append)
    assert batch.backend == backend
    assert [e.done for e in events] == list(range(1, plan.num_frames + 1))
    with pytest.raises(ingest.DecodeTimeoutError, match="budget"):
        ingest.decode(path, plan, backend=backend, budget_seconds=0.0)


def _vfr(tmp_path, tools):
    rng = np.random.default_rng(0)
    times = np.cumsum(np.r_[0.0, rng.choice([0.01, 0.04, 0.1, 0.35, 0.8], size=39)]).round(4)
    return tools.write_video(tmp_path / "vfr.mp4", times.tolist())


def _offset(tmp_path, tools):
    return tools.write_video(tmp_path / "offset.mkv", [5.0 + i / 10 for i in range(30)])


def _av1(tmp_path, tools):
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this PyAV build has no AV1 encoder")
    return tools.write_video(tmp_path / "av1.mkv", [i / 10 for i in range(20)], codec="libsvtav1",
                             options={"preset": "12"}, time_base=Fraction(1, 1000))


def _one_by_one(tmp_path, tools):
    return tools.write_video(tmp_path / "1x1.mkv", [i / 10 for i in range(12)], size=(1, 1), pix_fmt="yuv444p")


def _rotated(tmp_path, tools):
    return tools.write_video(tmp_path / "rot.mp4", [i / 10 for i in range(12)], size=(128, 64), rotation=90)


def _avi(tmp_path, tools):
    return tools.write_video(tmp_path / "v.avi", [i / 10 for i in range(12)], codec="mjpeg",
                             pix_fmt="yuvj444p", time_base=Fraction(1, 10))


INELIGIBLE = {  # maker, words of the reason
    "vfr": (_vfr, "not constant|not uniformly spaced"),
    "start_offset": (_offset, "starts at 5 s"),
    "av1": (_av1, "codec 'libdav1d'"),
    "1x1": (_one_by_one, "1x1"),
    "rotated": (_rotated, "rotation"),
    "avi": (_avi, "'avi' container"),
}


@pytest.mark.parametrize("kind", list(INELIGIBLE))
def test_ineligible_generated_files_go_to_pyav(tmp_path, video_tools, decord, caplog, kind) -> None:
    make, reason = INELIGIBLE[kind]
    path = make(tmp_path, video_tools)
    plan = ingest.plan(ingest.probe(path), DENSE)
    with caplog.at_level(logging.INFO, logger="ingest.decode"):
        batch = ingest.decode(path, plan)
    assert batch.backend == "pyav"
    assert any("not decord" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(batch.seconds, ingest.decode(path, plan, backend="pyav").seconds)
    with pytest.raises(ingest.DecordUnavailableError, match=reason) as err:
        ingest.decode(path, plan, backend="decord")
    assert isinstance(err.value, ValueError) and err.value.path == path


SHARED_ELIGIBLE = [
    "h264_mp3_chaplin_640x360.mp4",
    "vp9_bbb_642x642.webm",
    "hevc_bframes_854x480.mp4",
    "h263_176x144.3gp",
    "h264_1frame_canon_1080p.mp4",
    "portrait_coded_720x1080.mp4",
    "counter_10fps_frame_numbers_burned_in.mp4",
    "fades_mpeg4_480x320.mp4",
]
SHARED_INELIGIBLE = {
    "av1_testsrc_640x360.mkv": "codec 'libdav1d'",
    "broken_truncated_50pct.webm": "cut short",
    "editlist_iibbibb_yuv444.mp4": "edit list drops frames",
    "h264_aac_sample.flv": "'flv' container",
    "h264_bframes_854x480.ts": "starts at 1.46667 s",
    "mjpeg_ac3_field_order.avi": "'avi' container",
    "mpeg4part2_mp3_960x400.avi": "'avi' container",
    "phone_fire_rot180.mp4": "rotation",
    "sorenson_svq3_latin1_metadata.mov": "codec 'svq3'",
    "theora_512x512_offset.ogv": "codec 'theora'",
    "tiny_1x1_h264_5frames.mp4": "1x1",
    "vfr_testsrc_30_then_20fps.mp4": "not constant",
}


@pytest.mark.parametrize("name", SHARED_ELIGIBLE)
def test_shared_eligible_file_matches_pyav(shared_videos, decord, name) -> None:
    path = shared_videos / name
    plan = ingest.plan(ingest.probe(path), SHARED_DENSE)
    ours, theirs = both(path, plan)
    assert_same(ours, theirs)
    # Each decord frame is the PyAV frame at its index, not a neighbour: neither neighbouring
    # PyAV frame is closer to it by more than the scalers' noise (static scenes: near-equal).
    # Means are removed first: decord's colour conversion sits a level or two lower, which on
    # a fade equals one frame step.
    flat_ours, flat_theirs = (centred(b.frames) for b in (ours, theirs))
    for k, frame in enumerate(flat_theirs):
        near = slice(max(0, k - 1), k + 2)
        distance = np.abs(flat_ours[near] - frame).mean(axis=1)
        assert np.abs(flat_ours[k] - frame).mean() <= distance.min() + 1.0, (k, distance)
    assert ingest.decode(path, plan).backend == "decord"


@pytest.mark.parametrize("name", list(SHARED_INELIGIBLE))
def test_shared_ineligible_file_goes_to_pyav(shared_videos, decord, name) -> None:
    path = shared_videos / name
    plan = ingest.plan(ingest.probe(path), SHARED_DENSE)
    assert ingest.decode(path, plan).backend == "pyav"
    with pytest.raises(ingest.DecordUnavailableError, match=SHARED_INELIGIBLE[name]):
        ingest.decode(path, plan, backend="decord")


def test_decord_failure_falls_back_under_auto_and_raises_when_explicit(shared_videos, decord, caplog) -> None:
    path = shared_videos / "broken_upstream_invalid_nalu.mp4"  # passes the checks, then breaks
    plan = ingest.plan(ingest.probe(path), SHARED_DENSE)
    with caplog.at_level(logging.WARNING, logger="ingest.decode"):
        batch = ingest.decode(path, plan)
    assert batch.backend == "pyav" and batch.partial
    assert any("decord failed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ingest.CorruptVideoError, match="decord cannot decode"):
        ingest.decode(path, plan, backend="decord")


def test_missing_decord(cfr_video, monkeypatch) -> None:
    path, _ = cfr_video
    plan = ingest.plan(ingest.probe(path))
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` fail
    assert ingest.decode(path, plan).backend == "pyav"
    with pytest.raises(ImportError, match=r"pip install 'vidlm\[decord\]'"):
        ingest.decode(path, plan, backend="decord")


def test_unknown_backend_is_rejected(cfr_video) -> None:
    path, _ = cfr_video
    plan = ingest.plan(ingest.probe(path))
    with pytest.raises(ValueError, match="backend must be one of"):
        ingest.decode(path, plan, backend="torchcodec")  # type: ignore[arg-type]


def test_nearest_frames_matches_the_pyav_rule() -> None:
    frames = np.array([0.0, 0.1, 0.2, 0.3])
    targets = np.array([-0.05, 0.0, 0.05, 0.06, 0.15, 0.3, 0.35, 0.9])
    # ties go to the earlier frame; past the end within the tolerance -> the last frame; beyond -> -1
    assert nearest_frames(frames, targets, tolerance_seconds=0.1).tolist() == [0, 0, 0, 1, 1, 3, 3, -1]


def test_frame_batch_backend_field() -> None:
    frames = np.zeros((4, 3, 2, 2), np.uint8)
    batch = ingest.FrameBatch(frames=frames, seconds=np.arange(4.0), video_id="v")
    assert batch.backend == "pyav"  # the default keeps old constructors working
    assert ingest.FrameBatch(frames=frames, seconds=np.arange(4.0), video_id="v", backend="decord")[1:3].backend == "decord"
    with pytest.raises(ValueError, match="backend"):
        ingest.FrameBatch(frames=frames, seconds=np.arange(4.0), video_id="v", backend="opencv")  # type: ignore[arg-type]
