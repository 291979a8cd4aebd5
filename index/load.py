"""Reading a library folder back and checking that its parts agree with each other.

Unusual here: nothing is trusted. Each data file is checked against the manifest's size and
sha256 before it is parsed, then the parsed parts are cross-checked (schema, dimension, index
type, counts, the faiss ids being exactly the segment ids). Any failure is a
``LibraryCorruptError`` saying whether ``index.rebuild_vectors`` can repair it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from . import vectors as vec
from .errors import LibraryCorruptError, LibraryMismatchError, LibraryNotFoundError
from .manifest import MANIFEST_NAME, Manifest, read_checked
from .schema import CATALOG_SCHEMA, SCHEMA_VERSION, SEGMENTS_SCHEMA, check_schema

CATALOG_NAME = "catalog.parquet"
SEGMENTS_NAME = "segments.parquet"
VECTORS_NAME = "vectors.faiss"


@dataclass
class LoadedLibrary:
    manifest: Manifest
    catalog: pl.DataFrame
    segments: pl.DataFrame
    index: faiss.IndexIDMap2


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest, self-checked.

    Raises:
        LibraryNotFoundError: no manifest and no data files (not a library).
        LibraryCorruptError: data files without a manifest, or a damaged manifest.
        LibraryMismatchError: written by another schema version.
    """
    path = folder / MANIFEST_NAME
    if not path.exists():
        if any((folder / n).exists() for n in (CATALOG_NAME, SEGMENTS_NAME, VECTORS_NAME)):
            raise LibraryCorruptError(folder, f"{MANIFEST_NAME} is missing", rebuildable=True)
        raise LibraryNotFoundError(
            f"no library at {folder} ({MANIFEST_NAME} not found); open it with create=True "
            "to make a new one"
        )
    manifest = Manifest.from_json(path.read_text(encoding="utf-8", errors="replace"), folder)
    if manifest.schema_version != SCHEMA_VERSION:
        raise LibraryMismatchError(
            f"library {folder} has schema version {manifest.schema_version}; this code reads "
            f"version {SCHEMA_VERSION}"
        )
    if manifest.metric != vec.METRIC:
        raise LibraryCorruptError(
            folder, f"manifest metric {manifest.metric!r} is not {vec.METRIC!r}", rebuildable=True
        )
    return manifest


def read_table(
    folder: Path, name: str, data: bytes, schema: pl.Schema, *, rebuildable: bool
) -> pl.DataFrame:
    """Parse parquet bytes and check the exact schema."""
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise LibraryCorruptError(
            folder, f"{name} is not readable parquet ({exc})", rebuildable=rebuildable
        ) from exc
    problem = check_schema(frame, schema, name)
    if problem:
        raise LibraryCorruptError(folder, problem, rebuildable=rebuildable)
    return frame


def read_tables(folder: Path, manifest: Manifest) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(catalog, segments), each verified against the manifest."""
    frames = []
    for name, schema in ((CATALOG_NAME, CATALOG_SCHEMA), (SEGMENTS_NAME, SEGMENTS_SCHEMA)):
        facts = manifest.files.get(name)
        if facts is None:
            raise LibraryCorruptError(folder, f"manifest lists no {name}", rebuildable=False)
        data = read_checked(folder, name, facts, rebuildable=False)
        frames.append(read_table(folder, name, data, schema, rebuildable=False))
    return frames[0], frames[1]


def read_index(folder: Path, manifest: Manifest) -> faiss.IndexIDMap2:
    """The faiss index, verified against the manifest's facts, dimension and kind."""
    facts = manifest.files.get(VECTORS_NAME)
    if facts is None:
        raise LibraryCorruptError(folder, f"manifest lists no {VECTORS_NAME}", rebuildable=True)
    data = read_checked(folder, VECTORS_NAME, facts, rebuildable=True)
    try:
        index = vec.from_bytes(data)
    except RuntimeError as exc:
        raise LibraryCorruptError(
            folder, f"{VECTORS_NAME} cannot be read by faiss ({str(exc)[:200]})", rebuildable=True
        ) from exc
    kind = vec.kind_of(index)
    if kind is None or kind != manifest.index_kind:
        raise LibraryCorruptError(
            folder,
            f"{VECTORS_NAME} holds a {type(index).__name__} ({kind}), manifest says "
            f"{manifest.index_kind}",
            rebuildable=True,
        )
    if index.d != manifest.dimension or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise LibraryCorruptError(
            folder,
            f"{VECTORS_NAME} has dimension {index.d}, manifest says {manifest.dimension}",
            rebuildable=True,
        )
    return index


def check_consistency(folder: Path, loaded: LoadedLibrary) -> None:
    """Counts and ids must agree between manifest, tables and index."""
    m, cat, seg, index = loaded.manifest, loaded.catalog, loaded.segments, loaded.index
    if cat.height != m.video_count or cat["video_id"].n_unique() != cat.height:
        raise LibraryCorruptError(
            folder,
            f"catalog has {cat.height} rows ({cat['video_id'].n_unique()} distinct ids), "
            f"manifest says {m.video_count} videos",
            rebuildable=False,
        )
    if seg.height != m.segment_count:
        raise LibraryCorruptError(
            folder,
            f"segments has {seg.height} rows, manifest says {m.segment_count}",
            rebuildable=False,
        )
    if index.ntotal != m.vector_count or m.vector_count != m.segment_count:
        raise LibraryCorruptError(
            folder,
            f"{VECTORS_NAME} holds {index.ntotal} vectors, manifest says {m.vector_count} "
            f"vectors for {m.segment_count} segments",
            rebuildable=True,
        )
    seg_ids = np.sort(seg["segment_id"].to_numpy())
    if not np.array_equal(np.sort(vec.stored_ids(index)), seg_ids):
        raise LibraryCorruptError(folder, "faiss ids are not the segment ids", rebuildable=True)
    if len(seg_ids) and seg_ids[-1] >= m.next_segment_id:
        raise LibraryCorruptError(
            folder, f"segment id {seg_ids[-1]} >= next id {m.next_segment_id}", rebuildable=False
        )
    orphans = set(seg["video_id"].unique().to_list()) - set(cat["video_id"].to_list())
    if orphans:
        raise LibraryCorruptError(
            folder,
            f"segments of videos not in the catalog: {sorted(orphans)[:5]}",
            rebuildable=False,
        )


def load_library(folder: Path) -> LoadedLibrary:
    """Read and fully check a library folder (after crash recovery by the caller)."""
    manifest = read_manifest(folder)
    catalog, segments = read_tables(folder, manifest)
    loaded = LoadedLibrary(manifest, catalog, segments, read_index(folder, manifest))
    check_consistency(folder, loaded)
    return loaded
