"""Temporal grounding metrics: IoU, R1@IoU, mIoU, and event precision/recall.

Unusual here: two zero-length spans at the same time have IoU 1 (a point answer that hits a
point event), and event matching is one-to-one, either greedy (best IoU first) or optimal
(Hungarian, own small implementation so numpy is the only dependency), so a single predicted
span can never satisfy two ground-truth events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Union

import numpy as np


class _HasSpan(Protocol):
    @property
    def start_seconds(self) -> float: ...

    @property
    def end_seconds(self) -> float: ...


SpanLike = Union[_HasSpan, Sequence[float]]  # noqa: UP007 - a runtime alias
DEFAULT_THRESHOLDS = (0.3, 0.5, 0.7)


def as_pair(span: SpanLike) -> tuple[float, float]:
    """(start, end) of a ``Span``-like object or a 2-sequence; ValueError otherwise."""
    if hasattr(span, "start_seconds"):
        pair = (float(span.start_seconds), float(span.end_seconds))  # type: ignore[union-attr]
    else:
        values = list(span)  # type: ignore[arg-type]
        if len(values) != 2:
            raise ValueError(f"a span needs (start, end), got {span!r}")
        pair = (float(values[0]), float(values[1]))
    if not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"a span needs finite start <= end, got {pair}")
    return pair


def temporal_iou(a: SpanLike, b: SpanLike) -> float:
    """Intersection over union of two time spans, in [0, 1]."""
    (s1, e1), (s2, e2) = as_pair(a), as_pair(b)
    inter = max(0.0, min(e1, e2) - max(s1, s2))
    union = max(e1, e2) - min(s1, s2)
    if union == 0.0:  # both are the same point
        return 1.0
    return inter / union


def iou_matrix(predicted: Sequence[SpanLike], truth: Sequence[SpanLike]) -> np.ndarray:
    """``[len(predicted), len(truth)]`` float64 IoUs."""
    out = np.zeros((len(predicted), len(truth)))
    for i, p in enumerate(predicted):
        for j, t in enumerate(truth):
            out[i, j] = temporal_iou(p, t)
    return out


def _top1_ious(
    predictions: Sequence[Sequence[SpanLike]], truths: Sequence[Sequence[SpanLike]]
) -> np.ndarray:
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} prediction lists but {len(truths)} truth lists")
    ious = []
    for preds, truth in zip(predictions, truths, strict=True):
        if not preds or not truth:
            ious.append(0.0)
            continue
        ious.append(max(temporal_iou(preds[0], t) for t in truth))
    return np.asarray(ious, dtype=np.float64)


def grounding_scores(
    predictions: Sequence[Sequence[SpanLike]],
    truths: Sequence[Sequence[SpanLike]],
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """R1@IoU for each threshold and mIoU over queries.

    Args:
        predictions: per query, predicted spans ranked best first (only the first counts;
            an empty list scores 0).
        truths: per query, the ground-truth spans (the best-matching one counts).

    Returns:
        ``{"R1@0.3": .., "R1@0.5": .., "R1@0.7": .., "mIoU": ..}`` as fractions in [0, 1];
        all 0.0 when there are no queries.
    """
    ious = _top1_ious(predictions, truths)
    scores = {f"R1@{t:g}": float((ious >= t).mean()) if len(ious) else 0.0 for t in thresholds}
    scores["mIoU"] = float(ious.mean()) if len(ious) else 0.0
    return scores


def recall_at_1(
    predictions: Sequence[Sequence[SpanLike]],
    truths: Sequence[Sequence[SpanLike]],
    *,
    iou_threshold: float = 0.5,
) -> float:
    """Fraction of queries whose top prediction reaches ``iou_threshold`` with a true span."""
    ious = _top1_ious(predictions, truths)
    return float((ious >= iou_threshold).mean()) if len(ious) else 0.0


def mean_iou(
    predictions: Sequence[Sequence[SpanLike]], truths: Sequence[Sequence[SpanLike]]
) -> float:
    """Mean top-1 IoU over queries."""
    ious = _top1_ious(predictions, truths)
    return float(ious.mean()) if len(ious) else 0.0


@dataclass(frozen=True)
class EventScores:
    """Precision/recall/F1 of predicted events against true ones at one IoU threshold.

    ``matches`` holds (predicted index, true index, IoU) for each matched pair.
    """

    precision: float
    recall: float
    f1: float
    matches: tuple[tuple[int, int, float], ...]


def event_scores(
    predicted: Sequence[SpanLike],
    truth: Sequence[SpanLike],
    *,
    iou_threshold: float = 0.5,
    matching: Literal["hungarian", "greedy"] = "hungarian",
    labels: tuple[Sequence[str], Sequence[str]] | None = None,
) -> EventScores:
    """One-to-one match predicted events to true events and score the matches.

    A pair counts only with IoU >= ``iou_threshold`` and, given ``labels`` (one string per
    predicted and per true event, e.g. normalised captions), only if their labels are equal.
    "hungarian" maximises the number of such pairs (then their total IoU); "greedy" takes pairs
    by decreasing IoU. With no predictions precision is 1.0 if there is no truth either, else
    0.0 (likewise recall).
    """
    if matching not in ("hungarian", "greedy"):
        raise ValueError(f"matching must be 'hungarian' or 'greedy', got {matching!r}")
    ious = iou_matrix(predicted, truth)
    if labels is not None:
        said, true = labels
        if len(said) != len(predicted) or len(true) != len(truth):
            raise ValueError(f"labels: expected {len(predicted)} and {len(truth)}, got {len(said)} and {len(true)}")
        ious = np.where(np.equal.outer(np.asarray(said, dtype=object), np.asarray(true, dtype=object)), ious, 0.0)
    pairs = _greedy(ious, iou_threshold) if matching == "greedy" else _optimal(ious, iou_threshold)
    n = len(pairs)
    precision = n / len(predicted) if len(predicted) else float(not len(truth))
    recall = n / len(truth) if len(truth) else float(not len(predicted))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    matches = tuple((i, j, float(ious[i, j])) for i, j in sorted(pairs))
    return EventScores(precision, recall, f1, matches)


def _greedy(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    order = np.argsort(-ious, axis=None, kind="stable")
    used_p: set[int] = set()
    used_t: set[int] = set()
    pairs = []
    for flat in order:
        i, j = np.unravel_index(flat, ious.shape)
        if ious[i, j] < threshold:
            break
        if i not in used_p and j not in used_t:
            used_p.add(int(i))
            used_t.add(int(j))
            pairs.append((int(i), int(j)))
    return pairs


def _optimal(ious: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    if ious.size == 0:
        return []
    # Weight: a qualifying pair is worth 1 (count first) plus its IoU / (n + 1) (tie-break).
    ok = ious >= threshold
    weight = np.where(ok, 1.0 + ious / (min(ious.shape) + 1.0), 0.0)
    rows, cols = hungarian_max(weight)
    return [(i, j) for i, j in zip(rows, cols, strict=True) if ok[i, j]]


def hungarian_max(weight: np.ndarray) -> tuple[list[int], list[int]]:
    """Maximum-weight one-to-one assignment of a ``[n, m]`` matrix (rows, cols lists).

    The O(n^2 m) potentials algorithm on the cost ``-weight``, transposed so rows <= cols.
    """
    transposed = weight.shape[0] > weight.shape[1]
    cost = -(weight.T if transposed else weight)
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, dtype=int)  # match[j] = row (1-based) assigned to column j
    for i in range(1, n + 1):
        match[0], j0 = i, 0
        minv = np.full(m + 1, np.inf)
        way = np.zeros(m + 1, dtype=int)
        used = np.zeros(m + 1, dtype=bool)
        while match[j0] != 0:
            used[j0] = True
            i0 = match[j0]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = ~used[1:] & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            free = np.where(~used[1:])[0] + 1
            j1 = free[np.argmin(minv[free])]
            delta = minv[j1]
            u[match[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            match[j0] = match[j1]
            j0 = j1
    pairs = [(match[j] - 1, j - 1) for j in range(1, m + 1) if match[j]]
    if transposed:
        pairs = [(c, r) for r, c in pairs]
    pairs.sort()
    return [int(r) for r, _ in pairs], [int(c) for _, c in pairs]
