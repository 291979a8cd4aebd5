"""The library folder: catalog + segments tables (parquet), vectors (faiss), manifest.

Layout of a library folder::

    catalog.parquet    one row per video file found (index.schema.CATALOG_SCHEMA)
    segments.parquet   time spans + grounded captions (index.schema.SEGMENTS_SCHEMA)
    vectors.faiss      IndexIDMap2 over IndexFlatIP (HNSW when large); ids = segment_id
    manifest.json      dimension, metric, embedder id, counts, schema version, file sha256s

Unusual here: mutations (``upsert_video``, ``update_entry``, ``remove_video``) are staged in
memory and become durable only at ``commit()``, which replaces every changed file in one
journaled multi-file commit (see ``index.journal``). Segment ids are never reused, so a stale
id can never point at another video's span. One writer process at a time.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from . import vectors as vec
from .changes import HashPolicy, file_changes
from .errors import LibraryMismatchError, LibraryNotFoundError
from .journal import commit_files, recover
from .load import CATALOG_NAME, SEGMENTS_NAME, VECTORS_NAME, LoadedLibrary, load_library
from .manifest import MANIFEST_NAME, Manifest, facts_of
from .schema import (
    SCHEMA_VERSION,
    Segment,
    VideoEntry,
    catalog_frame,
    empty_catalog,
    empty_segments,
    segments_frame,
)
from .search import search_library

log = logging.getLogger(__name__)

DEFAULT_APPROXIMATE_ABOVE = 50_000


class Library:
    """A library folder loaded in memory. Create with ``Library.open``."""

    def __init__(self, path: Path, loaded: LoadedLibrary, *, approximate_above: int) -> None:
        self.path = path
        self._manifest = loaded.manifest
        self._catalog = loaded.catalog
        self._segments = loaded.segments
        self._index = loaded.index
        self._next_segment_id = loaded.manifest.next_segment_id
        self._approximate_above = approximate_above
        self._dirty: set[str] = set()

    # ----- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        embedder_id: str | None = None,
        dimension: int | None = None,
        approximate_above: int = DEFAULT_APPROXIMATE_ABOVE,
    ) -> Library:
        """Open (and check) the library at ``path``; with ``create=True`` make it if absent.

        A commit interrupted by a crash is finished (or its temp files removed) first.

        Args:
            path: the library folder.
            create: make an empty library when the folder holds none (needs embedder_id and
                dimension).
            embedder_id, dimension: when given, must equal the library's.
            approximate_above: above this many vectors the index becomes HNSW.

        Raises:
            LibraryNotFoundError: no library there and ``create`` is False.
            LibraryCorruptError: damaged or inconsistent files (the message says how to
                rebuild).
            LibraryMismatchError: built with another embedder id, dimension or schema.
        """
        folder = Path(path)
        if approximate_above < 0:
            raise ValueError(f"approximate_above must be >= 0, got {approximate_above}")
        if folder.is_dir():
            recover(folder)
        if create and not (folder / MANIFEST_NAME).exists():
            _create_empty(folder, embedder_id=embedder_id, dimension=dimension)
        if not folder.is_dir():
            raise LibraryNotFoundError(
                f"no library at {folder} (folder does not exist); open it with create=True"
            )
        library = cls(folder, load_library(folder), approximate_above=approximate_above)
        library._check_expected(embedder_id=embedder_id, dimension=dimension)
        return library

    def _check_expected(self, *, embedder_id: str | None, dimension: int | None) -> None:
        m = self._manifest
        if (embedder_id is not None and embedder_id != m.embedder_id) or (
            dimension is not None and dimension != m.dimension
        ):
            raise LibraryMismatchError(
                f"library {self.path} was built with embedder {m.embedder_id!r} (dimension "
                f"{m.dimension}), not {embedder_id!r} (dimension {dimension}); use that "
                f"embedder, or re-embed every caption with index.rebuild_vectors("
                f"{str(self.path)!r}, embedder)"
            )

    # ----- reading -------------------------------------------------------------------------

    @property
    def catalog(self) -> pl.DataFrame:
        """One row per video file (``CATALOG_SCHEMA``), including staged changes."""
        return self._catalog

    @property
    def segments(self) -> pl.DataFrame:
        """All segments (``SEGMENTS_SCHEMA``), including staged changes."""
        return self._segments

    @property
    def manifest(self) -> Manifest:
        """The manifest of the last commit."""
        return self._manifest

    @property
    def embedder_id(self) -> str:
        return self._manifest.embedder_id

    @property
    def dimension(self) -> int:
        return self._manifest.dimension

    @property
    def index_kind(self) -> str:
        """'flat' (exact) or 'hnsw' (approximate) for the in-memory index."""
        return vec.kind_of(self._index) or "unknown"

    @property
    def has_uncommitted_changes(self) -> bool:
        return bool(self._dirty)

    def entry(self, video_id: str) -> dict[str, object] | None:
        """The catalog row of ``video_id`` as a dict, or None."""
        rows = self._catalog.filter(pl.col("video_id") == video_id)
        return rows.row(0, named=True) if rows.height else None

    def segments_of(self, video_id: str) -> pl.DataFrame:
        """The segments of one video, in time order."""
        return self._segments.filter(pl.col("video_id") == video_id).sort("start_seconds")

    def failures(self) -> pl.DataFrame:
        """Catalog rows whose status is not "ok" (path, status, error_message, ...)."""
        return self._catalog.filter(pl.col("status") != "ok").select(
            "video_id", "path", "status", "error_message"
        )

    def changes(
        self, paths: Sequence[str | os.PathLike[str]], *, hash_policy: HashPolicy = "when-changed"
    ) -> pl.DataFrame:
        """Compare files found on disk with the catalog; see ``index.file_changes``."""
        return file_changes(self._catalog, paths, hash_policy=hash_policy)

    def search(
        self,
        query_vector: np.ndarray,
        k: int = 10,
        *,
        video_id: str | None = None,
        merge_gap_seconds: float | None = 1.0,
        min_score: float | None = None,
    ) -> pl.DataFrame:
        """The top-``k`` hits for a query vector ``[D]`` as merged time spans, best first.

        Args:
            query_vector: float ``[D]`` (normalised here), from the library's embedder.
            k: hits to fetch; at most ``k`` spans come back (fewer when hits merge).
            video_id: search one video only (exact).
            merge_gap_seconds: merge same-video hits that overlap or lie this close; None
                returns every hit as its own span.
            min_score: ignore hits below this cosine score.

        Raises:
            KeyError: ``video_id`` is not in the library.
            ValueError: the query has another dimension or is not finite.

        Returns:
            DataFrame with rank, video_id, path, start_seconds, end_seconds, score, caption,
            captions, segment_ids, duration_seconds (``index.search.SPAN_COLUMNS``).
        """
        if video_id is not None and self.entry(video_id) is None:
            raise KeyError(f"video {video_id!r} is not in library {self.path}")
        query = vec.normalize_vectors(np.asarray(query_vector).reshape(1, -1), self.dimension)[0]
        return search_library(
            self._index,
            self._segments,
            self._catalog,
            query,
            k,
            video_id=video_id,
            merge_gap_seconds=merge_gap_seconds,
            min_score=min_score,
        )

    # ----- staging changes -----------------------------------------------------------------

    def upsert_video(
        self,
        entry: VideoEntry,
        segments: Sequence[Segment] | pl.DataFrame = (),
        vectors: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stage ``entry`` with its segments and vectors, replacing any previous ones.

        Args:
            entry: the catalog row.
            segments: its time spans with captions (``Segment``s or a DataFrame).
            vectors: float ``[len(segments), D]`` embeddings of the captions (normalised here).

        Returns:
            The int64 segment ids given to the new segments (also their faiss ids).

        Raises:
            ValueError: vectors missing, of the wrong shape, or non-finite; bad spans.
        """
        new_ids = np.arange(self._next_segment_id, self._next_segment_id + len(segments))
        seg_rows = segments_frame(entry.video_id, segments, new_ids.tolist())
        x = self._checked_vectors(vectors, seg_rows.height, entry.video_id)
        self._drop_video(entry.video_id)
        self._catalog = pl.concat([self._catalog, catalog_frame([entry])])
        if seg_rows.height:
            self._segments = pl.concat([self._segments, seg_rows])
            self._index.add_with_ids(x, new_ids.astype(np.int64))
            self._next_segment_id += seg_rows.height
        self._dirty |= {"catalog", "segments", "vectors"}
        return new_ids.astype(np.int64)

    def update_entry(self, entry: VideoEntry) -> None:
        """Stage a new catalog row for a known video, keeping its segments and vectors.

        Use it to record a failed re-ingest without losing what was indexed before, or a new
        mtime for a file whose content did not change.

        Raises:
            KeyError: ``entry.video_id`` is not in the catalog.
        """
        if self.entry(entry.video_id) is None:
            raise KeyError(f"video {entry.video_id!r} is not in library {self.path}")
        others = self._catalog.filter(pl.col("video_id") != entry.video_id)
        self._catalog = pl.concat([others, catalog_frame([entry])])
        self._dirty.add("catalog")

    def remove_video(self, video_id: str) -> bool:
        """Stage removal of a video's row, segments and vectors; False if it was absent."""
        if self.entry(video_id) is None:
            return False
        self._drop_video(video_id)
        self._dirty |= {"catalog", "segments", "vectors"}
        return True

    def _checked_vectors(self, vectors: np.ndarray | None, count: int, video_id: str) -> np.ndarray:
        if count == 0:
            return np.zeros((0, self.dimension), np.float32)
        if vectors is None:
            raise ValueError(f"video {video_id!r}: {count} segments need {count} vectors")
        x = vec.normalize_vectors(vectors, self.dimension)
        if x.shape[0] != count:
            raise ValueError(f"video {video_id!r}: {count} segments but {x.shape[0]} vectors")
        return x

    def _drop_video(self, video_id: str) -> None:
        mine = pl.col("video_id") == video_id
        old_ids = self._segments.filter(mine)["segment_id"].to_numpy()
        self._index = vec.remove_ids(self._index, old_ids)
        self._segments = self._segments.filter(~mine)
        self._catalog = self._catalog.filter(~mine)

    # ----- committing ----------------------------------------------------------------------

    def commit(self) -> None:
        """Write every staged change to disk in one atomic multi-file commit.

        After a crash at any point the folder opens as either the previous commit or this
        one. A no-op when nothing is staged.
        """
        if not self._dirty:
            return
        kind = vec.kind_for_count(self._index.ntotal, self._approximate_above)
        if kind != vec.kind_of(self._index):
            self._index = vec.convert(self._index, kind)
            self._dirty.add("vectors")
        self._catalog = self._catalog.sort("path", "video_id")
        payloads = self._payloads()
        self._manifest = _next_manifest(
            self._manifest,
            payloads,
            catalog=self._catalog,
            segments=self._segments,
            index=self._index,
            next_segment_id=self._next_segment_id,
        )
        files = {name: _writer(data) for name, data in payloads.items()}
        files[MANIFEST_NAME] = _writer(self._manifest.to_json().encode("utf-8"))
        commit_files(self.path, files)
        log.info(
            "library %s: committed %d videos, %d segments (%s)",
            self.path,
            self._catalog.height,
            self._segments.height,
            ", ".join(payloads),
        )
        self._dirty.clear()

    def _payloads(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if "catalog" in self._dirty:
            out[CATALOG_NAME] = _parquet_bytes(self._catalog)
        if "segments" in self._dirty:
            out[SEGMENTS_NAME] = _parquet_bytes(self._segments)
        if "vectors" in self._dirty:
            out[VECTORS_NAME] = vec.to_bytes(self._index)
        return out

    def __repr__(self) -> str:
        return (
            f"Library({str(self.path)!r}, videos={self._catalog.height}, "
            f"segments={self._segments.height}, embedder={self.embedder_id!r}, "
            f"index={self.index_kind})"
        )


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _writer(data: bytes):  # noqa: ANN202 - a journal.Writer
    return lambda f: f.write(data)


def _next_manifest(
    old: Manifest,
    payloads: dict[str, bytes],
    *,
    catalog: pl.DataFrame,
    segments: pl.DataFrame,
    index: faiss.IndexIDMap2,
    next_segment_id: int,
) -> Manifest:
    files = dict(old.files)
    files.update({name: facts_of(data) for name, data in payloads.items()})
    return replace(
        old,
        index_kind=vec.kind_of(index) or "unknown",
        video_count=catalog.height,
        segment_count=segments.height,
        vector_count=int(index.ntotal),
        next_segment_id=next_segment_id,
        updated_at=datetime.now(timezone.utc).isoformat(),
        files=files,
    )


def write_library(
    folder: Path,
    *,
    embedder_id: str,
    catalog: pl.DataFrame,
    segments: pl.DataFrame,
    index: faiss.IndexIDMap2,
    next_segment_id: int,
) -> None:
    """Commit a complete library (all four files) to ``folder``, creating it if needed."""
    folder.mkdir(parents=True, exist_ok=True)
    payloads = {
        CATALOG_NAME: _parquet_bytes(catalog),
        SEGMENTS_NAME: _parquet_bytes(segments),
        VECTORS_NAME: vec.to_bytes(index),
    }
    blank = Manifest(
        schema_version=SCHEMA_VERSION,
        dimension=int(index.d),
        metric=vec.METRIC,
        embedder_id=embedder_id,
        index_kind="flat",
        video_count=0,
        segment_count=0,
        vector_count=0,
        next_segment_id=0,
        updated_at="",
    )
    manifest = _next_manifest(
        blank,
        payloads,
        catalog=catalog,
        segments=segments,
        index=index,
        next_segment_id=next_segment_id,
    )
    files = {name: _writer(data) for name, data in payloads.items()}
    files[MANIFEST_NAME] = _writer(manifest.to_json().encode("utf-8"))
    commit_files(folder, files)


def _create_empty(folder: Path, *, embedder_id: str | None, dimension: int | None) -> None:
    if not embedder_id or dimension is None or dimension <= 0:
        raise ValueError(
            f"creating library {folder} needs embedder_id and a positive dimension, got "
            f"embedder_id={embedder_id!r}, dimension={dimension!r}"
        )
    log.info("creating library %s (embedder %s, dimension %d)", folder, embedder_id, dimension)
    write_library(
        folder,
        embedder_id=embedder_id,
        catalog=empty_catalog(),
        segments=empty_segments(),
        index=vec.new_index(dimension, "flat"),
        next_segment_id=0,
    )
