"""Diagnostic probes: does a checkpoint tie each frame pair to the timestamp written before it,
and does it see what is on screen?

The timestamp-binding probe shows videos of solid background colours, one colour per frame pair
(neighbouring pairs differ), and asks "What colour is the background at T seconds?" at one
pair's timestamp. Seeing the colour of a still is trivial, so the probe measures only whether
the answer follows T: the fraction answered right, and the fraction naming the *last* pair's
colour when another pair was asked about (a model that reads the most recent frames instead of
the clock names it every time). Grounding ("when does X happen?") needs the same tie in the
other direction, so a model that fails here cannot ground.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from recipe.scene import BACKGROUND_COLOURS, WorldParams
from recipe.tasks import (
    BACKGROUND_TEMPLATES,
    QA_FOCUS_KINDS,
    Task,
    calm_moment,
    colour_answer,
    format_seconds,
    qa_tasks_at,
    span_answer,
)
from recipe.world import make_scene, render_frames
from vidlm.processor import frame_pair_seconds

# Answers a question about a video: (frames uint8 [T, H, W, 3], seconds [T], question) -> text.
Answerer = Callable[[np.ndarray, np.ndarray, str], str]
PAIR_SECONDS = 1.0  # frame pairs of a 2-fps plan
LOOKUP_GROUNDING_TEMPLATES = (
    "When is the background {c}?",
    "During which seconds is the background {c}?",
    "The background is {c}. When does this happen?",
)


@dataclass(frozen=True)
class BindingScores:
    """Results of :func:`binding_probe` (rates in [0, 1])."""

    accuracy: float  # answers naming the asked pair's colour
    last_pair_rate: float  # answers naming the last pair's colour when another was asked
    chance: float  # accuracy of answering with a pair picked at random
    questions: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def colour_pairs_video(
    rng: np.random.Generator, pairs: int, *, frame_px: int = 64, max_run: int = 1
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Frames uint8 ``[2*pairs, px, px, 3]``, their seconds (2 fps) and each pair's colour name.

    The colour holds for runs of 1 to ``max_run`` pairs (1: it changes at every pair);
    neighbouring runs differ.
    """
    names = list(BACKGROUND_COLOURS)
    colours = [names[int(rng.integers(len(names)))]]
    while len(colours) < pairs:
        colours.append(str(rng.choice([n for n in names if n != colours[-1]])))
    if max_run > 1:
        lengths = rng.integers(1, max_run + 1, size=pairs)
        colours = [c for c, n in zip(colours, lengths, strict=True) for _ in range(int(n))][:pairs]
    frames = np.empty((2 * pairs, frame_px, frame_px, 3), dtype=np.uint8)
    for k, name in enumerate(colours):
        frames[2 * k : 2 * k + 2] = BACKGROUND_COLOURS[name]
    seconds = np.arange(2 * pairs) * (PAIR_SECONDS / 2)
    return frames, seconds, colours


def colour_runs(colours: list[str]) -> list[tuple[int, int, str]]:
    """(first pair, last pair, colour) of each run of equal neighbouring colours."""
    runs: list[tuple[int, int, str]] = []
    for k, c in enumerate(colours):
        if runs and runs[-1][2] == c:
            runs[-1] = (runs[-1][0], k, c)
        else:
            runs.append((k, k, c))
    return runs


def lookup_tasks(
    rng: np.random.Generator, seconds: np.ndarray, colours: list[str], *, qa: int = 3, grounding: int = 5
) -> list[Task]:
    """Timestamp lookups about a :func:`colour_pairs_video`, both ways: ``qa`` colour questions at
    pair timestamps (as the prompt shows them) and up to ``grounding`` "when is the background
    X?" questions for colours that fill exactly one run of pairs (answer: the seconds it covers).

    Seeing a still's colour is learned within a hundred steps, so these isolate the tie between
    each frame pair and the timestamp before it. A tiny model forms it within ~3,000 steps when
    the number of pairs grows stage by stage (2, then 2-3, 2-4, 2-6, 2-8); trained on 1-16
    pairs at once it had not after 5,000.
    """
    shown = frame_pair_seconds(seconds)
    tasks = []
    for _ in range(qa):
        k = int(rng.integers(len(colours)))
        template = BACKGROUND_TEMPLATES[int(rng.integers(len(BACKGROUND_TEMPLATES)))]
        question = template.format(t=format_seconds(shown[k]))
        tasks.append(Task("qa", question, colour_answer(colours[k]), at_seconds=shown[k]))
    runs = colour_runs(colours)
    named = [c for _, _, c in runs]
    once = [r for r in runs if named.count(r[2]) == 1]
    for i in rng.permutation(len(once))[:grounding]:
        first, last, colour = once[int(i)]
        span = (float(seconds[2 * first]), float(seconds[2 * last]) + PAIR_SECONDS)
        template = LOOKUP_GROUNDING_TEMPLATES[int(rng.integers(len(LOOKUP_GROUNDING_TEMPLATES)))]
        tasks.append(Task("grounding", template.format(c=colour), span_answer(*span), (span,)))
    return tasks


