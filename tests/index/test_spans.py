"""Span parser: every format models write, dense caption lines, clamping, and garbage."""

from __future__ import annotations

import random
import string

import pytest

from index import Span, parse_dense_captions, parse_spans, parse_time


def pairs(text: str, duration: float | None = None) -> list[tuple[float, float]]:
    return [s.as_tuple() for s in parse_spans(text, duration_seconds=duration)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Qwen-style timestamp markers
        ("The dog jumps <12.3 seconds> - <15.0 seconds>.", [(12.3, 15.0)]),
        ("<3.0 seconds><4.5 seconds>", [(3.0, 4.5)]),
        ("It starts at <12.3 seconds> and ends at <15.0 seconds>.", [(12.3, 15.0)]),
        ("<1 seconds> a <3 seconds> b <5 seconds>", [(1.0, 3.0), (5.0, 5.0)]),
        # keywords
        ("It happens from 12.3 to 15 seconds.", [(12.3, 15.0)]),
        ("from 12.3 to 15.0.", [(12.3, 15.0)]),
        ("From 12.3s until 15s", [(12.3, 15.0)]),
        ("between 12.3 and 15.0 s", [(12.3, 15.0)]),
        ("Between 2 and 4 seconds the cup falls", [(2.0, 4.0)]),
        ("from 1 to 2 minutes", [(60.0, 120.0)]),
        ("from 1 min to 90 s", [(60.0, 90.0)]),
        # dash ranges with units
        ("12.3-15.0s", [(12.3, 15.0)]),
        ("12.3 - 15.0 seconds", [(12.3, 15.0)]),
        ("at 12.3s–15.0s and again 20 - 22 sec", [(12.3, 15.0), (20.0, 22.0)]),
        ("12.3 to 15.0 seconds", [(12.3, 15.0)]),
        # clock times
        ("from 01:02 to 01:05.5", [(62.0, 65.5)]),
        ("00:12 - 00:18", [(12.0, 18.0)]),
        ("from 00:01:02.50 to 00:01:10", [(62.5, 70.0)]),
        ("1:02:03.25-1:02:04", [(3723.25, 3724.0)]),
        # points
        ("The whiteboard is clearest at 12:30.", [(750.0, 750.0)]),
        ("at 12.3 seconds the ball drops", [(12.3, 12.3)]),
        # JSON
        ("[[1, 2], [3, 4]]", [(1.0, 2.0), (3.0, 4.0)]),
        ("[1.5, 3]", [(1.5, 3.0)]),
        ('[{"start": 1, "end": 2}, {"start": "00:03", "end": "4.5s"}]', [(1.0, 2.0), (3.0, 4.5)]),
        ('{"relevant_windows": [[0, 10], [20, 30]]}', [(0.0, 10.0), (20.0, 30.0)]),
        ('Sure:\n```json\n{"spans": [{"timestamp": [5, 7]}]}\n```', [(5.0, 7.0)]),
        ('[{"start_time": 2.5, "end_time": 3}]', [(2.5, 3.0)]),
        # bracketed plain numbers
        ("(12.5 - 18.0)", [(12.5, 18.0)]),
        # reversed spans are put in order
        ("from 15 to 12 seconds", [(12.0, 15.0)]),
    ],
)
def test_formats(text: str, expected: list[tuple[float, float]]) -> None:
    got = pairs(text)
    assert len(got) == len(expected), got
    for (s, e), (xs, xe) in zip(got, expected, strict=True):
        assert s == pytest.approx(xs) and e == pytest.approx(xe)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "I don't know.",
        "I have 3 apples and 4 oranges.",
        "It costs 12-15 dollars",
        "version 1.2-3.4 released",
        "from 3 to 4 meters away",
        "between 2 and 3 dogs",
        "from 5 to 10 people came",
        "at 3 the dog barks",
        "[1, 2, 3]",
        '{"answer": "yes"}',
        "[[[[[[[[",
        "}}}]]] {[ ]",
        "<seconds> <12.3> seconds",
        "99:99 - 88:77",
        "\x00\x01\ufffd",
        "from . to . seconds",
    ],
)
def test_garbage_gives_no_span(text: str) -> None:
    assert parse_spans(text) == []


@pytest.mark.parametrize("value", [None, 12, 3.5, b"from 1 to 2 seconds", ["x"], {"a": 1}])
def test_non_strings_give_no_span(value: object) -> None:
    assert parse_spans(value) == []  # type: ignore[arg-type]


def test_random_text_never_raises() -> None:
    rng = random.Random(7)
    alphabet = string.printable + "<>[]{}:–—°"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        for span in parse_spans(text, duration_seconds=50.0):
            assert 0 <= span.start_seconds <= span.end_seconds <= 50.0


def test_dense_caption_lines() -> None:
    text = (
        "Here are the events:\n"
        "From 12.5 to 18.0 seconds: a red circle enters.\n"
        "From 18.0 to 20 seconds: it rolls from 3 to 4 meters.\n"
        "- 20.0-25.5s: the circle stops\n"
        "2. <25.5 seconds> - <30.0 seconds>: a blue square appears & fades\n"
        "[30.0 - 31.0] lights go out\n"
        "00:31 - 00:35: silence\n"
        "That is all."
    )
    spans = parse_dense_captions(text)
    assert [(s.start_seconds, s.end_seconds) for s in spans] == [
        (12.5, 18.0),
        (18.0, 20.0),
        (20.0, 25.5),
        (25.5, 30.0),
        (30.0, 31.0),
        (31.0, 35.0),
    ]
    assert [s.caption for s in spans] == [
        "a red circle enters.",
        "it rolls from 3 to 4 meters.",
        "the circle stops",
        "a blue square appears & fades",
        "lights go out",
        "silence",
    ]
    # JSON with captions counts as dense captions too
    json_text = '[{"start": 0, "end": 2, "caption": "a [red] ball"}, {"start": 2, "end": 3}]'
    assert parse_dense_captions(json_text) == [Span(0.0, 2.0, "a [red] ball")]


def test_inline_span_has_no_caption() -> None:
    assert parse_spans("The dog jumps from 12.3 to 15 seconds.") == [Span(12.3, 15.0, None)]


def test_clamping_to_duration() -> None:
    assert pairs("from 5 to 150 seconds", 100.0) == [(5.0, 100.0)]
    assert pairs("from 120 to 150 seconds", 100.0) == []
    assert pairs("[[0, 10], [95, 120], [101, 102]]", 100.0) == [(0.0, 10.0), (95.0, 100.0)]
    assert pairs("from 5 to 150 seconds", float("nan")) == [(5.0, 150.0)]


def test_spans_come_in_text_order_and_deduplicated() -> None:
    text = "Later at 30-40s, earlier from 1 to 2 seconds; again 30-40s."
    assert pairs(text) == [(30.0, 40.0), (1.0, 2.0)]


@pytest.mark.parametrize(
    ("text", "unit", "seconds"),
    [
        ("12.3", None, 12.3),
        ("2", "min", 120.0),
        ("1", "hours", 3600.0),
        ("01:30", None, 90.0),
        ("1:00:00.5", None, 3600.5),
        ("00:75", None, None),
        ("abc", None, None),
    ],
)
def test_parse_time(text: str, unit: str | None, seconds: float | None) -> None:
    assert parse_time(text, unit) == (pytest.approx(seconds) if seconds is not None else None)
