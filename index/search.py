"""Search: faiss hits -> segments joined to their video -> merged time spans.

Unusual here: hits of the same video whose spans overlap or lie within ``merge_gap_seconds``
of each other become one span (score = the best hit's, caption = the best hit's, all captions
and segment ids kept in time order), so "the dog jumps" over three adjacent 2-second windows
comes back as one 6-second span. Only the top ``k`` hits take part: fetching more to "fill up"
``k`` spans would let weak neighbours widen every span (in a small library, into whole
videos), so a search returns at most ``k`` spans, fewer when hits merged.
"""

from __future__ import annotations

import faiss
import numpy as np
import polars as pl

from . import vectors as vec

HITS_SCHEMA = pl.Schema({"segment_id": pl.Int64, "score": pl.Float32})

SPAN_COLUMNS = (
    "rank",
    "video_id",
    "path",
    "start_seconds",
    "end_seconds",
    "score",
    "caption",
    "captions",
    "segment_ids",
    "duration_seconds",
)


def search_library(
    index: faiss.IndexIDMap2,
    segments: pl.DataFrame,
    catalog: pl.DataFrame,
    query: np.ndarray,
    k: int,
    *,
    video_id: str | None = None,
    merge_gap_seconds: float | None = 1.0,
    min_score: float | None = None,
) -> pl.DataFrame:
    """The top-``k`` hits for a normalised query ``[D]``, merged into spans, best first.

    Args:
        k: hits to fetch; at most ``k`` spans come back.
        video_id: restrict to one video (exact search over its segments).
        merge_gap_seconds: merge same-video hits this close; None keeps every hit apart.
        min_score: drop hits scoring below this before merging.

    Returns:
        DataFrame with ``SPAN_COLUMNS``: rank (1-based), video_id, path, start_seconds,
        end_seconds, score (inner product = cosine), caption (best hit's), captions and
        segment_ids (all merged hits, time order), duration_seconds (of the video).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if merge_gap_seconds is not None and merge_gap_seconds < 0:
        raise ValueError(f"merge_gap_seconds must be >= 0 or None, got {merge_gap_seconds}")
    if video_id is None:
        scores, ids = vec.search(index, query, k)
    else:
        subset = segments.filter(pl.col("video_id") == video_id)["segment_id"].to_numpy()
        scores, ids = vec.search_subset(index, query, subset, k)
    hits = pl.DataFrame({"segment_id": ids, "score": scores}, schema=HITS_SCHEMA)
    if min_score is not None:
        hits = hits.filter(pl.col("score") >= min_score)
    joined = join_hits(hits, segments, catalog)
    spans = merge_hits(joined, gap_seconds=merge_gap_seconds)
    return (
        spans.sort(["score", "video_id", "start_seconds"], descending=[True, False, False])
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
        .select(SPAN_COLUMNS)
    )


def join_hits(hits: pl.DataFrame, segments: pl.DataFrame, catalog: pl.DataFrame) -> pl.DataFrame:
    """Hits (segment_id, score) with their segment's span, caption, video path and duration."""
    videos = catalog.select("video_id", "path", "duration_seconds")
    return hits.join(segments, on="segment_id", how="inner").join(videos, on="video_id", how="left")


def merge_hits(hits: pl.DataFrame, *, gap_seconds: float | None) -> pl.DataFrame:
    """Merge overlapping/adjacent hits of the same video into spans (see module docstring).

    ``hits`` needs segment_id, score, video_id, start_seconds, end_seconds, caption, path and
    duration_seconds. With ``gap_seconds=None`` every hit is its own span.
    """
    ordered = hits.sort("video_id", "start_seconds", "end_seconds")
    if gap_seconds is None:
        ordered = ordered.with_columns(pl.int_range(pl.len()).alias("span"))
    else:
        previous_end = pl.col("end_seconds").cum_max().shift(1).over("video_id")
        starts_new = previous_end.is_null() | (pl.col("start_seconds") > previous_end + gap_seconds)
        ordered = ordered.with_columns(starts_new.cum_sum().alias("span"))
    return ordered.group_by("span", maintain_order=True).agg(
        pl.col("video_id").first(),
        pl.col("path").first(),
        pl.col("start_seconds").min(),
        pl.col("end_seconds").max(),
        pl.col("score").max(),
        pl.col("caption").sort_by("score", descending=True).first(),
        pl.col("caption").alias("captions"),
        pl.col("segment_id").alias("segment_ids"),
        pl.col("duration_seconds").first(),
    )