def named_colour(answer: str, names: Sequence[str] = tuple(BACKGROUND_COLOURS)) -> str | None:
    """The background colour an answer names first (longest name wins a tie: "dark green")."""
    text = answer.lower()
    found = [(text.find(n), -len(n), n) for n in names if n in text]
    return min(found)[2] if found else None


def binding_probe(
    answer: Answerer,
    *,
    videos: int = 30,
    seed: int = 0,
    min_pairs: int = 2,
    max_pairs: int = 8,
    frame_px: int = 64,
) -> BindingScores:
    """Ask one timestamped colour question per probe video.

    Args:
        answer: asks a model one question about one video (see ``Answerer``).
        videos: probe videos (one question each).
        seed: draws the videos and the asked pairs.
        min_pairs, max_pairs: frame pairs per video.
        frame_px: frame side.

    Raises:
        ValueError: ``videos`` < 1 or a pair range that does not start at 2 or more.
    """
    if videos < 1 or not 2 <= min_pairs <= max_pairs:
        raise ValueError(f"videos={videos}, pairs {min_pairs}..{max_pairs}: expected >= 1 and 2 <= min <= max")
    rng = np.random.default_rng(seed)
    right = last = not_last = 0
    chance = 0.0
    for _ in range(videos):
        pairs = int(rng.integers(min_pairs, max_pairs + 1))
        frames, seconds, colours = colour_pairs_video(rng, pairs, frame_px=frame_px)
        asked = int(rng.integers(pairs))
        # Asked at the pair's time as its prompt shows it ("<12.3 seconds>").
        question = BACKGROUND_TEMPLATES[0].format(t=format_seconds(frame_pair_seconds(seconds)[asked]))
        said = named_colour(answer(frames, seconds, question))
        right += said == colours[asked]
        chance += colours.count(colours[asked]) / pairs  # a pair picked at random
        if colours[-1] != colours[asked]:
            not_last += 1
            last += said == colours[-1]
    return BindingScores(
        accuracy=right / videos,
        last_pair_rate=last / not_last if not_last else 0.0,
        chance=chance / videos,
        questions=videos,
    )


@dataclass(frozen=True)
class MomentScores:
    """Results of :func:`moment_probe`: exact-match rate and question count per QA focus."""

    accuracy: dict[str, float]
    questions: dict[str, int]

    def as_dict(self) -> dict[str, float | int]:
        return {f"{focus}_accuracy": rate for focus, rate in self.accuracy.items()} | {
            f"{focus}_questions": n for focus, n in self.questions.items()
        }


def moment_questions(
    moments: int, *, seed: int = 0, frame_px: int | None = None, world: WorldParams | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray, str, Task]]:
    """(frames, seconds, focus, task) for every QA focus that applies at one calm moment (nothing
    mid-action) of each of ``moments`` world scenes, the moment shown as one frame pair."""
    from recipe.data import SampleSpec  # recipe.data draws its lookups from this module

    world = world or SampleSpec().world
    for k in range(moments):
        scene_seed = seed * 1_000_003 + k
        scene, rng = make_scene(scene_seed, world), np.random.default_rng(scene_seed)
        tenths = calm_moment(scene, rng)
        tenths = 0 if tenths is None else tenths
        seconds = np.full(2, tenths / 10)
        frames = render_frames(scene, seconds, size_px=frame_px or world.size_px)
        for focus in QA_FOCUS_KINDS:
            for task in qa_tasks_at(scene, rng, tenths, focuses=(focus,)):
                yield frames, seconds, focus, task


def moment_probe(
    answer: Answerer,
    *,
    moments: int = 20,
    seed: int = 0,
    frame_px: int | None = None,
    world: WorldParams | None = None,
    same: Callable[[str, str], bool] = lambda said, want: said.strip().lower() == want.strip().lower(),
) -> MomentScores:
    """Can the model see what is on screen? Every timestamped QA form about one calm moment.

    Each moment (:func:`moment_questions`) is one frame pair, so no clock has to be read: "what
    is on screen", "which objects", "what colour is the background", "what text", "how many
    shapes", "what colour is the <shape>" at that time. A model that cannot name the objects of
    a still cannot say when they enter or move, so this separates seeing from timing when
    grounding fails.

    Args:
        answer: asks a model one question about one video (see ``Answerer``).
        moments: scenes probed (one moment each, every focus that applies).
        seed: draws the scenes and moments.
        frame_px: frame side (default the world's ``size_px``, as the evaluation's videos are
            written; the processor resizes them to the model's budget).
        world: scene parameters (default the evaluation world of ``SampleSpec``).
        same: whether an answer matches the canonical one.

    Raises:
        ValueError: ``moments`` < 1.
    """
    if moments < 1:
        raise ValueError(f"moments={moments}: expected >= 1")
    right: dict[str, int] = {}
    asked: dict[str, int] = {}
    for frames, seconds, focus, task in moment_questions(moments, seed=seed, frame_px=frame_px, world=world):
        asked[focus] = asked.get(focus, 0) + 1
        right[focus] = right.get(focus, 0) + same(answer(frames, seconds, task.question), task.answer)
    return MomentScores(accuracy={f: right[f] / n for f, n in asked.items()}, questions=asked)
