"""Repairing or re-embedding a library's vectors from its segments table.

Unusual here: this is the one reader that tolerates a damaged library. When the manifest is
intact the tables are still verified against it; when the manifest itself is damaged the
tables are accepted if they parse with the exact schema. The vectors file is never read: every
segment is embedded again (its caption; a ``SegmentEmbedder`` also reads its span of the file) and a complete new library is committed in one journaled commit.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import polars as pl

from . import vectors as vec
from .embedder import Embedder, SegmentDocument, segment_vectors
from .errors import LibraryCorruptError, LibraryNotFoundError
from .journal import recover
from .load import CATALOG_NAME, SEGMENTS_NAME, read_manifest, read_table, read_tables
from .schema import CATALOG_SCHEMA, SEGMENTS_SCHEMA
from .store import DEFAULT_APPROXIMATE_ABOVE, Library, write_library

log = logging.getLogger(__name__)


def rebuild_vectors(
    path: str | os.PathLike[str],
    embedder: Embedder,
    *,
    batch_size: int = 256,
    approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
) -> Library:
    """Re-embed every segment of the library at ``path`` and write fresh vectors + manifest.

    Use it after a ``LibraryCorruptError`` whose message says the segments table is intact,
    or to switch the library to another embedder.

    Args:
        path: the library folder.
        embedder: gives ``id``, ``dim`` and ``embed(texts) -> float32 [N, dim]``; a
            ``SegmentEmbedder`` is given each segment's file, span and caption.
        batch_size: segments per embedder call.

    Returns:
        The reopened, fully checked library.

    Raises:
        LibraryNotFoundError: no library there.
        LibraryCorruptError: the catalog or segments table is damaged too (re-ingest).
    """
    folder = Path(path)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not folder.is_dir():
        raise LibraryNotFoundError(f"no library at {folder} (folder does not exist)")
    recover(folder)
    catalog, segments, next_id = _trusted_tables(folder)
    vectors = embed_documents(embedder, segment_documents(segments, catalog), batch_size=batch_size)
    ids = segments["segment_id"].to_numpy().astype(np.int64)
    kind = vec.kind_for_count(len(ids), approximate_above)
    index = vec.build_index(ids, vectors, kind) if len(ids) else vec.new_index(embedder.dim, kind)
    write_library(
        folder,
        embedder_id=embedder.id,
        catalog=catalog,
        segments=segments,
        index=index,
        next_segment_id=next_id,
    )
    log.info("library %s: re-embedded %d segments with %s", folder, len(ids), embedder.id)
    return Library.open(folder, approximate_above=approximate_above)


def segment_documents(segments: pl.DataFrame, catalog: pl.DataFrame) -> list[SegmentDocument]:
    """Each segment row's document (its video's path from the catalog), in row order."""
    paths = dict(zip(catalog["video_id"].to_list(), catalog["path"].to_list(), strict=True))
    return [
        SegmentDocument(str(paths.get(r["video_id"], "")), r["start_seconds"], r["end_seconds"], r["caption"])
        for r in segments.iter_rows(named=True)
    ]


def embed_documents(embedder: Embedder, documents: list[SegmentDocument], *, batch_size: int) -> np.ndarray:
    """Normalised float32 ``[N, dim]`` embeddings of segments, in batches."""
    parts = [np.zeros((0, embedder.dim), np.float32)]
    for start in range(0, len(documents), batch_size):
        out = segment_vectors(embedder, documents[start : start + batch_size])
        parts.append(vec.normalize_vectors(out, embedder.dim))
    return np.concatenate(parts)


def _trusted_tables(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(catalog, segments, next segment id) that can be trusted for a rebuild."""
    try:
        manifest = read_manifest(folder)
    except LibraryCorruptError as exc:
        log.warning("library %s: %s; reading the tables without it", folder, exc.reason)
        catalog = _read_unverified(folder, CATALOG_NAME, CATALOG_SCHEMA)
        segments = _read_unverified(folder, SEGMENTS_NAME, SEGMENTS_SCHEMA)
        return catalog, segments, _highest_id(segments) + 1
    catalog, segments = read_tables(folder, manifest)
    return catalog, segments, max(manifest.next_segment_id, _highest_id(segments) + 1)


def _highest_id(segments: pl.DataFrame) -> int:
    return -1 if segments.is_empty() else int(segments["segment_id"].max())  # type: ignore[arg-type]


def _read_unverified(folder: Path, name: str, schema: pl.Schema) -> pl.DataFrame:
    try:
        data = (folder / name).read_bytes()
    except FileNotFoundError as exc:
        raise LibraryCorruptError(folder, f"{name} is missing", rebuildable=False) from exc
    return read_table(folder, name, data, schema, rebuildable=False)
