"""ingest: video files -> frames with presentation times.

    import ingest
    info = ingest.probe(path)                            # VideoInfo
    plan = ingest.plan(info, ingest.SamplingPolicy())    # frame times (seconds) + per-frame size
    batch = ingest.decode(path, plan)                    # FrameBatch: uint8 [T, 3, H, W], seconds [T]

`decode(..., backend="auto")` uses decord where it gives the same frames and times, else PyAV.

Times are seconds from each frame's PTS relative to the video stream start. Every failure
caused by a bad file raises a subclass of `VideoError` with `.path` and `.reason`.
"""

from ingest.clip import cut_clip
from ingest.decode import Backend, decode, default_budget_seconds
from ingest.decord_path import DecordUnavailableError
from ingest.discover import discover
from ingest.errors import (
    ClipError,
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyFileError,
    EncryptedVideoError,
    MissingFileError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoError,
)
from ingest.folder import IngestResult, ingest_file, ingest_folder
from ingest.frames import FrameBatch
from ingest.orient import Orientation
from ingest.plan import SamplingPlan, SamplingPolicy, plan, smart_resize
from ingest.probe import VideoInfo, probe, video_id
from ingest.progress import ProgressCallback, ProgressEvent
from ingest.windows import Window, detect_shots, make_windows, segment, widen_span

__all__ = [
    "Backend",
    "ClipError",
    "CorruptVideoError",
    "DecordUnavailableError",
    "DecodeTimeoutError",
    "EmptyFileError",
    "EncryptedVideoError",
    "FrameBatch",
    "IngestResult",
    "MissingFileError",
    "NoVideoStreamError",
    "NotAVideoError",
    "Orientation",
    "ProgressCallback",
    "ProgressEvent",
    "SamplingPlan",
    "SamplingPolicy",
    "TruncatedVideoError",
    "UnsupportedCodecError",
    "VideoError",
    "VideoInfo",
    "Window",
    "cut_clip",
    "decode",
    "default_budget_seconds",
    "detect_shots",
    "discover",
    "ingest_file",
    "ingest_folder",
    "make_windows",
    "plan",
    "probe",
    "segment",
    "smart_resize",
    "video_id",
    "widen_span",
]
