"""Clips of grounded spans, cut by the system ffmpeg binary through ffmpeg-python.

Span times are ours (seconds from the video stream start); ffmpeg's `-ss` counts from the
container start, so the stream's offset is added. The clip is re-encoded (H.264 + AAC, yuv420p,
even size, `+faststart`) so it starts exactly at `start` and plays in any browser. The process
runs under a time limit and is killed past it.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import ffmpeg

from ingest.errors import ClipError
from ingest.probe import probe

log = logging.getLogger(__name__)


def ffmpeg_binary() -> str:
    """Path of the ffmpeg binary; RuntimeError with an install hint when it is missing."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError(
            "the ffmpeg binary is not on PATH; install it (Debian: apt-get install ffmpeg)"
        )
    return found


def cut_clip(
    path: str | Path,
    start_seconds: float,
    end_seconds: float,
    out_path: str | Path,
    *,
    audio: bool = True,
    crf: int = 23,
    timeout_seconds: float = 300.0,
    ffmpeg_cmd: str | None = None,
) -> Path:
    """Cut [start_seconds, end_seconds) of a video into a playable mp4.

    Args:
        path: source video.
        start_seconds: span start, seconds from the video stream start.
        end_seconds: span end (clamped to the video's duration).
        out_path: the mp4 to write (overwritten).
        audio: keep the audio track when there is one.
        crf: H.264 quality (lower is better).
        timeout_seconds: kill ffmpeg past this.
        ffmpeg_cmd: ffmpeg binary; found on PATH when None.

    Raises:
        ValueError: an empty or negative span.
        VideoError: a bad source file (ClipError when ffmpeg fails or times out).
    """
    info = probe(path)
    end_seconds = min(end_seconds, info.duration_seconds)
    if start_seconds < 0 or end_seconds <= start_seconds:
        raise ValueError(
            f"bad span [{start_seconds}, {end_seconds}] for a {info.duration_seconds:.3f} s video"
        )
    out_path = Path(out_path)
    offset = info.start_seconds - info.container_start_seconds
    source = ffmpeg.input(
        str(info.path), ss=f"{start_seconds + offset:.6f}", t=f"{end_seconds - start_seconds:.6f}"
    )
    streams = [source[f"{info.stream_index}"].filter("scale", "trunc(iw/2)*2", "trunc(ih/2)*2")]
    if audio and info.has_audio:
        streams.append(source["a:0?"])
    output = ffmpeg.output(
        *streams,
        str(out_path),
        vcodec="libx264",
        crf=crf,
        pix_fmt="yuv420p",
        acodec="aac",
        movflags="+faststart",
        **{"loglevel": "error"},
    ).overwrite_output()
    _run(output, cmd=ffmpeg_cmd or ffmpeg_binary(), path=info.path, timeout_seconds=timeout_seconds)
    return out_path


def _run(output, *, cmd: str, path: Path, timeout_seconds: float) -> None:
    args = output.compile(cmd=cmd)
    log.debug("running %s", " ".join(args))
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout_seconds, check=False)
    except subprocess.TimeoutExpired as err:
        raise ClipError(path, f"ffmpeg did not finish within {timeout_seconds:g} s") from err
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ClipError(
            path, f"ffmpeg failed: {message[-1] if message else 'exit ' + str(done.returncode)}"
        )
