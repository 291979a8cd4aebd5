"""Windows for long videos: shot boundaries from PySceneDetect, merged into bounded windows.

Cuts come from scenedetect's `ContentDetector` on its PyAV backend, whose times are PTS based
and relative to the stream start like ours. `make_windows` is a pure function: consecutive
shots are merged greedily while the window stays within `max_window_seconds`; a shot longer
than that is split into equal parts. Windows tile [0, duration] without gaps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import CorruptVideoError, VideoError
from ingest.probe import probe
from ingest.progress import ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """A span of a video in seconds from the stream start, [start, end)."""

    index: int
    start_seconds: float
    end_seconds: float

    @property
    def duration_seconds(self) -> float:
        return self.end_seconds - self.start_seconds


def detect_shots(
    path: str | Path,
    *,
    threshold: float = 27.0,
    min_shot_seconds: float = 0.5,
    progress: ProgressCallback | None = None,
) -> list[float]:
    """Times (seconds from the stream start) where a new shot begins, excluding 0.

    Raises:
        VideoError: the file cannot be opened or decoded.
    """
    from scenedetect import ContentDetector, SceneManager, open_video
    from scenedetect.common import FrameTimecode

    path = Path(path)
    info = probe(path)  # classify bad files with our errors first
    try:
        video = open_video(str(path), backend="pyav")
        manager = SceneManager()
        min_frames = max(1, round(min_shot_seconds * info.fps))
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=min_frames))
        manager.detect_scenes(video)
        scenes: list[tuple[FrameTimecode, FrameTimecode]] = manager.get_scene_list()
    except VideoError:
        raise
    except Exception as err:  # scenedetect wraps decoder failures in its own types
        raise CorruptVideoError(
            path, f"shot detection failed ({type(err).__name__}: {err})"
        ) from err
    cuts = [float(start.seconds) for start, _ in scenes[1:]]
    if progress is not None:
        progress(
            ProgressEvent("shots", path, info.duration_seconds, info.duration_seconds, "seconds")
        )
    log.debug("%s: %d cuts", path, len(cuts))
    return cuts


def make_windows(
    cuts_seconds: list[float],
    *,
    duration_seconds: float,
    max_window_seconds: float = 60.0,
) -> list[Window]:
    """Merge shots (delimited by `cuts_seconds`) into windows no longer than `max_window_seconds`.

    Raises:
        ValueError: a non-positive duration or window length.
    """
    if duration_seconds <= 0 or max_window_seconds <= 0:
        raise ValueError(
            f"need positive duration and window length, got {duration_seconds}, {max_window_seconds}"
        )
    inner = sorted({c for c in cuts_seconds if 0.0 < c < duration_seconds})
    bounds = [0.0, *inner, duration_seconds]
    spans: list[tuple[float, float]] = []
    start = 0.0
    for shot_start, shot_end in zip(bounds[:-1], bounds[1:], strict=True):
        if shot_end - start <= max_window_seconds:
            continue
        if shot_start > start:
            spans.append((start, shot_start))
            start = shot_start
        if shot_end - start > max_window_seconds:
            spans.extend(_split(start, shot_end, max_window_seconds)[:-1])
            start = spans[-1][1]
    spans.append((start, duration_seconds))
    return [Window(i, s, e) for i, (s, e) in enumerate(spans)]


def _split(start: float, end: float, max_len: float) -> list[tuple[float, float]]:
    parts = math.ceil((end - start) / max_len - 1e-9)
    step = (end - start) / parts
    edges = [start + i * step for i in range(parts)] + [end]
    return list(zip(edges[:-1], edges[1:], strict=True))


def segment(
    path: str | Path,
    *,
    max_window_seconds: float = 60.0,
    threshold: float = 27.0,
    progress: ProgressCallback | None = None,
) -> list[Window]:
    """Windows of a video file at its shot boundaries (see `make_windows`)."""
    info = probe(path)
    cuts = detect_shots(path, threshold=threshold, progress=progress)
    return make_windows(
        cuts, duration_seconds=info.duration_seconds, max_window_seconds=max_window_seconds
    )


def widen_span(start_seconds: float, end_seconds: float, *, min_seconds: float, last_seconds: float) -> tuple[float, float]:
    """The span widened about its middle to at least ``min_seconds``, kept inside
    ``[0, last_seconds]``."""
    middle = (start_seconds + end_seconds) / 2
    half = max(end_seconds - start_seconds, min_seconds) / 2
    lo, hi = middle - half, middle + half
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > last_seconds:
        lo, hi = max(0.0, lo - (hi - last_seconds)), last_seconds
    return lo, hi
