"""The sampling plan is a pure function of probe facts and policy: checked without any video."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

import ingest
from ingest.orient import UPRIGHT, Orientation


def fake_info(duration: float, width: int, height: int, fps: float = 30.0, **kw) -> ingest.VideoInfo:
    fields = dict(
        path=Path("fake.mp4"), video_id="0" * 16, size_bytes=1, container="mov", codec="h264",
        stream_index=0, width=width, height=height, coded_width=width, coded_height=height,
        rotation=0, mirrored=False, orientation=UPRIGHT, duration_seconds=duration,
        header_duration_seconds=duration, truncated=False, last_frame_seconds=duration - 1 / fps,
        start_seconds=0.0, container_start_seconds=0.0, fps=fps, average_fps=fps, real_fps=fps,
        frame_count=round(duration * fps), pix_fmt="yuv420p", has_audio=False,
    )
    fields.update(kw)
    return ingest.VideoInfo(**fields)


def test_hour_long_1080p_fits_the_budget_and_covers_the_whole_video() -> None:
    policy = ingest.SamplingPolicy()
    info = fake_info(3600.0, 1920, 1080)
    p = ingest.plan(info, policy)
    assert p.num_frames == 2048 and p.num_frames % 2 == 0
    assert p.tokens <= policy.max_video_tokens
    assert p.tokens == (p.num_frames // 2) * (p.height // 32) * (p.width // 32)
    assert p.height % 32 == 0 and p.width % 32 == 0
    assert p.seconds[0] == 0.0
    assert p.seconds[-1] == pytest.approx(3600.0 - 1 / 30)  # the last frame: nothing cut
    assert p.fps < 2.0 and (p.height, p.width) == (352, 608)
    gaps = [b - a for a, b in zip(p.seconds, p.seconds[1:], strict=False)]
    assert max(gaps) - min(gaps) < 1e-6  # evenly spread


def test_plans_are_deterministic() -> None:
    info = fake_info(3600.0, 1920, 1080)
    assert ingest.plan(info) == ingest.plan(info)


@pytest.mark.parametrize(
    ("duration", "frames", "size", "tokens"),
    [(10.0, 20, (640, 1152), 7200), (60.0, 120, (640, 1152), 43200)],
)
def test_short_1080p_matches_reference_recipe_table(duration, frames, size, tokens) -> None:
    # Values from the reference table (qwen-vl-utils column) for 1080p 30 fps.
    p = ingest.plan(fake_info(duration, 1920, 1080))
    assert (p.num_frames, (p.height, p.width), p.tokens) == (frames, size, tokens)


def test_ten_minutes_720p_is_two_fps() -> None:
    p = ingest.plan(fake_info(600.0, 1280, 720))
    assert p.num_frames == 1200
    assert p.tokens <= 224 * 1024
    assert p.fps == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize(
    ("h", "w", "max_tokens", "expected"),
    [
        (1080, 1920, 16384, (1088, 1920)),  # within the bounds: each side rounded to 32
        (1080, 1920, 768, (640, 1152)),  # too large: scaled down, floored to 32
        (1, 1, 768, (384, 384)),  # below 32: the small side becomes 32, then up to min pixels
        (241, 321, 768, (320, 448)),  # below min pixels: scaled up, ceiled to 32
        (720, 1280, 382, (448, 832)),
    ],
)
def test_smart_resize(h: int, w: int, max_tokens: int, expected: tuple[int, int]) -> None:
    got = ingest.smart_resize(h, w, min_pixels=128 * 1024, max_pixels=max_tokens * 1024)
    assert got == expected
    assert got[0] * got[1] <= max_tokens * 1024


def test_smart_resize_rejects_extreme_aspect_ratio() -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        ingest.smart_resize(1, 500, min_pixels=1024, max_pixels=4096)


def test_extreme_aspect_video_is_a_video_error() -> None:
    with pytest.raises(ingest.VideoError, match="cannot be sampled"):
        ingest.plan(fake_info(5.0, 4000, 10))


def test_frame_count_is_even_and_bounded_by_the_source() -> None:
    policy = ingest.SamplingPolicy()
    one = ingest.plan(fake_info(1 / 30, 64, 64, frame_count=1))
    assert one.num_frames == 2 and one.seconds == (0.0, 0.0)  # the reference pads by repetition
    few = ingest.plan(fake_info(0.5, 64, 64, fps=10.0))
    assert few.num_frames == 4  # min_frames, within the 5 available
    assert ingest.plan(fake_info(7.3, 64, 64)).num_frames == 14
    assert all(ingest.plan(fake_info(d, 64, 64)).num_frames % 2 == 0 for d in (0.3, 1.7, 33.3))
    assert policy.max_frames == 2048


def test_window_span_and_rotation_swap_sizes() -> None:
    info = fake_info(100.0, 1080, 1920, coded_width=1920, coded_height=1080,
                     orientation=Orientation(transpose=True, flip_cols=True, rotation=90))
    p = ingest.plan(info, start_seconds=30.0, end_seconds=40.0)
    assert p.seconds[0] == 30.0 and p.seconds[-1] == 40.0
    assert p.num_frames == 20
    assert p.coded_size == (p.height, p.width) and p.height > p.width
    with pytest.raises(ValueError, match="outside"):
        ingest.plan(info, start_seconds=200.0)


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="fps"):
        ingest.SamplingPolicy(fps=0)
    with pytest.raises(ValueError, match="min_frames"):
        ingest.SamplingPolicy(min_frames=10, max_frames=4)


def test_custom_policy_lowers_tokens() -> None:
    info = fake_info(60.0, 1920, 1080)
    small = ingest.plan(info, ingest.SamplingPolicy(max_video_tokens=4096, fps=1.0))
    assert small.tokens <= 4096 and small.num_frames == 60
    assert math.isclose(replace(small).fps, 1.0, rel_tol=1e-2)
