"""Decoding: the frames of a plan, at their true times, scaled inside the decoder.

One sequential PyAV pass (seeking first when the plan starts late, e.g. a window). For each
planned instant the decoded frame nearest to it is kept; only kept frames are converted, and
they are converted straight to the planned size and planar RGB by swscale
(`VideoFrame.reformat` to gbrp, which also avoids an HWC->CHW shuffle), so memory holds the
planned-size frames plus a few decoded pictures. Each frame's time is its PTS relative
to the stream start, never index / average fps, so variable frame rate, edit lists and start
offsets come out right. A wall-clock budget per file bounds the pass; damage partway yields
the frames before it, flagged `partial`.

`backend="auto"` (the default) hands eligible files to decord instead (`ingest.decord_path`:
same frames, same seconds, faster); any file decord would get wrong stays on this path.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import av
import av.error
import numpy as np

from ingest import decord_path
from ingest.errors import CorruptVideoError, DecodeTimeoutError, VideoError
from ingest.frames import FrameBatch
from ingest.plan import SamplingPlan
from ingest.probe import check_content, open_container
from ingest.progress import ProgressCallback, ProgressEvent
from ingest.sniff import IsoBmffFacts

log = logging.getLogger(__name__)

_SEEK_MARGIN_SECONDS = 1.0
_INTERPOLATION = "BICUBIC"
_REORDER_DEPTH = 3
_GBRP_TO_RGB = (2, 0, 1)  # planar GBR stores G, B, R; rows are padded to line_size
_SCALE_THREADS = 1  # the decoder already keeps the cores busy with frame threads

Backend = Literal["auto", "pyav", "decord"]
BACKENDS: tuple[Backend, ...] = ("auto", "pyav", "decord")


def default_budget_seconds(duration_seconds: float) -> float:
    """Default wall-clock budget for decoding one file: 60 s plus twice its duration."""
    return 60.0 + 2.0 * max(0.0, duration_seconds)


def decode(
    path: str | Path,
    plan: SamplingPlan,
    *,
    backend: Backend = "auto",
    budget_seconds: float | None = None,
    progress: ProgressCallback | None = None,
    threads: int = 0,
) -> FrameBatch:
    """Decode the frames nearest to the planned times, at the planned size, upright.

    Args:
        path: the video file the plan was made for.
        plan: from `ingest.plan`.
        backend: "pyav"; "decord" (only on files where it gives the same frames and times,
            see `ingest.decord_path`); "auto" uses decord when it is installed and the file
            is eligible, else PyAV (the reason is logged at INFO).
            Both give the same frames and the same seconds; `FrameBatch.backend` says which ran.
        budget_seconds: wall-clock limit; `default_budget_seconds(duration)` when None.
        progress: called with a `ProgressEvent` (unit "frames") as frames are filled.
        threads: decoder threads (0 = FFmpeg's choice).

    Returns:
        FrameBatch `[T, 3, plan.height, plan.width]`; T < plan.num_frames only when partial.

    Raises:
        VideoError: the file cannot be decoded (DecodeTimeoutError when over budget).
        ValueError: an unknown backend, or backend="decord" on a file decord would get wrong
            (`DecordUnavailableError`, naming the reason).
        ImportError: backend="decord" without the decord package (with an install hint).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = Path(path)
    _, bmff = check_content(path)
    budget = (
        default_budget_seconds(plan.duration_seconds) if budget_seconds is None else budget_seconds
    )
    deadline = time.monotonic() + budget
    if backend != "pyav":
        batch = _decode_decord(
            path,
            plan,
            bmff,
            required=backend == "decord",
            deadline=deadline,
            budget=budget,
            progress=progress,
            threads=threads,
        )
        if batch is not None:
            return batch
    return _decode_pyav(
        path, plan, bmff, deadline=deadline, budget=budget, progress=progress, threads=threads
    )


def _decode_pyav(
    path: Path,
    plan: SamplingPlan,
    bmff: IsoBmffFacts | None,
    *,
    deadline: float,
    budget: float,
    progress: ProgressCallback | None,
    threads: int,
) -> FrameBatch:
    with open_container(path, bmff=bmff) as container:
        stream = _stream(path, container, plan.stream_index)
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        filler = _Filler(path, plan, progress)
        try:
            _run(path, container, stream, plan, filler, deadline=deadline, budget=budget)
        except av.error.FFmpegError as err:
            if filler.last_time is None:
                raise CorruptVideoError(
                    path, f"no frame could be decoded ({err.strerror or err})"
                ) from err
            log.warning("%s: decoding stopped at %.3f s: %s", path, filler.last_time, err)
            filler.damaged = True
    return filler.finish()


def _decode_decord(
    path: Path,
    plan: SamplingPlan,
    bmff: IsoBmffFacts | None,
    *,
    required: bool,
    deadline: float,
    budget: float,
    progress: ProgressCallback | None,
    threads: int,
) -> FrameBatch | None:
    """The decord path, or None (logged) when auto mode should use PyAV instead.

    With `required` (backend="decord") every reason to refuse is raised instead.
    """
    decord = decord_path.import_decord(required=required)
    if decord is None:
        log.debug("%s: decord is not installed; decoding with PyAV", path)
        return None
    with open_container(path, bmff=bmff) as container:
        _stream(path, container, plan.stream_index)
        line = decord_path.timeline(container, plan)
    if isinstance(line, str):
        reason = line
    else:
        try:
            reader = decord_path.open_reader(decord, path, plan, threads)
            reason = decord_path.index_disagreement(reader, line)
            if reason is None:
                return decord_path.decode_frames(
                    reader, path, plan, line, deadline=deadline, budget=budget, progress=progress
                )
        except decord.DECORDError as err:
            message = decord_path.error_message(err)
            if required:
                raise CorruptVideoError(path, f"decord cannot decode the file ({message})") from err
            log.warning("%s: decord failed (%s); decoding with PyAV", path, message)
            return None
    if required:
        raise decord_path.DecordUnavailableError(path, reason)
    log.info("%s: decoding with PyAV, not decord: %s", path, reason)
    return None


def _stream(path: Path, container, index: int):
    if index >= len(container.streams) or container.streams[index].type != "video":
        raise CorruptVideoError(
            path, f"stream {index} of the plan is not a video stream in this file"
        )
    return container.streams[index]


def _run(
    path: Path,
    container,
    stream,
    plan: SamplingPlan,
    filler: _Filler,
    *,
    deadline: float,
    budget: float,
) -> None:
    for seconds, frame in _reordered(_timed_frames(container, stream, plan)):
        if time.monotonic() > deadline:
            raise DecodeTimeoutError(
                path,
                f"decoding took longer than its budget of {budget:g} s (reached {seconds:.2f} s of the video)",
            )
        if filler.push(seconds, frame):
            return


def _timed_frames(container, stream, plan: SamplingPlan) -> Iterator[tuple[float, av.VideoFrame]]:
    """Decoded frames with their time in seconds from the stream start, seeking if useful."""
    start = plan.stream_start_seconds
    first_target = plan.seconds[0] if plan.seconds else 0.0
    seek_to = first_target - _SEEK_MARGIN_SECONDS
    if seek_to > 0:
        container.seek(int((start + seek_to) / stream.time_base), stream=stream, backward=True)
        frames = _with_times(container.decode(stream), start, plan.source_fps)
        first = next(frames, None)
        if first is not None and first[0] <= first_target:
            yield first
            yield from frames
            return
        log.debug("seek landed after %.3f s; decoding from the start", first_target)
        container.seek(stream.start_time or 0, stream=stream, backward=True)
    yield from _with_times(container.decode(stream), start, plan.source_fps)


def _reordered(
    frames: Iterator[tuple[float, av.VideoFrame]],
) -> Iterator[tuple[float, av.VideoFrame]]:
    """Frames in time order, fixing decoders that emit a few frames out of order (e.g. SVQ3).

    Holds `_REORDER_DEPTH` decoded pictures; a stream more disordered than that keeps its order.
    """
    pending: list[tuple[float, int, av.VideoFrame]] = []
    try:
        for n, (seconds, frame) in enumerate(frames):
            heapq.heappush(pending, (seconds, n, frame))
            if len(pending) > _REORDER_DEPTH:
                seconds, _, frame = heapq.heappop(pending)
                yield seconds, frame
    except av.error.FFmpegError:
        while pending:  # the frames before the damage still count
            seconds, _, frame = heapq.heappop(pending)
            yield seconds, frame
        raise
    while pending:
        seconds, _, frame = heapq.heappop(pending)
        yield seconds, frame


def _with_times(
    frames: Iterator[av.VideoFrame], start: float, fps: float
) -> Iterator[tuple[float, av.VideoFrame]]:
    last = None
    for frame in frames:
        if frame.pts is not None:
            seconds = float(frame.pts * frame.time_base) - start
        else:  # no timestamp at all: one nominal frame after the previous one
            seconds = 0.0 if last is None else last + 1.0 / fps
        last = seconds
        yield seconds, frame


class _Filler:
    """Assigns each planned instant its nearest decoded frame and converts only those."""

    def __init__(self, path: Path, plan: SamplingPlan, progress: ProgressCallback | None) -> None:
        self.path, self.plan, self.progress = path, plan, progress
        self.targets = plan.seconds
        self.out = np.empty((plan.num_frames, 3, plan.height, plan.width), dtype=np.uint8)
        self.times = np.empty(plan.num_frames, dtype=np.float64)
        self.k = 0
        self.prev: tuple[float, av.VideoFrame] | None = None
        self.last_time: float | None = None
        self.damaged = False
        self._last_filled: av.VideoFrame | None = None

    def push(self, seconds: float, frame: av.VideoFrame) -> bool:
        """Offer the next decoded frame; True once every planned instant is filled."""
        while self.k < len(self.targets) and seconds >= self.targets[self.k]:
            target = self.targets[self.k]
            prev = self.prev
            if prev is not None and target - prev[0] <= seconds - target:
                self._fill(*prev)
            else:
                self._fill(seconds, frame)
        self.prev = (seconds, frame)
        self.last_time = seconds
        return self.k >= len(self.targets)

    def _fill(self, seconds: float, frame: av.VideoFrame) -> None:
        if self._last_filled is frame:  # the same picture is nearest to two instants
            self.out[self.k] = self.out[self.k - 1]
        else:
            self._convert_into(frame, self.out[self.k])
            self._last_filled = frame
        self.times[self.k] = seconds
        self.k += 1
        if self.progress is not None:
            self.progress(ProgressEvent("decode", self.path, self.k, len(self.targets), "frames"))

    def _convert_into(self, frame: av.VideoFrame, upright: np.ndarray) -> None:
        """Scale and convert in swscale to planar RGB at the planned size, written straight
        into `upright` `[3, H, W]` through a view in coded orientation (no extra copy)."""
        width, height = self.plan.coded_size
        planar = frame.reformat(
            width=width,
            height=height,
            format="gbrp",
            interpolation=_INTERPOLATION,
            threads=_SCALE_THREADS,
        )
        coded = self.plan.orientation.coded_view_chw(upright)
        for channel, plane_index in enumerate(_GBRP_TO_RGB):
            plane = planar.planes[plane_index]
            coded[channel] = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[
                :, :width
            ]

    def finish(self) -> FrameBatch:
        """Fill instants just past the last frame with it; drop the rest as partial."""
        tolerance = 2.0 / self.plan.source_fps + 0.1
        if self.prev is not None and not self.damaged:
            while self.k < len(self.targets) and self.targets[self.k] <= self.prev[0] + tolerance:
                self._fill(*self.prev)
        if self.k == 0:
            raise CorruptVideoError(self.path, "no frame could be decoded at the planned times")
        reaches_end = (
            bool(self.targets) and self.targets[-1] >= self.plan.duration_seconds - 2 * tolerance
        )
        partial = self.k < len(self.targets) or (self.plan.source_truncated and reaches_end)
        if partial:
            log.warning(
                "%s: only %d of %d planned frames; the video stops at %.3f s",
                self.path,
                self.k,
                len(self.targets),
                self.last_time,
            )
        self._last_filled = None
        self.prev = None
        return FrameBatch(
            frames=self.out[: self.k],
            seconds=self.times[: self.k],
            video_id=self.plan.video_id,
            partial=partial,
            stopped_at_seconds=self.last_time if partial else None,
        )


__all__ = ["Backend", "decode", "default_budget_seconds", "VideoError"]
