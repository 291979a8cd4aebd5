"""faiss helpers: normalised float32 vectors in an ``IndexIDMap2`` whose ids are segment ids.

Unusual here: the wrapped index is exact (``IndexFlatIP``) up to a size threshold and HNSW
(inner product) above it. HNSW cannot remove vectors, so a removal on an HNSW library rebuilds
it from its own stored vectors (``IndexHNSWFlat`` keeps them; nothing is re-embedded).
Searches restricted to one video are always exact: the video's vectors are reconstructed by id
and scored with numpy, because a filtered HNSW search can silently miss hits.
"""

from __future__ import annotations

import logging
from typing import Literal

import faiss
import numpy as np

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw"]
METRIC = "inner_product"
HNSW_NEIGHBOURS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH_MIN = 64


def normalize_vectors(vectors: np.ndarray, dimension: int) -> np.ndarray:
    """Validate float ``[N, D]`` vectors and return an L2-normalised float32 copy.

    Raises:
        ValueError: wrong rank or width, non-finite values, or an all-zero row.
    """
    x = np.asarray(vectors)
    if x.ndim != 2 or x.shape[1] != dimension:
        raise ValueError(f"vectors must have shape [N, {dimension}], got {list(x.shape)}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"vectors must be floating point, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32).copy()
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinity")
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise ValueError(f"vector row {int(np.argmax(norms == 0))} is all zeros")
    faiss.normalize_L2(x)
    return x


def new_index(dimension: int, kind: IndexKind) -> faiss.IndexIDMap2:
    """An empty inner-product index of ``kind`` wrapped so ids are caller-chosen int64."""
    if kind == "flat":
        inner = faiss.IndexFlatIP(dimension)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        raise ValueError(f"index kind must be 'flat' or 'hnsw', got {kind!r}")
    return faiss.IndexIDMap2(inner)


def kind_of(index: faiss.Index) -> IndexKind | None:
    """'flat' or 'hnsw' for an index this module built, else None."""
    if not isinstance(index, faiss.IndexIDMap2):
        return None
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexFlatIP):
        return "flat"
    if isinstance(inner, faiss.IndexHNSWFlat):
        return "hnsw"
    return None


def kind_for_count(count: int, approximate_above: int) -> IndexKind:
    """The index kind a library of ``count`` vectors should use."""
    return "hnsw" if count > approximate_above else "flat"


def stored_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """The int64 ids in ``index`` in storage order."""
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


def stored_vectors(index: faiss.IndexIDMap2) -> tuple[np.ndarray, np.ndarray]:
    """(ids ``[N]``, vectors ``[N, D]``) read back from the index itself."""
    ids = stored_ids(index)
    if index.ntotal == 0:
        return ids, np.zeros((0, index.d), dtype=np.float32)
    return ids, index.index.reconstruct_n(0, index.ntotal)


def build_index(ids: np.ndarray, vectors: np.ndarray, kind: IndexKind) -> faiss.IndexIDMap2:
    """A fresh index of ``kind`` holding ``vectors`` (already normalised) under ``ids``."""
    index = new_index(vectors.shape[1], kind)
    if len(ids):
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return index


def remove_ids(index: faiss.IndexIDMap2, ids: np.ndarray) -> faiss.IndexIDMap2:
    """``index`` without ``ids``: in place for flat, by rebuilding for HNSW."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return index
    if kind_of(index) == "flat":
        index.remove_ids(faiss.IDSelectorBatch(ids))
        return index
    all_ids, vectors = stored_vectors(index)
    keep = ~np.isin(all_ids, ids)
    log.info("rebuilding HNSW index without %d vectors (%d kept)", len(ids), int(keep.sum()))
    return build_index(all_ids[keep], vectors[keep], "hnsw")


def convert(index: faiss.IndexIDMap2, kind: IndexKind) -> faiss.IndexIDMap2:
    """``index`` as ``kind`` (unchanged when it already is)."""
    if kind_of(index) == kind:
        return index
    ids, vectors = stored_vectors(index)
    log.info("converting vector index to %s (%d vectors)", kind, len(ids))
    return build_index(ids, vectors, kind)


def search(index: faiss.IndexIDMap2, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores ``[k']``, ids ``[k']``) for one normalised query ``[D]``; k' <= k."""
    k = min(k, index.ntotal)
    if k <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    params = None
    if kind_of(index) == "hnsw":
        params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH_MIN, 2 * k))
    scores, ids = index.search(query[None, :], k, params=params)
    found = ids[0] >= 0
    return scores[0][found], ids[0][found]


def search_subset(
    index: faiss.IndexIDMap2, query: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` among ``ids`` only (scores, ids), by reconstructing their vectors."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0 or k <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    vectors = np.stack([index.reconstruct(int(i)) for i in ids])
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order].astype(np.float32), ids[order]


def to_bytes(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def from_bytes(data: bytes) -> faiss.Index:
    """Deserialize; faiss raises RuntimeError on a damaged buffer (the caller types it)."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
