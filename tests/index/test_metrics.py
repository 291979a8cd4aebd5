"""Grounding metrics against hand-computed values and a brute-force matching oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from index import Span, event_scores, grounding_scores, mean_iou, recall_at_1, temporal_iou
from index.metrics import hungarian_max


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 10), (0, 10), 1.0),
        ((0, 10), (5, 15), 5 / 15),
        ((0, 10), (10, 20), 0.0),
        ((0, 10), (2, 4), 0.2),
        ((3, 3), (3, 3), 1.0),
        ((3, 3), (0, 10), 0.0),
        (Span(0.0, 4.0), [2, 6], 2 / 6),
    ],
)
def test_temporal_iou(a, b, iou: float) -> None:
    assert temporal_iou(a, b) == pytest.approx(iou)
    assert temporal_iou(b, a) == pytest.approx(iou)


@pytest.mark.parametrize("bad", [(5, 1), (0, float("nan")), (1, 2, 3)])
def test_temporal_iou_rejects_bad_spans(bad) -> None:
    with pytest.raises(ValueError, match="span"):
        temporal_iou(bad, (0, 1))


def test_r1_and_miou() -> None:
    truths = [[(0, 10)], [(0, 10)], [(0, 10)], [(50, 60), (0, 10)], [(0, 10)]]
    preds = [
        [(0, 10), (50, 60)],  # IoU 1.0
        [(0, 6)],  # 0.6
        [(0, 4)],  # 0.4
        [(2, 10)],  # best truth: 0.8
        [],  # no answer: 0
    ]
    scores = grounding_scores(preds, truths)
    assert scores == pytest.approx({"R1@0.3": 0.8, "R1@0.5": 0.6, "R1@0.7": 0.4, "mIoU": 0.56})
    assert recall_at_1(preds, truths, iou_threshold=0.5) == pytest.approx(0.6)
    assert mean_iou(preds, truths) == pytest.approx(0.56)
    assert grounding_scores([], []) == {"R1@0.3": 0.0, "R1@0.5": 0.0, "R1@0.7": 0.0, "mIoU": 0.0}
    with pytest.raises(ValueError, match="2 prediction lists but 1 truth"):
        mean_iou([[], []], [[]])


def test_event_scores_one_to_one() -> None:
    truth = [(0, 10), (10, 20)]
    # one wide prediction overlaps both truths but may satisfy only one
    wide = event_scores([(0, 20)], truth, iou_threshold=0.5)
    assert (wide.precision, wide.recall) == (1.0, 0.5)
    assert len(wide.matches) == 1 and wide.matches[0][2] == pytest.approx(0.5)
    exact = event_scores([(10, 20), (0, 10), (30, 40)], truth, iou_threshold=0.7)
    assert (exact.precision, exact.recall) == (pytest.approx(2 / 3), 1.0)
    assert exact.f1 == pytest.approx(0.8)
    assert event_scores([], [], iou_threshold=0.5).f1 == 1.0
    assert event_scores([], truth).recall == 0.0
    with pytest.raises(ValueError, match="matching must be"):
        event_scores([], [], matching="best")  # type: ignore[arg-type]


def test_hungarian_beats_greedy_where_greedy_is_suboptimal() -> None:
    # greedy takes p0-t0 (IoU 0.905) first and leaves p1 only t1 (0.42); optimal matches
    # p0-t1 (0.74) and p1-t0 (0.7)
    truth = [(0, 10), (2, 12)]
    preds = [(0.5, 10.5), (0, 7)]
    greedy = event_scores(preds, truth, iou_threshold=0.5, matching="greedy")
    optimal = event_scores(preds, truth, iou_threshold=0.5, matching="hungarian")
    assert greedy.recall == 0.5
    assert optimal.recall == 1.0


def test_hungarian_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        n, m = (int(v) for v in rng.integers(1, 6, size=2))
        w = np.round(rng.random((n, m)) * 4) / 4
        rows, cols = hungarian_max(w)
        assert len(set(rows)) == len(rows) == min(n, m) and len(set(cols)) == len(cols)
        if n <= m:
            best = max(
                sum(w[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)
            )
        else:
            best = max(
                sum(w[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m)
            )
        assert w[rows, cols].sum() == pytest.approx(best)


def test_event_scores_with_labels_count_only_pairs_that_say_the_same() -> None:
    truth = [(0, 10), (10, 20)]
    both = event_scores([(0, 10), (10, 20)], truth, labels=(["a red circle enters", "x"], ["a red circle enters", "y"]))
    assert both.recall == 0.5 and both.matches == ((0, 0, 1.0),)
    # A label match does not excuse a span miss, and a wrong label does not take a right one's place.
    assert event_scores([(30, 40)], truth, labels=(["y"], ["x", "y"])).recall == 0.0
    swapped = event_scores([(0, 10), (10, 20)], truth, labels=(["y", "x"], ["x", "y"]))
    assert swapped.recall == 0.0
    with pytest.raises(ValueError, match="labels"):
        event_scores([(0, 10)], truth, labels=(["a"], ["a"]))
