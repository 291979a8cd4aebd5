"""Tasks agree with the true events and the pixels, follow the documented formats, and are
never ambiguous."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from recipe.scene import OBJECT_COLOUR_NAMES, OBJECT_COLOURS, SHAPES, Scene
from recipe.tasks import (
    ABSENT_ANSWER,
    AGGREGATE_COUNTS,
    DEFAULT_TASK_KINDS,
    GROUNDING_TEMPLATES,
    OBJECT_KINDS,
    TASK_KINDS,
    Task,
    make_tasks,
)
from recipe.world import WorldParams, make_scene, render_frames

PARAMS = WorldParams(size_px=96, min_seconds=10.0, max_seconds=60.0)
SPAN = re.compile(r"from (\d+\.\d) to (\d+\.\d) seconds", re.IGNORECASE)
CAPTION_LINE = re.compile(r"^From (\d+\.\d) to (\d+\.\d) seconds: (the .+\.)$")


@pytest.fixture(scope="module")
def drawn() -> list[tuple[Scene, list[Task]]]:
    out = []
    for seed in range(12):
        scene = make_scene(seed, PARAMS)
        out.append((scene, make_tasks(scene, seed=seed, per_kind=6)))
    return out


def _of(drawn: list[tuple[Scene, list[Task]]], kind: str) -> list[tuple[Scene, Task]]:
    return [(scene, t) for scene, tasks in drawn for t in tasks if t.kind == kind]


def test_tasks_are_deterministic_and_cover_every_kind(
    drawn: list[tuple[Scene, list[Task]]],
) -> None:
    scene = drawn[0][0]
    assert make_tasks(scene, seed=5) == make_tasks(scene, seed=5)
    assert make_tasks(scene, seed=5) != make_tasks(scene, seed=6)
    kinds = Counter(t.kind for _, tasks in drawn for t in tasks)
    assert set(kinds) == set(DEFAULT_TASK_KINDS) == set(TASK_KINDS) - {"absent"}
    with pytest.raises(ValueError, match="unknown"):
        make_tasks(scene, seed=0, kinds=("dance",))  # type: ignore[arg-type]


def test_phrasing_varies(drawn: list[tuple[Scene, list[Task]]]) -> None:
    openings = {t.question.split(" ")[0] for _, t in _of(drawn, "grounding")}
    assert len(openings) >= 4


def test_grounding_answers_are_the_unique_event_span(drawn: list[tuple[Scene, list[Task]]]) -> None:
    grounding = _of(drawn, "grounding")
    assert len(grounding) > 30
    for scene, task in grounding:
        (index,) = task.event_indices
        event = scene.events[index]
        assert sum(e.query == event.query for e in scene.events) == 1
        assert event.subject.lower() in task.question.lower()
        assert task.answer == f"From {event.start_seconds:.1f} to {event.end_seconds:.1f} seconds."
        start, end = (float(x) for x in SPAN.search(task.answer).groups())
        assert (start, end) == (event.start_seconds, event.end_seconds) == task.spans[0]


def test_no_ambiguous_questions_over_many_scenes() -> None:
    for seed in range(40):
        scene = make_scene(seed, WorldParams(min_seconds=20.0, max_seconds=120.0))
        counts = Counter(e.query for e in scene.events)
        tasks = make_tasks(scene, seed=seed, per_kind=10, kinds=("grounding", "order"))
        for task in tasks:
            assert all(counts[scene.events[i].query] == 1 for i in task.event_indices)
        questions = [t.question for t in tasks]
        assert len(questions) == len(set(questions))


def test_absent_events_swap_one_attribute_for_a_description_no_object_has() -> None:
    """Each absent question is a true object event's question (any grounding template) with the
    subject's colour or its shape changed, never both, to a (colour, shape) that no object of the
    scene ever shows, so no event of the scene has its query; swaps of each attribute occur."""
    swapped: Counter[str] = Counter()
    for seed in range(30):
        scene = make_scene(seed, PARAMS)
        described = {(c, t.shape) for t in scene.objects for c in t.colours}
        asked = [e for e in scene.events if e.kind in OBJECT_KINDS and sum(f.query == e.query for f in scene.events) == 1]
        tasks = make_tasks(scene, seed=seed, per_kind=4, kinds=("absent",))
        assert tasks == make_tasks(scene, seed=seed, per_kind=4, kinds=("absent",))
        assert len(tasks) == min(4, len(asked))
        for task in tasks:
            assert task.answer == ABSENT_ANSWER and task.spans == () and task.event_indices == ()
            sources = [
                (e, colour, shape)
                for e in asked for colour in OBJECT_COLOUR_NAMES for shape in SHAPES for template in GROUNDING_TEMPLATES
                if task.question == template.format(s=f"the {colour} {shape}", S=f"The {colour} {shape}",
                                                    b=e.predicate_base, p=e.predicate)
            ]
            assert sources and all((colour, shape) not in described for _, colour, shape in sources), task.question
            one_swap = [(e, colour, shape) for e, colour, shape in sources
                        if (f"the {colour} " in e.subject) != e.subject.endswith(f" {shape}")]
            assert one_swap, task.question
            e, colour, shape = one_swap[0]
            swapped["shape" if f"the {colour} " in e.subject else "colour"] += 1
            swapped["crossed"] += any(colour == c for c, _ in described) and any(shape == s for _, s in described)
    assert swapped["shape"] > 5 and swapped["colour"] > 5 and swapped["crossed"] > 5


def test_dense_captions_list_every_event_in_the_documented_format(
    drawn: list[tuple[Scene, list[Task]]],
) -> None:
    for scene, task in _of(drawn, "caption"):
        lines = task.answer.split("\n")
        assert len(lines) == len(scene.events)
        for line, event in zip(lines, scene.events, strict=True):
            start, end, caption = CAPTION_LINE.match(line).groups()
            assert (float(start), float(end), caption) == (
                event.start_seconds,
                event.end_seconds,
                event.caption,
            )


def _background_from_events(scene: Scene, seconds: float) -> str:
    colour = scene.background.colours[0]
    for e in scene.events:
        if e.kind == "background" and e.end_seconds <= seconds:
            colour = e.value
    return colour


def _text_from_events(scene: Scene, seconds: float) -> str | None:
    shown = [
        e.value
        for e in scene.events
        if e.kind == "text" and e.start_seconds < seconds < e.end_seconds
    ]
    return shown[0] if shown else None


def test_timestamped_answers_agree_with_events_and_pixels(
    drawn: list[tuple[Scene, list[Task]]],
) -> None:
    qa = _of(drawn, "qa")
    assert len(qa) > 30
    for scene, task in qa:
        t = task.at_seconds
        assert f"at {t:.1f} seconds" in task.question.lower()
        question = task.question.lower()
        if "background" in question:
            assert task.answer == f"{_background_from_events(scene, t).capitalize()}."
        elif "text" in question or "words" in question:
            text = _text_from_events(scene, t)
            assert task.answer == (f"{text}." if text else "No text.")
        elif "what colour is the" in question:
            frame = render_frames(scene, np.array([t]))[0]
            colour = task.answer[:-1].lower()
            assert (frame == OBJECT_COLOURS[colour]).all(axis=-1).sum() > 5, task
        elif not question.startswith("how many"):
            frame = render_frames(scene, np.array([t]))[0]
            listed = re.findall(r"\ban? (\w+) \w+", task.answer.lower())
            for colour in listed:
                assert (frame == OBJECT_COLOURS[colour]).all(axis=-1).sum() > 5, task
            text = _text_from_events(scene, t)
            if question.startswith(("what is on screen", "what can be seen", "at")):
                expected = f'the text "{text}".' if text else ""
                assert task.answer.endswith(expected) or (
                    not listed and task.answer == expected.capitalize()
                )
                assert task.answer != "Nothing." or (not listed and text is None)
            else:
                assert '"' not in task.answer


def test_counts_match_the_events(drawn: list[tuple[Scene, list[Task]]]) -> None:
    words = "zero one two three four five six seven eight nine ten eleven twelve".split()
    for scene, task in _of(drawn, "count"):
        count = words.index(task.answer[:-1].lower())
        assert count == len(task.event_indices)
        if task.question not in {q for q, _ in AGGREGATE_COUNTS}:
            queries = {scene.events[i].query for i in task.event_indices}
            assert len(queries) == 1
            assert count == sum(e.query in queries for e in scene.events)


def test_order_answers_follow_the_event_times(drawn: list[tuple[Scene, list[Task]]]) -> None:
    orders = _of(drawn, "order")
    assert len(orders) > 20
    for scene, task in orders:
        first, second = (scene.events[i] for i in task.event_indices)
        assert first.end_tenths < second.start_tenths
        if task.answer in ("Before.", "After."):
            before = task.question.index(first.subject) < task.question.index(" before or after ")
            assert task.answer == ("Before." if before else "After.")
        else:
            expected = first if "first" in task.question else second
            assert task.answer.lower() == expected.caption.lower()


def test_offset_samples_are_windows_with_shifted_times() -> None:
    import index
    from recipe.data import SampleSpec, make_sample

    world = WorldParams(min_seconds=6.0, max_seconds=12.0)
    kinds = ("grounding", "qa", "caption", "count", "order")
    plain = SampleSpec(frame_px=64, world=world, questions=12, kinds=kinds)
    shifted = SampleSpec(frame_px=64, world=world, questions=12, kinds=kinds,
                         max_offset_seconds=300.0, offset_probability=1.0)
    seen_kinds: set[str] = set()
    for seed in range(6):
        a, b = make_sample(seed, plain), make_sample(seed, shifted)
        offset = float(b.seconds[0] - a.seconds[0])
        assert 0 < offset <= 300 and round(offset, 1) == pytest.approx(offset)
        np.testing.assert_allclose(b.seconds - a.seconds, offset)
        np.testing.assert_array_equal(a.frames, b.frames)
        assert [t.kind for t in a.tasks] == [t.kind for t in b.tasks]
        for ta, tb in zip(a.tasks, b.tasks, strict=True):
            seen_kinds.add(ta.kind)
            if ta.spans:
                np.testing.assert_allclose(np.subtract(tb.spans, ta.spans), offset)
            if ta.kind in ("grounding", "caption"):
                parse = index.parse_dense_captions if ta.kind == "caption" else index.parse_spans
                got = [(s.start_seconds, s.end_seconds) for s in parse(tb.answer, duration_seconds=1e6)]
                np.testing.assert_allclose(got, [(s + offset, e + offset) for s, e in ta.spans], atol=1e-6)
            elif ta.kind == "qa":
                assert tb.at_seconds == pytest.approx(ta.at_seconds + offset)
                assert f"{tb.at_seconds:.1f} seconds" in tb.question and tb.answer == ta.answer
            else:
                assert (tb.question, tb.answer) == (ta.question, ta.answer)
    assert seen_kinds == set(kinds)


@pytest.mark.parametrize(
    ("span", "snapped"),
    [
        ((1.4, 7.1), (1.3, 7.3)),  # each end to its nearest pair time
        ((0.0, 0.4), (0.3, 1.3)),  # at the first pair, before its time: it and the next
        ((7.0, 7.4), (6.3, 7.3)),  # at the last pair: it and the one before
        ((3.9, 4.1), (3.3, 4.3)),  # both ends nearest one pair, the middle before it: that one and the one before
        ((4.4, 4.6), (4.3, 5.3)),  # ... the middle after it: that one and the next
    ],
)
def test_spans_snap_to_the_printed_frame_pair_times(span, snapped) -> None:
    from recipe.tasks import snap_span

    stamps = [0.3, 1.3, 2.3, 3.3, 4.3, 5.3, 6.3, 7.3]
    assert snap_span(*span, stamps) == pytest.approx(snapped)
    assert snap_span(*span, [2.3]) == span  # one pair: nothing to snap to


def test_snapped_samples_answer_with_the_times_printed_before_the_frames() -> None:
    import index
    from recipe.data import SampleSpec, make_sample
    from vidlm.processor import frame_pair_seconds, timestamp_text

    world = WorldParams(min_seconds=6.0, max_seconds=20.0)
    kinds = ("grounding", "qa", "caption", "count", "order")
    for offset in (0.0, 300.0):
        plain = SampleSpec(frame_px=64, world=world, questions=12, kinds=kinds, max_offset_seconds=offset,
                           offset_probability=1.0)
        snapped = SampleSpec(frame_px=64, world=world, questions=12, kinds=kinds, max_offset_seconds=offset,
                             offset_probability=1.0, snap_spans=True)
        for seed in range(4):
            a, b = make_sample(seed, plain), make_sample(seed, snapped)
            printed = [timestamp_text(t) for t in frame_pair_seconds(b.seconds)]
            for ta, tb in zip(a.tasks, b.tasks, strict=True):
                assert ta.spans == tb.spans and ta.question == tb.question
                if ta.kind not in ("grounding", "caption"):
                    assert tb.answer == ta.answer
                    continue
                parse = index.parse_dense_captions if ta.kind == "caption" else index.parse_spans
                got = [s.as_tuple() for s in parse(tb.answer, duration_seconds=1e6)]
                assert len(got) == len(ta.spans)
                for (start, end), (true_start, true_end) in zip(got, ta.spans, strict=True):
                    assert timestamp_text(start) in printed and timestamp_text(end) in printed and start < end
                    assert abs(start - true_start) <= 1.0 and abs(end - true_end) <= 1.0  # pairs ~1 s apart at 2 fps
