"""The sampling plan: which instants to show the model, and at what size.

A pure function of probe facts and a `SamplingPolicy`, testable without any video. Defaults
follow the model's own evaluation recipe: 2 fps, at most 2048 frames, at most 224K visual tokens
(one token per 32x32 pixels per frame pair), 128..768 tokens per frame pair, an even frame count.
A long video fits by lowering the frame rate (frames spread over the whole duration) and the
per-frame pixels, never by cutting the end.

`smart_resize` is the reference rule (round each side to a multiple of 32, then scale down or
up to fit the pixel bounds); the model package keeps its own copy for images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.errors import NotAVideoError
from ingest.orient import Orientation
from ingest.probe import VideoInfo

MAX_ASPECT_RATIO = 200


@dataclass(frozen=True)
class SamplingPolicy:
    """How densely and how large to sample a video.

    Attributes:
        fps: target frames per second (lowered when `max_frames` or the token budget binds).
        min_frames: fewest frames for a video that has that many.
        max_frames: most frames per plan.
        max_video_tokens: visual token budget for the whole plan.
        min_tokens_per_pair: lower bound of tokens per frame pair (small videos are upscaled).
        max_tokens_per_pair: upper bound of tokens per frame pair.
        size_factor: frame sides are multiples of this (patch 16 x spatial merge 2).
        temporal_patch_size: frames per temporal patch; the frame count is a multiple of it.
    """

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 2048
    max_video_tokens: int = 224 * 1024
    min_tokens_per_pair: int = 128
    max_tokens_per_pair: int = 768
    size_factor: int = 32
    temporal_patch_size: int = 2

    def __post_init__(self) -> None:
        if not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.temporal_patch_size < 1:
            raise ValueError(f"temporal_patch_size must be >= 1, got {self.temporal_patch_size}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
            )
        if not 1 <= self.min_tokens_per_pair <= self.max_tokens_per_pair:
            raise ValueError(
                "need 1 <= min_tokens_per_pair <= max_tokens_per_pair, got "
                f"{self.min_tokens_per_pair}, {self.max_tokens_per_pair}"
            )
        pairs = self.max_frames // self.temporal_patch_size
        if self.max_video_tokens < self.min_tokens_per_pair:
            raise ValueError(f"max_video_tokens={self.max_video_tokens} is below one frame pair")
        if pairs < 1:
            raise ValueError(f"max_frames={self.max_frames} is below temporal_patch_size")


@dataclass(frozen=True)
class SamplingPlan:
    """Frame times and the per-frame size for one video (or one window of it).

    `seconds` are planned instants relative to the video stream start; decoding returns the
    decoded frames nearest to them, with those frames' own times.
    """

    path: Path
    video_id: str
    stream_index: int
    stream_start_seconds: (
        float  # the stream's start on the container clock (frame times are relative to it)
    )
    seconds: tuple[float, ...]
    width: int  # per-frame output size, as displayed
    height: int
    orientation: Orientation
    duration_seconds: float
    source_truncated: bool  # the file ends before its header says; decoding flags it partial
    fps: float  # effective sampling rate of this plan
    source_fps: float
    tokens: int  # visual tokens of the whole plan
    temporal_patch_size: int

    @property
    def num_frames(self) -> int:
        return len(self.seconds)

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) to scale coded pictures to, before turning them upright."""
        return (
            (self.height, self.width) if self.orientation.transpose else (self.width, self.height)
        )


def smart_resize(
    height: int, width: int, *, factor: int = 32, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Reference resize rule: sides multiples of `factor`, area within [min_pixels, max_pixels].

    Returns:
        (height, width) after resizing.

    Raises:
        ValueError: when the aspect ratio exceeds 200 or a bound is invalid.
    """
    if height < 1 or width < 1 or not 0 < min_pixels <= max_pixels:
        raise ValueError(f"bad size or bounds: {height}x{width}, [{min_pixels}, {max_pixels}]")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {max(height, width) / min(height, width):.0f} exceeds {MAX_ASPECT_RATIO}"
        )
    if min(height, width) < factor:  # upscale so the smaller side is one factor
        scale = factor / min(height, width)
        height, width = height * scale, width * scale
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


def frame_count(duration_seconds: float, source_fps: float, policy: SamplingPolicy) -> int:
    """Number of frames: fps-based, clamped to the policy and the source, a multiple of the
    temporal patch (at least one patch, repeating a frame when the source has fewer)."""
    tp = policy.temporal_patch_size
    available = max(1, math.floor(duration_seconds * source_fps + 1e-6))
    wanted = math.floor(duration_seconds * policy.fps + 1e-6)
    count = min(max(wanted, policy.min_frames), policy.max_frames, available)
    pair_budget = policy.max_video_tokens // policy.min_tokens_per_pair * tp
    count = min(count, pair_budget)
    return max(tp, count // tp * tp)


def plan(
    info: VideoInfo,
    policy: SamplingPolicy | None = None,
    *,
    start_seconds: float = 0.0,
    end_seconds: float | None = None,
) -> SamplingPlan:
    """Plan frame times and size for `info` (optionally only the span [start, end]).

    Args:
        info: probe facts.
        policy: sampling policy; the default recipe when None.
        start_seconds: span start, relative to the video stream start.
        end_seconds: span end; the end of the video when None.

    Raises:
        ValueError: an empty or inverted span.
        NotAVideoError: the picture's aspect ratio is beyond what the model accepts.
    """
    policy = policy or SamplingPolicy()
    last_frame = info.last_frame_seconds
    end = last_frame if end_seconds is None else min(end_seconds, last_frame)
    if start_seconds < 0 or start_seconds > end + 1e-9:
        raise ValueError(
            f"span [{start_seconds}, {end_seconds}] is outside the video (0..{last_frame:.3f} s)"
        )
    span = end - start_seconds
    count = frame_count(span + 1.0 / info.fps, info.fps, policy)
    seconds = tuple(float(t) for t in np.linspace(start_seconds, end, count))
    height, width = _frame_size(info, policy, count)
    pairs = math.ceil(count / policy.temporal_patch_size)
    tokens = pairs * (height // policy.size_factor) * (width // policy.size_factor)
    return SamplingPlan(
        path=info.path,
        video_id=info.video_id,
        stream_index=info.stream_index,
        stream_start_seconds=info.start_seconds,
        seconds=seconds,
        width=width,
        height=height,
        orientation=info.orientation,
        duration_seconds=info.duration_seconds,
        source_truncated=info.truncated,
        fps=count / (span + 1.0 / info.fps),
        source_fps=info.fps,
        tokens=tokens,
        temporal_patch_size=policy.temporal_patch_size,
    )


def _frame_size(info: VideoInfo, policy: SamplingPolicy, count: int) -> tuple[int, int]:
    pairs = math.ceil(count / policy.temporal_patch_size)
    tokens_per_pair = min(policy.max_tokens_per_pair, policy.max_video_tokens // pairs)
    unit = policy.size_factor**2
    max_pixels = max(tokens_per_pair, policy.min_tokens_per_pair) * unit
    min_pixels = min(policy.min_tokens_per_pair * unit, max_pixels)
    try:
        return smart_resize(
            info.height,
            info.width,
            factor=policy.size_factor,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
    except ValueError as err:
        raise NotAVideoError(
            info.path, f"the picture {info.width}x{info.height} cannot be sampled: {err}"
        ) from err
