"""Atomic file writes: temp file in the same folder, fsync, os.replace, fsync of the folder.

Unusual here: the temp file lives beside the target (``.<name>.<random>.tmp``) so that
``os.replace`` is a rename within one filesystem, and the folder itself is fsynced after the
rename so that the new directory entry survives a power cut, not only the file's bytes. A
reader therefore sees either the old file or the new one, never a prefix of the new one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Literal

import polars as pl

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """A fresh hidden temp path beside ``path`` (same folder, so a rename is atomic)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{TMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, unlinks) to disk; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory; renames are durable there anyway
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a temp file beside ``path`` with ``write(fileobj)`` and fsync it; return its path.

    The caller renames it into place (see ``commit_temp``) or removes it. On any error the temp
    file is removed and the error propagates.
    """
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp


def commit_temp(tmp: Path, path: Path) -> None:
    """Rename a finished temp file over ``path`` and fsync the folder."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically. Returns the path written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    commit_temp(write_temp(target, lambda f: f.write(data)), target)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with UTF-8 ``text`` atomically (newlines written as given)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(path: str | os.PathLike[str], frame: pl.DataFrame) -> Path:
    """Replace ``path`` with ``frame`` as parquet, atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    commit_temp(write_temp(target, frame.write_parquet), target)
    return target


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike[str], mode: Literal["w", "wb"] = "w"
) -> Iterator[IO[str] | IO[bytes]]:
    """Stream into ``path``: the file appears (atomically) only if the block finishes.

    Text mode writes UTF-8 with ``\\n`` newlines on every platform.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    try:
        if mode == "w":
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        else:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        commit_temp(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
