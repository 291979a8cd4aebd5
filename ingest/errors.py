"""Typed errors for bad video files.

Every failure caused by the input file (rather than by a bug) is a subclass of `VideoError`
carrying the offending `.path` and a human-readable `.reason`. Each subclass has a short
`kind` code that a catalog can store as the row status.
"""

from __future__ import annotations

from pathlib import Path


class VideoError(Exception):
    """A video file that cannot be ingested; `str(err)` names the file and the reason."""

    kind: str = "error"

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingFileError(VideoError):
    """The path does not exist or cannot be read."""

    kind = "unreadable"


class EmptyFileError(VideoError):
    """The file has zero bytes."""

    kind = "empty"


class NotAVideoError(VideoError):
    """The content is not a video: text, HTML, an image, a Git LFS pointer, ..."""

    kind = "not_video"


class NoVideoStreamError(VideoError):
    """A media container without any video stream (audio-only, cover art only)."""

    kind = "no_video_stream"


class UnsupportedCodecError(VideoError):
    """The video stream uses a codec this FFmpeg build cannot decode."""

    kind = "unsupported_codec"


class EncryptedVideoError(VideoError):
    """The video is DRM / CENC encrypted."""

    kind = "encrypted"


class TruncatedVideoError(VideoError):
    """The file stops before its first decodable frame (header-only or cut short)."""

    kind = "truncated"


class CorruptVideoError(VideoError):
    """FFmpeg cannot parse the container or decode any frame."""

    kind = "corrupt"


class DecodeTimeoutError(VideoError):
    """Decoding ran past its per-file time budget."""

    kind = "timeout"


class ClipError(VideoError):
    """Cutting a clip with the ffmpeg binary failed."""

    kind = "clip_failed"
