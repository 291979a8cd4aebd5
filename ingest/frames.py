"""`FrameBatch`: decoded frames with their presentation times.

Layout is uint8 `[T, 3, H, W]` (channels first, RGB) with float64 `seconds [T]` relative to
the video stream start. The dataclass is frozen and validates leading dims; slicing returns
views (no pixel copy), so cutting a long batch into windows is cheap. `repr` prints shapes,
never pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

BACKENDS = ("pyav", "decord")


@dataclass(frozen=True, repr=False)
class FrameBatch:
    """Frames `[T, 3, H, W]` uint8 RGB and their times `[T]` in seconds.

    Attributes:
        frames: uint8 `[T, 3, H, W]`.
        seconds: float64 `[T]`, each frame's PTS relative to the video stream start.
        video_id: content-hash id of the source video.
        partial: True when decoding stopped early (damage or a file shorter than its header).
        stopped_at_seconds: time of the last good frame when `partial`, else None.
        backend: the decoder that produced the frames ("pyav" or "decord").
    """

    frames: np.ndarray
    seconds: np.ndarray
    video_id: str
    partial: bool = False
    stopped_at_seconds: float | None = None
    backend: Literal["pyav", "decord"] = "pyav"

    def __post_init__(self) -> None:
        frames, seconds = self.frames, self.seconds
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(f"frames must be a uint8 [T, 3, H, W] array, got {_describe(frames)}")
        if frames.shape[1] != 3:
            raise ValueError(f"frames must have 3 channels in dim 1, got shape {frames.shape}")
        if not isinstance(seconds, np.ndarray) or seconds.ndim != 1:
            raise ValueError(f"seconds must be a 1-D array, got {_describe(seconds)}")
        if seconds.shape[0] != frames.shape[0]:
            raise ValueError(f"{frames.shape[0]} frames but {seconds.shape[0]} seconds")
        if seconds.dtype != np.float64:
            object.__setattr__(self, "seconds", seconds.astype(np.float64))

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __repr__(self) -> str:
        span = f"{self.seconds[0]:.3f}..{self.seconds[-1]:.3f} s" if len(self) else "empty"
        flag = f", partial (stopped at {self.stopped_at_seconds:.3f} s)" if self.partial else ""
        return (
            f"FrameBatch(video_id={self.video_id!r}, frames=uint8{list(self.frames.shape)}, "
            f"seconds={span}{flag})"
        )

    def __getitem__(self, index: slice) -> FrameBatch:
        """A slice of the batch (a view, no pixel copy)."""
        if not isinstance(index, slice):
            raise TypeError(f"FrameBatch supports slices only, got {type(index).__name__}")
        return replace(self, frames=self.frames[index], seconds=self.seconds[index])

    def between(self, start_seconds: float, end_seconds: float) -> FrameBatch:
        """Frames with start_seconds <= t < end_seconds (a view)."""
        lo, hi = np.searchsorted(self.seconds, [start_seconds, end_seconds], side="left")
        return self[int(lo) : int(hi)]

    @property
    def height(self) -> int:
        return int(self.frames.shape[2])

    @property
    def width(self) -> int:
        return int(self.frames.shape[3])

    def to_hwc(self) -> np.ndarray:
        """Frames as `[T, H, W, 3]` (a view) for image libraries."""
        return self.frames.transpose(0, 2, 3, 1)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    return type(value).__name__
