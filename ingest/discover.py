"""Discovery: the video files under a folder.

Recursive, sorted, deterministic. A file counts when its extension is a video extension or,
without one we know, when its first bytes look like a video container. Hidden files and
folders (including macOS `._*` resource forks), and sidecars (subtitles, thumbnails, XMP,
JSON) are skipped. Files with a video extension are kept even when broken, so that they get an
error row instead of silently vanishing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ingest.progress import ProgressCallback, ProgressEvent
from ingest.sniff import looks_like_video, read_head

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .qt .mkv .webm .avi .wmv .asf .flv .f4v .ts .mts .m2ts .mpg .mpeg .m2v "
    ".vob .3gp .3g2 .ogv .ogg .mxf .dv .divx .rm .rmvb .y4m .hevc .h264 .264 .gif".split()
)
SIDECAR_EXTENSIONS = frozenset(
    ".srt .vtt .ass .ssa .sub .idx .thm .xmp .json .txt .md .nfo .jpg .jpeg .png .lrf .lrv "
    ".aae .db .ini .ds_store .pdf .html .htm .xml .csv .parquet .log".split()
)


def discover(folder: str | Path, *, progress: ProgressCallback | None = None) -> list[Path]:
    """All video files under `folder`, recursively, in sorted order.

    Raises:
        NotADirectoryError: `folder` is not a directory.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if is_video_candidate(path):
                found.append(path)
                if progress is not None:
                    progress(ProgressEvent("discover", path, len(found), 0, "files"))
    return sorted(found)


def is_video_candidate(path: Path) -> bool:
    """Whether discovery keeps this file (by name first, then by content)."""
    name = path.name
    if name.startswith(".") or not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return True
    if suffix in SIDECAR_EXTENSIONS:
        return False
    try:
        return looks_like_video(read_head(path, 1024))
    except OSError as err:
        log.warning("%s: cannot read (%s); skipped", path, err)
        return False
