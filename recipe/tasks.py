"""Training and evaluation tasks drawn from a scene's true events, with varied phrasing.

Phrasing of questions varies (several templates per task, chosen by a seeded generator); answers
are canonical so that they can be parsed and scored exactly. Times are always printed with one
decimal. Formats (``S`` = start seconds, ``E`` = end seconds, ``T`` = a time):

- grounding: "When does the red circle enter from the left?" -> ``From S to E seconds.``
- qa (timestamped): asked only at stable times (no relevant event within 0.3 s), e.g.
  "What is on screen at T seconds?" -> ``A red circle, a blue square and the text "SALE".``
  (objects left to right with "a"/"an", then the text; ``Nothing.`` when empty); "What colour is the
  background at T seconds?" -> ``Dark green.``; "What text is on screen at T seconds?" ->
  ``SALE.`` / ``No text.``; "How many objects are on screen at T seconds?" -> ``Two.``;
  "What colour is the star at T seconds?" -> ``Red.`` (only when one star is on screen).
- caption (dense grounded captions): one line per event, sorted by start, exactly
  ``From S to E seconds: the red circle enters from the left.``
- count: "How many times does the background turn green?" -> ``Two.`` (number words up to
  twenty, then digits; ``Zero.`` allowed for aggregate questions).
- absent (grounding an event that does not happen): a true object event's question with the
  object's colour or shape swapped for a description no object of the video ever has, e.g.
  "When does the blue circle enter from the left?" when the red circle does and no circle is
  ever blue -> ``It does not happen.`` Nothing but the (colour, shape) binding tells the two
  questions apart, so the model has to check which object the event is about.
- order: "Which happens first: X or Y?" -> the first event's sentence, capitalised, e.g.
  ``The red circle enters from the left.``; "Does X happen before or after Y?" ->
  ``Before.`` / ``After.``; only pairs whose spans do not overlap.

Grounding and ordering use only events whose query text occurs once in the video, so no
question has two right answers. Answers are parsed elsewhere by reading "from X to Y seconds".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from recipe.scene import OBJECT_COLOUR_NAMES, SHAPES, Event, Scene, describe_at

TaskKind = Literal["grounding", "qa", "caption", "count", "order", "absent"]
TASK_KINDS: tuple[TaskKind, ...] = ("grounding", "qa", "caption", "count", "order", "absent")
# what make_tasks draws when no kinds are named: the kinds that every stage of the built-in saw
DEFAULT_TASK_KINDS: tuple[TaskKind, ...] = ("grounding", "qa", "caption", "count", "order")
ABSENT_ANSWER = "It does not happen."
STABLE_MARGIN_TENTHS = 3
OBJECT_KINDS = frozenset(
    {"enter", "appear", "move", "change_colour", "change_size", "collide", "leave", "disappear"}
)
NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
).split()

GROUNDING_TEMPLATES = (
    "When does {s} {b}?",
    "At what time does {s} {b}?",
    "During which seconds does {s} {b}?",
    "In which part of the video does {s} {b}?",
    "Find the moment when {s} {p}.",
    "Give the start and end time of the moment {s} {p}.",
    "{S} {p}. When does this happen?",
)
SCREEN_TEMPLATES = (
    "What is on screen at {t} seconds?",
    "What can be seen at {t} seconds?",
    "At {t} seconds, what is shown?",
)
OBJECTS_TEMPLATES = (
    "Which objects are visible at {t} seconds?",
    "Which shapes are on screen at {t} seconds?",
)
BACKGROUND_TEMPLATES = (
    "What colour is the background at {t} seconds?",
    "At {t} seconds, what colour is the background?",
    "Which colour does the background have at {t} seconds?",
)
TEXT_TEMPLATES = (
    "What text is on screen at {t} seconds?",
    "What does the text on screen say at {t} seconds?",
    "Which words are shown at {t} seconds?",
)
HOW_MANY_TEMPLATES = (
    "How many objects are on screen at {t} seconds?",
    "How many shapes can be seen at {t} seconds?",
)
SHAPE_COLOUR_TEMPLATES = (
    "What colour is the {shape} at {t} seconds?",
    "At {t} seconds, what colour is the {shape}?",
)
CAPTION_TEMPLATES = (
    "Describe every event in the video with its start and end time.",
    "List all events with timestamps, one per line.",
    "Give dense captions with times for this video.",
    "What happens in this video, and when? Answer with one line per event.",
)
COUNT_TEMPLATES = ("How many times does {s} {b}?", "Count how many times {s} {p}.")
AGGREGATE_COUNTS: tuple[tuple[str, frozenset[str]], ...] = (
    ("How many times does the background change colour?", frozenset({"background"})),
    ("How many times does text appear on screen?", frozenset({"text"})),
    ("How many collisions happen in the video?", frozenset({"collide"})),
    ("How many times does an object enter the scene?", frozenset({"enter"})),
    ("How many times does an object change colour?", frozenset({"change_colour"})),
)
FIRST_TEMPLATES = ("Which happens first: {x} or {y}?", "Which comes first, {x} or {y}?")
LAST_TEMPLATES = ("Which happens later: {x} or {y}?", "Which comes last, {x} or {y}?")
BEFORE_AFTER_TEMPLATE = "Does {sx} {bx} before or after {sy} {py}?"


@dataclass(frozen=True)
class Task:
    """One question with its canonical answer.

    ``spans`` holds the true ``(start_seconds, end_seconds)`` (one for grounding, one per event
    for captions); ``at_seconds`` the asked time of a QA task; ``event_indices`` the indices
    into ``scene.events`` that the task is about.
    """

    kind: TaskKind
    question: str
    answer: str
    spans: tuple[tuple[float, float], ...] = ()
    at_seconds: float | None = None
    event_indices: tuple[int, ...] = ()


def format_seconds(seconds: float) -> str:
    """Seconds with one decimal, the one time format of the tasks: 12.5 -> "12.5"."""
    return f"{seconds:.1f}"


def grounding_question(query: str) -> str:
    """The grounding prompt for a free-text query ("the red circle enters" -> "The red circle
    enters. When does this happen?", one of the grounding templates)."""
    query = query.strip().rstrip(".")
    return f"{query[:1].upper()}{query[1:]}. When does this happen?"


def span_answer(start_seconds: float, end_seconds: float) -> str:
    return f"From {format_seconds(start_seconds)} to {format_seconds(end_seconds)} seconds."


def caption_line(start_seconds: float, end_seconds: float, caption: str) -> str:
    """One dense-caption line: ``From S to E seconds: <caption>``."""
    return f"From {format_seconds(start_seconds)} to {format_seconds(end_seconds)} seconds: {caption}"


def dense_captions(events: tuple[Event, ...] | list[Event]) -> str:
    """All events, one per line: ``From S to E seconds: <caption>``."""
    return "\n".join(caption_line(e.start_seconds, e.end_seconds, e.caption) for e in events)


def colour_answer(colour: str) -> str:
    """The answer naming a colour: "dark green" -> ``Dark green.``"""
    return f"{_cap(colour)}."


def count_answer(count: int) -> str:
    word = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    return f"{_cap(word)}."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def unique_event_indices(events: tuple[Event, ...]) -> list[int]:
    """Indices of events whose query text occurs exactly once (safe to ask about)."""
    counts = Counter(e.query for e in events)
    return [i for i, e in enumerate(events) if counts[e.query] == 1]


def _sample(rng: np.random.Generator, items: list, count: int) -> list:
    if len(items) <= count:
        return list(items)
    chosen = rng.choice(len(items), size=count, replace=False)
    return [items[int(i)] for i in sorted(chosen)]


def grounding_tasks(scene: Scene, rng: np.random.Generator, *, count: int) -> list[Task]:
    tasks = []
    for i in _sample(rng, unique_event_indices(scene.events), count):
        e = scene.events[i]
        template = _pick(rng, GROUNDING_TEMPLATES)
        question = template.format(
            s=e.subject, S=_cap(e.subject), b=e.predicate_base, p=e.predicate
        )
        tasks.append(
            Task(
                "grounding",
                question,
                span_answer(e.start_seconds, e.end_seconds),
                ((e.start_seconds, e.end_seconds),),
                event_indices=(i,),
            )
        )
    return tasks


def _subject_parts(subject: str) -> tuple[str, str]:
    """("red", "circle") from "the red circle" ("dark green" colours are two words)."""
    words = subject.split()
    return " ".join(words[1:-1]), words[-1]


def absent_tasks(scene: Scene, rng: np.random.Generator, *, count: int) -> list[Task]:
    """Grounding questions about events that do not happen (answer ``ABSENT_ANSWER``).

    Each takes a true object event asked about once and swaps its subject's colour or its shape
    (one of the two, drawn) for a (colour, shape) description no object of the scene ever has;
    half of the time, when there is one, a description whose colour and shape both occur in the
    scene, on other objects (the hardest to tell apart). Scenes without objects yield none.
    """
    described = {(colour, track.shape) for track in scene.objects for colour in track.colours}
    colours = sorted({c for c, _ in described})
    shapes = sorted({s for _, s in described})
    candidates = [i for i in unique_event_indices(scene.events) if scene.events[i].kind in OBJECT_KINDS]
    tasks = []
    for i in _sample(rng, candidates, count):
        e = scene.events[i]
        colour, shape = _subject_parts(e.subject)
        if rng.random() < 0.5:
            options = [(c, shape) for c in OBJECT_COLOUR_NAMES if c != colour]
        else:
            options = [(colour, s) for s in SHAPES if s != shape]
        options = [o for o in options if o not in described]
        crossed = [o for o in options if o[0] in colours and o[1] in shapes]
        if crossed and rng.random() < 0.5:
            options = crossed
        if not options:
            continue
        new_colour, new_shape = options[int(rng.integers(len(options)))]
        subject = f"the {new_colour} {new_shape}"
        question = _pick(rng, GROUNDING_TEMPLATES).format(
            s=subject, S=_cap(subject), b=e.predicate_base, p=e.predicate
        )
        tasks.append(Task("absent", question, ABSENT_ANSWER))
    return tasks


def stable_tenths(scene: Scene, kinds: frozenset[str]) -> np.ndarray:
    """int ``[N]``: times (tenths) at least 0.3 s away from every event of the given kinds."""
    grid = np.arange(STABLE_MARGIN_TENTHS, scene.duration_tenths - STABLE_MARGIN_TENTHS)
    ok = np.ones(grid.shape, dtype=bool)
    for e in scene.events:
        if e.kind in kinds:
            low, high = e.start_tenths - STABLE_MARGIN_TENTHS, e.end_tenths + STABLE_MARGIN_TENTHS
            ok &= (grid < low) | (grid > high)
    return grid[ok]


def calm_moment(scene: Scene, rng: np.random.Generator) -> int | None:
    """A time (tenths) drawn from those away from every event, so that nothing is mid-action
    and the scene's description holds; None (drawing nothing) when no such time exists."""
    calm = stable_tenths(scene, frozenset(e.kind for e in scene.events))
    return int(calm[int(rng.integers(calm.size))]) if calm.size else None


def _listing(objects: tuple[str, ...], text: str | None) -> str:
    items = [f"{_article(o)} {o}" for o in objects] + ([f'the text "{text}"'] if text else [])
    if not items:
        return "Nothing."
    if len(items) == 1:
        return f"{_cap(items[0])}."
    return f"{_cap(', '.join(items[:-1]))} and {items[-1]}."


def _qa_at(scene: Scene, rng: np.random.Generator, tenths: int, focus: str) -> Task | None:
    seconds = tenths / 10
    t = format_seconds(seconds)
    snap = describe_at(scene, seconds)
    if focus == "screen":
        q, a = _pick(rng, SCREEN_TEMPLATES), _listing(snap.objects, snap.text)
    elif focus == "objects":
        q, a = _pick(rng, OBJECTS_TEMPLATES), _listing(snap.objects, None)
    elif focus == "background":
        q, a = _pick(rng, BACKGROUND_TEMPLATES), colour_answer(snap.background)
    elif focus == "text":
        q, a = _pick(rng, TEXT_TEMPLATES), f"{snap.text}." if snap.text else "No text."
    elif focus == "how_many":
        q, a = _pick(rng, HOW_MANY_TEMPLATES), count_answer(len(snap.objects))
    else:
        shapes = Counter(o.split(" ")[-1] for o in snap.objects)
        singles = sorted(s for s, n in shapes.items() if n == 1)
        if not singles:
            return None
        shape = singles[int(rng.integers(len(singles)))]
        colour = next(o.rsplit(" ", 1)[0] for o in snap.objects if o.endswith(f" {shape}"))
        q, a = _pick(rng, SHAPE_COLOUR_TEMPLATES).replace("{shape}", shape), colour_answer(colour)
    return Task("qa", q.format(t=t), a, at_seconds=seconds)


QA_FOCUS_KINDS: dict[str, frozenset[str]] = {
    "screen": OBJECT_KINDS | {"text"},
    "objects": OBJECT_KINDS,
    "background": frozenset({"background"}),
    "text": frozenset({"text"}),
    "how_many": OBJECT_KINDS,
    "shape_colour": OBJECT_KINDS,
}


def qa_tasks_at(
    scene: Scene, rng: np.random.Generator, tenths: int, *, focuses: tuple[str, ...] | None = None
) -> list[Task]:
    """Timestamped questions about one moment, one per focus (default every focus) that applies.

    Raises:
        ValueError: on an unknown focus.
    """
    unknown = [f for f in focuses or () if f not in QA_FOCUS_KINDS]
    if unknown:
        raise ValueError(f"focuses={focuses!r}: unknown {unknown}; allowed {tuple(QA_FOCUS_KINDS)}")
    tasks = [_qa_at(scene, rng, tenths, focus) for focus in focuses or QA_FOCUS_KINDS]
    return [t for t in tasks if t is not None]


def qa_tasks(scene: Scene, rng: np.random.Generator, *, count: int) -> list[Task]:
    tasks: list[Task] = []
    focuses = list(QA_FOCUS_KINDS)
    for _ in range(count * 3):
        if len(tasks) >= count:
            break
        focus = focuses[int(rng.integers(len(focuses)))]
        times = stable_tenths(scene, QA_FOCUS_KINDS[focus])
        if times.size == 0:
            continue
        task = _qa_at(scene, rng, int(times[int(rng.integers(times.size))]), focus)
        if task is not None and task.question not in {t.question for t in tasks}:
            tasks.append(task)
    return tasks


def caption_task(scene: Scene, rng: np.random.Generator) -> Task:
    spans = tuple((e.start_seconds, e.end_seconds) for e in scene.events)
    answer = dense_captions(scene.events) if scene.events else "Nothing happens."
    return Task(
        "caption",
        _pick(rng, CAPTION_TEMPLATES),
        answer,
        spans,
        event_indices=tuple(range(len(scene.events))),
    )


def count_tasks(scene: Scene, rng: np.random.Generator, *, count: int) -> list[Task]:
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(scene.events):
        groups.setdefault(e.query, []).append(i)
    repeated = [g for g in groups.values() if len(g) > 1]
    singles = [g for g in groups.values() if len(g) == 1]
    chosen = _sample(rng, repeated, count) + _sample(rng, singles, max(0, count // 2))
    tasks = []
    for group in chosen[: count - 1]:  # leave room for one aggregate question
        e = scene.events[group[0]]
        question = _pick(rng, COUNT_TEMPLATES).format(
            s=e.subject, b=e.predicate_base, p=e.predicate
        )
        tasks.append(Task("count", question, count_answer(len(group)), event_indices=tuple(group)))
    for question, kinds in _sample(rng, list(AGGREGATE_COUNTS), count - len(tasks)):
        group = tuple(i for i, e in enumerate(scene.events) if e.kind in kinds)
        tasks.append(Task("count", question, count_answer(len(group)), event_indices=group))
    return tasks


def _order_task(scene: Scene, rng: np.random.Generator, first: int, second: int) -> Task:
    a, b = scene.events[first], scene.events[second]
    x, y = (a, b) if rng.random() < 0.5 else (b, a)
    style = int(rng.integers(3))
    if style == 2:
        question = BEFORE_AFTER_TEMPLATE.format(
            sx=x.subject, bx=x.predicate_base, sy=y.subject, py=y.predicate
        )
        answer = "Before." if x is a else "After."
    else:
        template = _pick(rng, FIRST_TEMPLATES if style == 0 else LAST_TEMPLATES)
        question = template.format(x=x.query, y=y.query)
        answer = f"{_cap((a if style == 0 else b).query)}."
    spans = ((a.start_seconds, a.end_seconds), (b.start_seconds, b.end_seconds))
    return Task("order", question, answer, spans, event_indices=(first, second))


def order_tasks(scene: Scene, rng: np.random.Generator, *, count: int) -> list[Task]:
    unique = unique_event_indices(scene.events)
    pairs = [
        (i, j)
        for i in unique
        for j in unique
        if scene.events[i].end_tenths < scene.events[j].start_tenths
    ]
    return [_order_task(scene, rng, i, j) for i, j in _sample(rng, pairs, count)]


def shift_task(task: Task, scene: Scene, offset_seconds: float) -> Task:
    """``task`` about ``scene`` played from ``offset_seconds`` instead of 0 (a window of a longer
    video): every time in its question and answer moves by the offset; count and order tasks
    have none."""
    if not offset_seconds:
        return task
    spans = tuple((s + offset_seconds, e + offset_seconds) for s, e in task.spans)
    if task.kind == "grounding":
        return replace(task, answer=span_answer(*spans[0]), spans=spans)
    if task.kind == "caption" and task.event_indices:
        lines = [
            caption_line(s, e, scene.events[i].caption)
            for (s, e), i in zip(spans, task.event_indices, strict=True)
        ]
        return replace(task, answer="\n".join(lines), spans=spans)
    if task.kind == "qa" and task.at_seconds is not None:
        at = task.at_seconds + offset_seconds
        old, new = f"{format_seconds(task.at_seconds)} seconds", f"{format_seconds(at)} seconds"
        return replace(task, question=task.question.replace(old, new), at_seconds=at)
    return replace(task, spans=spans)


def snap_span(start: float, end: float, stamps: Sequence[float]) -> tuple[float, float]:
    """``(start, end)`` moved to the nearest of the frame-pair times ``stamps`` (sorted).

    A model sees time only as the ``<t seconds>`` printed before each frame pair, so an answer
    made of those times is one it can copy. A span shorter than the gap between pairs would
    snap both ends to one pair; it takes that pair and the neighbour on its side instead.
    """
    if len(stamps) < 2:
        return start, end
    times = np.asarray(stamps, dtype=np.float64)
    first = int(np.abs(times - start).argmin())
    last = int(np.abs(times - end).argmin())
    if last <= first:
        middle = (start + end) / 2
        first = max(0, min(first - (middle < times[first]), len(times) - 2))
        last = first + 1
    return float(times[first]), float(times[last])


def snap_task(task: Task, scene: Scene, stamps: Sequence[float]) -> Task:
    """``task`` with the times of its answer (grounding, dense captions) on the frame-pair
    times ``stamps`` (:func:`snap_span`); ``spans`` keep the true times, other kinds are unchanged."""
    if task.kind == "grounding":
        return replace(task, answer=span_answer(*snap_span(*task.spans[0], stamps)))
    if task.kind == "caption" and task.event_indices:
        lines = [
            caption_line(*snap_span(s, e, stamps), scene.events[i].caption)
            for (s, e), i in zip(task.spans, task.event_indices, strict=True)
        ]
        return replace(task, answer="\n".join(lines))
    return task


def make_tasks(
    scene: Scene,
    *,
    seed: int,
    per_kind: int = 3,
    kinds: tuple[TaskKind, ...] = DEFAULT_TASK_KINDS,
) -> list[Task]:
    """Draw tasks about ``scene``; deterministic in ``(scene, seed, per_kind, kinds)``.

    Args:
        scene: the scene whose true events the tasks are about.
        seed: seed of the phrasing and sampling generator.
        per_kind: at most this many tasks of each kind (captions: always one).
        kinds: which task kinds to draw, in this order (by default all but ``absent``).

    Returns:
        Tasks grouped by kind in the order of ``kinds``; a kind may yield fewer (or none) when
        the scene has no unambiguous material for it.

    Raises:
        ValueError: on an unknown kind or a non-positive ``per_kind``.
    """
    unknown = [k for k in kinds if k not in TASK_KINDS]
    if unknown:
        raise ValueError(f"kinds={kinds!r}: unknown {unknown}; allowed {TASK_KINDS}")
    if per_kind < 1:
        raise ValueError(f"per_kind={per_kind}: expected >= 1")
    rng = np.random.default_rng([seed, scene.seed])
    tasks: list[Task] = []
    for kind in kinds:
        if kind == "grounding":
            tasks += grounding_tasks(scene, rng, count=per_kind)
        elif kind == "qa":
            tasks += qa_tasks(scene, rng, count=per_kind)
        elif kind == "caption":
            tasks.append(caption_task(scene, rng))
        elif kind == "count":
            tasks += count_tasks(scene, rng, count=per_kind)
        elif kind == "absent":
            tasks += absent_tasks(scene, rng, count=per_kind)
        else:
            tasks += order_tasks(scene, rng, count=per_kind)
    return tasks
