"""Content sniffing: what a file is, from its first bytes, before FFmpeg sees it.

FFmpeg happily opens a JPEG renamed `.mp4` as a one-frame video and reports a Git LFS pointer or
an HTML error page only as "invalid data", so the common non-video contents are recognised here
by their magic bytes. ISO-BMFF files (mp4/mov/3gp) also get a cheap top-level box walk, which
tells a truncated or header-only file and an encrypted (CENC/FairPlay) one apart from a corrupt
one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

HEAD_BYTES = 4096
_MOOV_READ_LIMIT = 64 << 20

# (magic prefix, offset, description) of image and document formats that are not videos.
_NON_VIDEO_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"),
    (b"BM", 0, "a BMP image"),
    (b"%PDF", 0, "a PDF document"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
    (b"WEBP", 8, "a WebP image"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
)

# Magic bytes of video containers, for discovering videos without a known extension.
_VIDEO_MAGIC: tuple[tuple[bytes, int], ...] = (
    (b"ftyp", 4),  # ISO-BMFF: mp4, mov, 3gp, m4v
    (b"\x1a\x45\xdf\xa3", 0),  # EBML: mkv, webm
    (b"OggS", 0),
    (b"FLV\x01", 0),
    (b"\x00\x00\x01\xba", 0),  # MPEG program stream
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", 0),  # ASF / WMV
)


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The first `size` bytes of a file."""
    with open(path, "rb") as f:
        return f.read(size)


def non_video_content(head: bytes) -> str | None:
    """Describe `head` when it is a well-known non-video content, else None."""
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return "a Git LFS pointer file, not the video itself (run `git lfs pull`)"
    for magic, offset, what in _NON_VIDEO_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if magic == b"WEBP" and not head.startswith(b"RIFF"):
                continue
            return what
    lowered = head.lstrip()[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        return "an HTML/XML page (a failed download?)"
    if head and _looks_like_text(head):
        return "a text file"
    return None


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A cut in the middle of a multi-byte character at the end of the sample is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return printable >= 0.95 * max(1, len(text))


def looks_like_video(head: bytes) -> bool:
    """True when `head` starts like a video container (used for files without an extension)."""
    if any(head[off : off + len(magic)] == magic for magic, off in _VIDEO_MAGIC):
        return True
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return True
    # MPEG transport stream: sync byte every 188 bytes.
    return len(head) >= 3 * 188 and all(head[i * 188] == 0x47 for i in range(3))


@dataclass(frozen=True)
class IsoBmffFacts:
    """Top-level box facts of an ISO-BMFF file."""

    truncated: bool  # a box claims more bytes than the file has
    has_moov: bool
    has_media_data: bool  # an mdat (or fragment) with at least one byte
    encrypted: bool  # sample entries are protected (encv/enca/sinf)


def iso_bmff_facts(path: Path) -> IsoBmffFacts | None:
    """Walk the top-level boxes of an mp4/mov file; None when it is not ISO-BMFF."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free"):
            return None
        offset, truncated, moov, media, encrypted = 0, False, False, False, False
        while offset + 8 <= size:
            f.seek(offset)
            box_size, box_type = struct.unpack(">I4s", f.read(8))
            header = 8
            if box_size == 1:
                box_size = struct.unpack(">Q", f.read(8))[0]
                header = 16
            elif box_size == 0:
                box_size = size - offset
            if box_size < header:
                truncated = True
                break
            if offset + box_size > size:
                truncated = True
            if box_type == b"moov":
                moov = True
                body = f.read(min(box_size - header, _MOOV_READ_LIMIT))
                encrypted = any(tag in body for tag in (b"encv", b"enca", b"sinf"))
            elif box_type in (b"mdat", b"moof") and box_size > header and size > offset + header:
                media = True
            offset += box_size
    return IsoBmffFacts(
        truncated=truncated, has_moov=moov, has_media_data=media, encrypted=encrypted
    )
