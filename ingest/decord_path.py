"""The optional decord path: the same frames and times as the PyAV path, where decord can.

decord (0.6) indexes a stream by frame number and decodes a batch of indices quickly, but it
ignores edit lists and start offsets, has no AV1/VVC decoder, may pick another stream than ours,
fails on 1x1 video, garbles AVI/FLV timestamps, drops display rotation and mirroring, and keeps
its timestamps in float32. So a file takes this path only when every one of those differences
is ruled out by facts read here with PyAV (container, codec, stream count, rates, size,
orientation) and by one demux pass over the packets, no decoding: every packet has a PTS, none
is discarded by an edit list, the first is at 0 and the spacing is uniform. decord's own frame
index must then agree with those packets, frame for frame.

Times never come from decord: frame i's seconds are packet i's PTS (in presentation order) times
the stream time base, computed exactly as the PyAV path does, so both paths give the same floats.
Frame selection is the same rule too (the decoded frame nearest each planned instant, the
earlier one on a tie). decord scales in its own filter graph to the planned size, so pixels
differ from swscale's by a few levels at edges.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import av.error
import numpy as np

from ingest.errors import CorruptVideoError, DecodeTimeoutError
from ingest.frames import FrameBatch
from ingest.orient import UPRIGHT
from ingest.plan import SamplingPlan
from ingest.progress import ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with `pip install 'vidlm[decord]'` (or `pip install decord`)"
DECORD_CODECS = frozenset(
    {"h264", "hevc", "vp8", "vp9", "mpeg4", "mpeg1video", "mpeg2video", "mjpeg", "h263"}
)
UNRELIABLE_CONTAINERS = ("avi", "flv")  # decord garbles their timestamps
_BATCH = 16  # frames per get_batch call: bounds decord's RGB buffer at the planned size
_SPACING_TOLERANCE = 1e-3  # relative; ns time bases round 1/30 s to alternating ticks


class DecordUnavailableError(ValueError):
    """The file cannot take the decord path; `.reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(
            f"backend='decord' cannot decode {path} with the same frames and times as PyAV: "
            f"{reason}; use backend='auto' (falls back to PyAV) or backend='pyav'"
        )


@dataclass(frozen=True)
class Timeline:
    """Frame times of a decord-eligible stream, in presentation order."""

    seconds: np.ndarray  # float64 [N], from the stream start, exactly as the PyAV path computes
    step_seconds: float


def import_decord(*, required: bool) -> ModuleType | None:
    """decord, or None when absent and not required (ImportError with a hint when required)."""
    try:
        return importlib.import_module("decord")
    except ImportError as err:
        if required:
            raise ImportError(f"backend='decord' needs the decord package; {INSTALL_HINT}") from err
        return None


def timeline(container: av.container.InputContainer, plan: SamplingPlan) -> Timeline | str:
    """The stream's frame times when decord gives the same frames and times, else the reason."""
    reason = _static_obstacle(container, plan)
    if reason is not None:
        return reason
    stream = container.streams[plan.stream_index]
    return _packet_timeline(container, stream, plan)


def _static_obstacle(container, plan: SamplingPlan) -> str | None:
    videos = container.streams.video
    if len(videos) != 1 or videos[0].index != plan.stream_index:
        return f"the file has {len(videos)} video streams (decord may choose another one)"
    stream = videos[0]
    fmt = container.format.name
    if any(name in fmt.split(",") for name in UNRELIABLE_CONTAINERS):
        return f"decord's timestamps are unreliable in the {fmt!r} container"
    codec = stream.codec_context.name
    if codec not in DECORD_CODECS:
        return f"codec {codec!r} is not one decord decodes the same way"
    width, height = stream.codec_context.width, stream.codec_context.height
    if width < 2 or height < 2:
        return f"the picture is {width}x{height}; decord needs at least 2x2"
    if plan.orientation != UPRIGHT:
        return "the video has display rotation or mirroring, which decord drops"
    if plan.source_truncated:
        return "the file is cut short (decord gives no partial result)"
    if plan.stream_start_seconds != 0.0:
        return f"the stream starts at {plan.stream_start_seconds:g} s, and decord ignores start offsets"
    rate, base = stream.average_rate, stream.base_rate
    if not rate or not base or Fraction(rate) != Fraction(base):
        return f"the frame rate is not constant (average {rate}, real {base})"
    return None


def _packet_timeline(container, stream, plan: SamplingPlan) -> Timeline | str:
    """One demux pass (no decoding): every packet timed, none discarded, uniformly spaced."""
    pts: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's final flush packet
                continue
            if packet.pts is None:
                return "a packet has no timestamp"
            if packet.is_discard:
                return "an edit list drops frames, and decord ignores edit lists"
            pts.append(packet.pts)
    except av.error.FFmpegError as err:
        return f"the packets cannot all be read ({err.strerror or err})"
    if not pts:
        return "the stream has no packets"
    ticks = np.sort(np.asarray(pts, dtype=np.int64))
    if ticks[0] != 0:
        return f"the first frame is at tick {ticks[0]}, not 0 (an edit list or start offset)"
    if stream.frames and stream.frames != len(ticks):
        return f"the index lists {stream.frames} frames but there are {len(ticks)} packets"
    steps = np.diff(ticks)
    if steps.size and (steps <= 0).any():
        return "two frames share a timestamp"
    if steps.size:
        step = float(np.median(steps))
        tolerance = max(1.0, _SPACING_TOLERANCE * step)
        if np.abs(steps - step).max() > tolerance:
            return "the frame timestamps are not uniformly spaced (variable frame rate)"
    tb = stream.time_base
    start = plan.stream_start_seconds
    # The same expression as the PyAV path (int * Fraction -> float), so the floats are equal.
    seconds = np.array([float(int(t) * tb) - start for t in ticks], dtype=np.float64)
    step_seconds = float(np.median(np.diff(seconds))) if seconds.size > 1 else 1.0 / plan.source_fps
    return Timeline(seconds=seconds, step_seconds=step_seconds)


def error_message(err: Exception) -> str:
    """decord's message without its C++ backtrace and `[hh:mm:ss] file.cc:line:` prefixes."""
    first = (str(err).strip().splitlines() or [""])[0]
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", first).strip() or type(err).__name__


def open_reader(decord: ModuleType, path: Path, plan: SamplingPlan, threads: int):
    """A VideoReader scaling to the planned size (coded == display: the file is upright)."""
    return decord.VideoReader(
        str(path), ctx=decord.cpu(0), width=plan.width, height=plan.height, num_threads=threads
    )


def index_disagreement(reader, line: Timeline) -> str | None:
    """Why decord's frame index is not the packets' presentation order, or None."""
    count = len(reader)
    if count != line.seconds.size:
        return f"decord counts {count} frames, the container {line.seconds.size}"
    theirs = reader.get_frame_timestamp(list(range(count)))[:, 0].astype(np.float64)
    off = np.abs(theirs - line.seconds).max()
    if off > line.step_seconds / 4:
        return f"decord's frame times differ from the container's by up to {off:.4f} s"
    return None


def nearest_frames(
    frame_seconds: np.ndarray, targets: np.ndarray, *, tolerance_seconds: float
) -> np.ndarray:
    """Index of the frame nearest each target (earlier on a tie), as the PyAV filler picks.

    Targets past the last frame by more than `tolerance_seconds` get -1 (not filled).
    """
    after = np.searchsorted(frame_seconds, targets, side="left")  # first frame at or after
    last = frame_seconds.size - 1
    later = np.minimum(after, last)
    earlier = np.maximum(after - 1, 0)
    take_earlier = (after > 0) & (
        (after > last) | (targets - frame_seconds[earlier] <= frame_seconds[later] - targets)
    )
    chosen = np.where(take_earlier, earlier, later)
    beyond = targets > frame_seconds[last] + tolerance_seconds
    return np.where(beyond, -1, chosen)


def decode_frames(
    reader,
    path: Path,
    plan: SamplingPlan,
    line: Timeline,
    *,
    deadline: float,
    budget: float,
    progress: ProgressCallback | None,
) -> FrameBatch:
    """Decode the planned frames with decord in batches, written straight into `[T, 3, H, W]`."""
    targets = np.asarray(plan.seconds, dtype=np.float64)
    chosen = nearest_frames(line.seconds, targets, tolerance_seconds=2.0 / plan.source_fps + 0.1)
    chosen = chosen[chosen >= 0]  # an instant past the end stops the batch, as in the PyAV path
    out = np.empty((chosen.size, 3, plan.height, plan.width), dtype=np.uint8)
    wanted = np.unique(chosen)
    k = 0
    for lo in range(0, wanted.size, _BATCH):
        if time.monotonic() > deadline:
            raise DecodeTimeoutError(
                path,
                f"decoding took longer than its budget of {budget:g} s "
                f"(reached {line.seconds[wanted[lo]]:.2f} s of the video)",
            )
        block = wanted[lo : lo + _BATCH]
        pictures = reader.get_batch(block.tolist()).asnumpy()  # [B, H, W, 3]
        while k < chosen.size and chosen[k] <= block[-1]:
            out[k] = pictures[np.searchsorted(block, chosen[k])].transpose(2, 0, 1)
            k += 1
            if progress is not None:
                progress(ProgressEvent("decode", path, k, len(targets), "frames"))
    partial = chosen.size < targets.size
    seconds = line.seconds[chosen]
    if partial:
        log.warning("%s: only %d of %d planned frames", path, chosen.size, targets.size)
    if chosen.size == 0:
        raise CorruptVideoError(path, "no frame could be decoded at the planned times")
    return FrameBatch(
        frames=out,
        seconds=seconds,
        video_id=plan.video_id,
        partial=partial,
        stopped_at_seconds=float(line.seconds[-1]) if partial else None,
        backend="decord",
    )
