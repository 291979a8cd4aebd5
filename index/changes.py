"""Noticing new, changed, touched and deleted files by comparing the disk with the catalog.

Unusual here: hashing a large video costs seconds, so by default a file whose size and mtime
equal its catalog row is trusted as unchanged without reading it; only a differing size or
mtime triggers a hash, and an equal hash then reports "touched" (same bytes, new mtime), not
"changed". Deciding what to do (re-ingest, drop, retry errors) stays with the caller.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl

HashPolicy = Literal["when-changed", "always", "never"]
Change = Literal["new", "changed", "touched", "unchanged", "missing"]

CHANGES_SCHEMA = pl.Schema(
    {
        "path": pl.String,
        "video_id": pl.String,
        "change": pl.String,
        "size_bytes": pl.Int64,
        "mtime_ns": pl.Int64,
        "content_hash": pl.String,
        "previous_status": pl.String,
    }
)

_CHUNK_BYTES = 1 << 20


def content_hash(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def video_id_for_path(path: str | os.PathLike[str]) -> str:
    """A stable 16-hex-digit video id from the file's absolute path."""
    text = str(Path(path).absolute())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_changes(
    catalog: pl.DataFrame,
    paths: Sequence[str | os.PathLike[str]],
    *,
    hash_policy: HashPolicy = "when-changed",
) -> pl.DataFrame:
    """Classify files found on disk against the catalog.

    Args:
        catalog: the library catalog (needs path, video_id, size_bytes, mtime_ns,
            content_hash, status).
        paths: the video files found now (compared by absolute path).
        hash_policy: "when-changed" hashes only when size or mtime differ; "always" hashes
            every known file; "never" decides on size and mtime alone.

    Returns:
        ``CHANGES_SCHEMA`` rows: change is "new" (not in the catalog), "changed" (other
        bytes), "touched" (same bytes, other mtime), "unchanged", or "missing" (in the
        catalog, not found or no longer a file). content_hash is filled where it was computed.
    """
    if hash_policy not in ("when-changed", "always", "never"):
        raise ValueError(
            f"hash_policy must be 'when-changed', 'always' or 'never', got {hash_policy!r}"
        )
    known = {str(Path(row["path"]).absolute()): row for row in catalog.iter_rows(named=True)}
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for p in paths:
        key = str(Path(p).absolute())
        if key in seen:
            continue
        seen.add(key)
        rows.append(_classify(key, known.get(key), hash_policy))
    for key, row in known.items():
        if key not in seen:
            rows.append(_missing(row))
    return pl.DataFrame(rows, schema=CHANGES_SCHEMA)


def _classify(path: str, row: dict[str, object] | None, policy: HashPolicy) -> dict[str, object]:
    try:
        stat = os.stat(path)
    except OSError:
        if row is None:
            raise
        return _missing(row)
    out: dict[str, object] = {
        "path": path,
        "video_id": row["video_id"] if row else video_id_for_path(path),
        "size_bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "content_hash": None,
        "previous_status": row["status"] if row else None,
    }
    if row is None:
        out["change"] = "new"
        return out
    same_stat = row["size_bytes"] == stat.st_size and row["mtime_ns"] == stat.st_mtime_ns
    if policy == "never" or (same_stat and policy == "when-changed"):
        out["change"] = "unchanged" if same_stat else "changed"
        return out
    out["content_hash"] = content_hash(path)
    if out["content_hash"] != row["content_hash"]:
        out["change"] = "changed"
    else:
        out["change"] = "unchanged" if same_stat else "touched"
    return out


def _missing(row: dict[str, object]) -> dict[str, object]:
    return {
        "path": row["path"],
        "video_id": row["video_id"],
        "change": "missing",
        "size_bytes": row["size_bytes"],
        "mtime_ns": row["mtime_ns"],
        "content_hash": row["content_hash"],
        "previous_status": row["status"],
    }
