"""Multi-file atomic commit for the library folder: temp files, a journal, then renames.

Unusual here: one file can be replaced atomically by a rename, but a library commit replaces
several (tables, vectors, manifest). So a commit (1) writes every new file as an fsynced temp
beside its target, (2) atomically writes ``commit-journal.json`` listing the renames (this is
the commit point), (3) renames the temps into place, manifest last, and (4) deletes the
journal. ``recover`` runs on every open: a journal left by a crash is rolled forward (the new
library), stray temps without a journal are deleted (the old library). Either way no reader
ever gets half of one commit. One writer at a time is assumed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from .atomic import TMP_SUFFIX, atomic_write_bytes, fsync_dir, write_temp
from .errors import LibraryCorruptError

log = logging.getLogger(__name__)

JOURNAL_NAME = "commit-journal.json"

Writer = Callable[[IO[bytes]], None]


def commit_files(folder: Path, files: Mapping[str, Writer]) -> None:
    """Replace the named files of ``folder`` all together; the last name is renamed last.

    Args:
        folder: the library folder.
        files: plain file name -> function writing its new content to a binary file object.
    """
    temps: dict[str, Path] = {}
    try:
        for name, write in files.items():
            _check_name(folder, name)
            temps[name] = write_temp(folder / name, write)
    except BaseException:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    renames = [[tmp.name, name] for name, tmp in temps.items()]
    journal = json.dumps({"journal_version": 1, "renames": renames}, indent=1)
    atomic_write_bytes(folder / JOURNAL_NAME, journal.encode("utf-8"))
    apply_journal(folder)


def apply_journal(folder: Path) -> bool:
    """Finish a committed but unfinished commit; True if there was one."""
    path = folder / JOURNAL_NAME
    if not path.exists():
        return False
    renames = _read_journal(folder, path)
    for tmp_name, name in renames:
        tmp = folder / tmp_name
        if tmp.exists():
            os.replace(tmp, folder / name)
    fsync_dir(folder)
    path.unlink()
    fsync_dir(folder)
    return True


def recover(folder: Path) -> None:
    """Bring ``folder`` to its last committed state after a crash (see module docstring)."""
    if apply_journal(folder):
        log.warning("library %s: finished a commit interrupted by a crash", folder)
    for stray in folder.glob(f".*{TMP_SUFFIX}"):
        log.warning("library %s: removing uncommitted temp file %s", folder, stray.name)
        with contextlib.suppress(FileNotFoundError):
            stray.unlink()


def _read_journal(folder: Path, path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        renames = [(str(a), str(b)) for a, b in data["renames"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise LibraryCorruptError(
            folder, f"{path.name} cannot be read ({exc})", rebuildable=False
        ) from exc
    for tmp_name, name in renames:
        _check_name(folder, tmp_name)
        _check_name(folder, name)
    return renames


def _check_name(folder: Path, name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise LibraryCorruptError(
            folder,
            f"journal or commit names a path outside the folder: {name!r}",
            rebuildable=False,
        )
