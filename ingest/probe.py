"""Probing: the facts about a video file that planning and decoding need.

`probe` opens the file with PyAV, picks the video stream (the same rule everywhere: never cover
art, prefer the default-disposition stream, then the largest picture, then the lowest index),
and decodes its first frame, which proves the file decodes and carries the display matrix
(rotation, mirroring). Bad files are classified into the `VideoError` subclasses before and
after FFmpeg has had a look. The frame rate used for planning is measured (frames / duration or
packet timestamps), because containers report nonsense such as 1000 fps for FLV.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition

from ingest.errors import (
    CorruptVideoError,
    EmptyFileError,
    EncryptedVideoError,
    MissingFileError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoError,
)
from ingest.orient import UPRIGHT, Orientation, orientation_from_matrix
from ingest.sniff import IsoBmffFacts, iso_bmff_facts, non_video_content, read_head

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20
_PACKETS_FOR_RATE = 64
_DEFAULT_FPS = 24.0


@dataclass(frozen=True)
class VideoInfo:
    """Probe facts of one video file. Sizes are as displayed (after rotation)."""

    path: Path
    video_id: str
    size_bytes: int
    container: str
    codec: str
    stream_index: int
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # clockwise degrees a player turns the coded picture: 0, 90, 180 or 270
    mirrored: bool  # mirrored horizontally after the rotation
    orientation: Orientation
    duration_seconds: float  # span of the video stream from its start (packets' end when cut short)
    header_duration_seconds: float  # the span the container header claims
    last_frame_seconds: float  # time of the last frame from the stream start (best estimate)
    truncated: bool  # the file ends well before its header says (cut short)
    start_seconds: float  # video stream start on the container clock
    container_start_seconds: float
    fps: float  # measured frame rate used for planning
    average_fps: float | None  # as the container reports it
    real_fps: float | None  # FFmpeg's r_frame_rate (lowest rate all timestamps fit)
    frame_count: int | None  # from the container index; None when unknown
    pix_fmt: str | None
    has_audio: bool


def video_id(path: str | Path) -> str:
    """A stable id from the file content: 16 hex digits of BLAKE2b.

    Hashes the size plus the first, middle and last MiB (the whole file when smaller than
    3 MiB), so it is fast on large files, ignores the name and changes when the content does.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=8)
    digest.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= 3 * _HASH_CHUNK:
            digest.update(f.read())
        else:
            for offset in (0, size // 2 - _HASH_CHUNK // 2, size - _HASH_CHUNK):
                f.seek(offset)
                digest.update(f.read(_HASH_CHUNK))
    return digest.hexdigest()


def probe(path: str | Path) -> VideoInfo:
    """Probe a video file.

    Args:
        path: the video file.

    Returns:
        VideoInfo with display size, rotation, duration, start, rates and stream choice.

    Raises:
        VideoError: a subclass naming why the file is not a usable video.
    """
    path = Path(path)
    size, bmff = check_content(path)
    with open_container(path, bmff=bmff) as container:
        _reject_images(path, container)
        stream = choose_video_stream(path, container)
        first_frame = _first_frame(path, container, stream, bmff)
        return _collect(path, size, container, stream, first_frame)


def check_content(path: Path) -> tuple[int, IsoBmffFacts | None]:
    """Reject missing, empty, non-video and encrypted files before FFmpeg opens them."""
    try:
        size = path.stat().st_size
        head = read_head(path)
    except FileNotFoundError as err:
        raise MissingFileError(path, "the file does not exist") from err
    except (IsADirectoryError, PermissionError, OSError) as err:
        raise MissingFileError(path, f"the file cannot be read ({err.strerror or err})") from err
    if size == 0:
        raise EmptyFileError(path, "the file is empty (0 bytes)")
    what = non_video_content(head)
    if what is not None:
        raise NotAVideoError(path, f"the file is {what}, not a video")
    bmff = iso_bmff_facts(path)
    if bmff is not None and bmff.encrypted:
        raise EncryptedVideoError(
            path, "the video is encrypted (DRM/CENC protected) and cannot be decoded"
        )
    return size, bmff


def open_container(path: Path, *, bmff: IsoBmffFacts | None = None) -> av.container.InputContainer:
    """Open a file with PyAV, turning FFmpeg failures into `VideoError`s."""
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        if bmff is not None and (bmff.truncated or not bmff.has_moov):
            raise TruncatedVideoError(
                path, "the file is cut short: its mp4 index (moov box) is missing or incomplete"
            ) from err
        raise CorruptVideoError(
            path, f"FFmpeg cannot read the container ({_ffmpeg_message(err)})"
        ) from err


def _ffmpeg_message(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _reject_images(path: Path, container: av.container.InputContainer) -> None:
    name = container.format.name
    if name.endswith("_pipe") or name in ("image2", "png", "webp"):
        kind = name.removesuffix("_pipe").upper()
        raise NotAVideoError(path, f"the file is a {kind} image, not a video")


def choose_video_stream(
    path: Path, container: av.container.InputContainer
) -> av.video.stream.VideoStream:
    """The video stream used everywhere: no cover art; default first, then largest, then first."""
    candidates = [
        s for s in container.streams.video if not (s.disposition & Disposition.attached_pic)
    ]
    if not candidates:
        has_audio = bool(container.streams.audio)
        what = "audio only" if has_audio else "no video stream"
        if container.streams.video:
            what += " (the only picture is attached cover art)"
        raise NoVideoStreamError(path, f"the file has {what}")

    def rank(s: av.video.stream.VideoStream) -> tuple[int, int, int, int]:
        ctx = s.codec_context
        if ctx is None:
            return (0, 0, 0, -s.index)
        default = 1 if s.disposition & Disposition.default else 0
        return (1, default, (ctx.width or 0) * (ctx.height or 0), -s.index)

    stream = max(candidates, key=rank)
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise UnsupportedCodecError(path, "the video codec is unknown to this FFmpeg build")
    if not ctx.codec.is_decoder:
        raise UnsupportedCodecError(path, f"no decoder for codec {ctx.name!r}")
    return stream


def _first_frame(
    path: Path,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    bmff: IsoBmffFacts | None,
) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as err:
        raise CorruptVideoError(
            path, f"the first frame cannot be decoded ({_ffmpeg_message(err)})"
        ) from err
    if bmff is not None and (bmff.truncated or not bmff.has_media_data):
        raise TruncatedVideoError(
            path, "the file holds a header but no frame data (header-only or cut short)"
        )
    raise CorruptVideoError(path, "no frame could be decoded")


def _collect(
    path: Path,
    size: int,
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    first: av.VideoFrame,
) -> VideoInfo:
    tb = stream.time_base or Fraction(1, 1)
    container_start = container.start_time / 1e6 if container.start_time is not None else 0.0
    if stream.start_time is not None:
        start = float(stream.start_time * tb)
    else:
        start = float(first.time) if first.time is not None else container_start
    header_duration = _header_duration(container, stream, start, container_start)
    end, last_pts = _measured_end(container, stream)
    measured = None if end is None else max(0.0, end - start)
    truncated = measured is not None and measured < header_duration - max(
        0.5, 0.05 * header_duration
    )
    # Packet ends can miss a frame (zero durations, missing pts); trust the header unless the
    # file is clearly cut short.
    duration = (
        measured
        if truncated or (measured is not None and header_duration <= 0)
        else header_duration
    )
    fps = _measured_fps(container, stream, stream.frames or None, duration)
    last_frame = max(0.0, duration - 1.0 / fps)
    if last_pts is not None:
        last_frame = min(duration, max(last_frame, last_pts - start))
    orientation = _orientation(first)
    coded_w, coded_h = first.width, first.height
    width, height = orientation.display_size(coded_w, coded_h)
    count = stream.frames or None
    return VideoInfo(
        path=path,
        video_id=video_id(path),
        size_bytes=size,
        container=container.format.name,
        codec=stream.codec_context.name,
        stream_index=stream.index,
        width=width,
        height=height,
        coded_width=coded_w,
        coded_height=coded_h,
        rotation=orientation.rotation,
        mirrored=orientation.mirrored,
        orientation=orientation,
        duration_seconds=duration,
        header_duration_seconds=header_duration,
        truncated=truncated,
        start_seconds=start,
        container_start_seconds=container_start,
        fps=fps,
        last_frame_seconds=last_frame,
        average_fps=float(stream.average_rate) if stream.average_rate else None,
        real_fps=float(stream.base_rate) if stream.base_rate else None,
        frame_count=count,
        pix_fmt=stream.codec_context.pix_fmt,
        has_audio=bool(container.streams.audio),
    )


def _header_duration(container, stream, start: float, container_start: float) -> float:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if not container.duration:
        return 0.0
    if container.format.name.startswith("matroska"):
        # Matroska's duration is the end of the segment timeline, which starts at 0.
        return max(0.0, container.duration / 1e6 - start)
    return max(0.0, container.duration / 1e6 - (start - container_start))


def _measured_end(container, stream) -> tuple[float | None, float | None]:
    """End of the last packet (pts + duration) and the largest pts, in seconds, from a seek
    near the end.

    Falls back to reading every packet (no decoding) when the seek finds nothing.
    """
    tb = stream.time_base
    start_us = container.start_time or 0
    target = int((start_us + (container.duration or 0)) / 1e6 / tb) + 1
    for seek_to in (target, None):
        try:
            container.seek(seek_to if seek_to is not None else 0, stream=stream, backward=True)
            packets = [
                (p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None
            ]
        except av.error.FFmpegError:
            continue
        if packets:
            return float(_last_packet_end(packets) * tb), float(max(p for p, _ in packets) * tb)
    return None, None


def _last_packet_end(packets: list[tuple[int, int]]) -> int:
    """pts + duration of the last packet; a missing duration counts as the typical step."""
    pts = np.array(sorted(p for p, _ in packets), dtype=np.int64)
    steps = np.diff(pts)
    typical = int(np.median(steps[steps > 0])) if (steps > 0).any() else 0
    return max(p + (d or typical) for p, d in packets)


def _orientation(frame: av.VideoFrame) -> Orientation:
    for data in frame.side_data:
        if data.type == SideDataType.DISPLAYMATRIX:
            return orientation_from_matrix(np.frombuffer(bytes(data), dtype="<i4"))
    return UPRIGHT


def _measured_fps(container, stream, count: int | None, duration: float) -> float:
    """Frames per second from the index when known, else from the first packets' timestamps."""
    if count and count > 1 and duration > 0:
        return count / duration
    measured = _fps_from_packets(container, stream)
    if measured:
        return measured
    if stream.average_rate and 0 < float(stream.average_rate) <= 240:
        return float(stream.average_rate)
    if stream.guessed_rate:
        return float(stream.guessed_rate)
    log.warning("no frame rate known for stream %d; assuming %.0f fps", stream.index, _DEFAULT_FPS)
    return _DEFAULT_FPS


def _fps_from_packets(container, stream) -> float | None:
    try:
        container.seek(0, stream=stream)
        stamps = []
        for packet in container.demux(stream):
            if packet.pts is not None:
                stamps.append(packet.pts)
            if len(stamps) >= _PACKETS_FOR_RATE:
                break
    except av.error.FFmpegError:
        return None
    steps = np.diff(np.sort(np.array(stamps, dtype=np.float64)))
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    return 1.0 / float(np.median(steps) * stream.time_base)


__all__ = ["VideoInfo", "VideoError", "probe", "video_id", "open_container", "choose_video_stream"]
