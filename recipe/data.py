"""Training samples from the synthetic world: frames at planned times, a question, an answer.

Each sample is a pure function of its seed: a scene, the frame times a 2-fps plan would pick
(snapped to the scene's real frame times, so variable-frame-rate scenes are timed by their
frames, as ingest times real files), the frames rendered at those times, one task, and the
chat messages the model sees. ``encode`` turns a sample into model inputs with labels only on
the answer tokens (and the closing ``<|im_end|>``).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from recipe.probes import colour_pairs_video, lookup_tasks
from recipe.scene import (
    BACKGROUND_COLOUR_NAMES,
    OBJECT_COLOUR_NAMES,
    SHAPES,
    TEXTS,
    Snapshot,
    describe_at,
)
from recipe.tasks import (
    Task,
    TaskKind,
    calm_moment,
    format_seconds,
    make_tasks,
    qa_tasks_at,
    shift_task,
    snap_task,
)
from recipe.world import Scene, WorldParams, make_scene, render_frames
from vidlm.processor import frame_pair_seconds

IGNORE = -100


@dataclass(frozen=True)
class SampleSpec:
    """How training samples are drawn.

    ``questions`` tasks are asked about each rendered video; training shares the video's prefix
    between them (one encoder and prefix pass, one branch per question), so more questions per
    video cost little. ``kinds`` weights the task kinds by repetition. ``stills`` replaces the
    video by one moment (a frame pair showing one time) asked about in every QA form (or only
    the ``focuses`` named, e.g. ``("background",)``): a cheap first stage in which answers
    depend on nothing but the pixels, so the model learns to look.

    With ``max_offset_seconds`` a sample is, with ``offset_probability``, a window of a longer
    video: its timestamps and every time in its tasks start at a random offset (whole tenths up
    to that many seconds). The product shows the model such windows with their absolute times,
    and a model that only ever saw clocks starting at 0 answers from the position of a frame
    instead of reading its timestamp.

    ``lookups`` is the probability that a sample is a timestamp lookup instead
    (:func:`recipe.probes.lookup_tasks`): ``lookup_pairs`` frame pairs of solid background
    colours, asked "what colour at T?" and "when is it X?", where nothing but the tie between a
    frame pair and its timestamp is left to learn; with ``lookup_run`` > 1 a colour holds for up
    to that many pairs, so "when" spans several pairs, as a world's background does. Offsets
    apply to lookups too: from a clock that starts at 0 a model learns "T seconds is the T-th
    pair", which fails on windows.

    With ``snap_spans`` the times in grounding and dense-caption answers of video samples are
    moved to the nearest ``<t seconds>`` printed before a frame pair
    (:func:`recipe.tasks.snap_span`): the model only sees time at those marks, and an answer
    made of them is a copy from the prompt. Questions and ``Task.spans`` keep the true times.
    """

    frame_px: int = 96
    fps: float = 2.0
    max_frames: int = 128
    world: WorldParams = WorldParams(min_seconds=8.0, max_seconds=60.0, action_scale=3.0)
    kinds: tuple[TaskKind, ...] = ("grounding", "grounding", "grounding", "qa", "caption", "count", "order")
    questions: int = 1
    stills: bool = False
    focuses: tuple[str, ...] | None = None
    max_offset_seconds: float = 0.0
    offset_probability: float = 0.8
    lookups: float = 0.0
    lookup_pairs: tuple[int, int] = (1, 6)
    lookup_run: int = 1
    snap_spans: bool = False

    def __post_init__(self) -> None:
        if self.questions < 1:
            raise ValueError(f"questions={self.questions}: expected >= 1")
        pairs_ok = 1 <= self.lookup_pairs[0] <= self.lookup_pairs[1] and self.lookup_run >= 1
        if not 0 <= self.lookups <= 1 or not pairs_ok:
            raise ValueError(
                f"lookups={self.lookups}, lookup_pairs={self.lookup_pairs}, lookup_run={self.lookup_run}: "
                f"expected a probability in [0, 1], 1 <= min <= max pairs and runs >= 1"
            )
        if self.max_offset_seconds < 0 or not 0 <= self.offset_probability <= 1:
            raise ValueError(
                f"max_offset_seconds={self.max_offset_seconds}, offset_probability="
                f"{self.offset_probability}: expected an offset >= 0 and a probability in [0, 1]"
            )


@dataclass(frozen=True)
class Sample:
    seed: int
    scene: Scene | None  # None for a timestamp lookup
    tasks: tuple[Task, ...]
    frames: np.ndarray  # uint8 [T, H, W, 3]
    seconds: np.ndarray  # float64 [T]
    shown: tuple[Snapshot, ...] | None = None  # what each frame pair shows (``pair_words``)

    @property
    def task(self) -> Task:
        return self.tasks[0]

    def messages(self, task: Task | None = None) -> list[dict]:
        """The user turn asking ``task`` (default the first) about the video."""
        task = self.task if task is None else task
        return [
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": self.frames, "timestamps": self.seconds},
                    {"type": "text", "text": task.question},
                ],
            }
        ]


def planned_seconds(frame_seconds: np.ndarray, *, fps: float, max_frames: int) -> np.ndarray:
    """Times of the decoded frames nearest to an evenly spaced ``fps`` grid (an even count)."""
    duration = float(frame_seconds[-1])
    count = int(min(max_frames, max(2, round(duration * fps))))
    count -= count % 2
    targets = np.linspace(0.0, duration, count) if count > 1 else np.zeros(1)
    nearest = np.abs(frame_seconds[None, :] - targets[:, None]).argmin(axis=1)
    return frame_seconds[nearest]


def make_sample(seed: int, spec: SampleSpec) -> Sample:
    """One training sample (a video and ``spec.questions`` tasks), fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    if spec.lookups and rng.random() < spec.lookups:
        pairs = int(rng.integers(spec.lookup_pairs[0], spec.lookup_pairs[1] + 1))
        frames, seconds, colours = colour_pairs_video(rng, pairs, frame_px=spec.frame_px, max_run=spec.lookup_run)
        seconds = seconds + _draw_offset(rng, spec)
        tasks = lookup_tasks(rng, seconds, colours)
        order = rng.permutation(len(tasks))
        shown = tuple(Snapshot((), colour, None) for colour in colours)
        return Sample(seed, None, tuple(tasks[i] for i in order), frames, seconds, shown)
    scene = make_scene(seed, spec.world)
    sample = _still_sample(seed, scene, rng, spec) if spec.stills else _video_sample(seed, scene, rng, spec)
    sample = replace(sample, shown=_shown(sample))
    offset = _draw_offset(rng, spec)
    if offset:
        tasks = tuple(shift_task(t, scene, offset) for t in sample.tasks)
        sample = replace(sample, tasks=tasks, seconds=sample.seconds + offset)
    if spec.snap_spans and not spec.stills:
        stamps = printed_seconds(sample.seconds)
        sample = replace(sample, tasks=tuple(snap_task(t, scene, stamps) for t in sample.tasks))
    return sample


def _shown(sample: Sample) -> tuple[Snapshot, ...]:
    """The snapshot at each frame pair's time, on the scene's own clock (before any offset)."""
    scene = sample.scene
    assert scene is not None
    return tuple(describe_at(scene, t) for t in frame_pair_seconds(sample.seconds))


def _text_tokens(tok, text: str) -> list[int]:
    """An on-screen text's tokens as a question quotes it (' "GAME OVER"' without the quotes)."""
    return tok.encode(f' "{text}"')[1:-1]


@functools.lru_cache(maxsize=8)
def identity_words(tok) -> dict[str, tuple[int, ...]]:
    """Every identity word of the world (colours, shapes, on-screen texts) -> its tokens as a
    question writes it (" red", " dark green", the text inside its quotes). Built once per
    tokenizer (every training sample asks for it); do not modify the result."""
    words = {w: tuple(tok.encode(f" {w}")) for w in (*OBJECT_COLOUR_NAMES, *BACKGROUND_COLOUR_NAMES, *SHAPES)}
    return words | {f'"{t}"': tuple(_text_tokens(tok, t)) for t in TEXTS}


def pair_words(tok, shown: Sequence[Snapshot], vocab_size: int) -> torch.Tensor:
    """int8 ``[P, V]``: 1 for the tokens of the identity words pair ``p`` shows (its objects'
    colours and shapes, the background's colour, the on-screen text), 0 for the other identity
    words' tokens, -1 for every token that is no identity word (not scored)."""
    vocab = identity_words(tok)
    out = torch.full((len(shown), vocab_size), -1, dtype=torch.int8)
    out[:, sorted({i for ids in vocab.values() for i in ids})] = 0
    for p, snap in enumerate(shown):
        words = [w for obj in snap.objects for w in obj.split(" ", 1)] + [snap.background]
        words += [f'"{snap.text}"'] if snap.text else []
        ids = [i for w in words for i in vocab[w]]
        out[p, ids] = 1
    return out


def printed_seconds(seconds: np.ndarray) -> list[float]:
    """The time printed before each frame pair (``<t seconds>``, tenths) of frames at ``seconds``."""
    return [float(format_seconds(t)) for t in frame_pair_seconds(seconds)]


def _draw_offset(rng: np.random.Generator, spec: SampleSpec) -> float:
    """Where this sample's clock starts: 0, or with ``offset_probability`` a whole tenth up to
    ``max_offset_seconds`` (draws nothing when offsets are off)."""
    if spec.max_offset_seconds and rng.random() < spec.offset_probability:
        return int(rng.integers(int(spec.max_offset_seconds * 10) + 1)) / 10
    return 0.0


def _video_sample(seed: int, scene: Scene, rng: np.random.Generator, spec: SampleSpec) -> Sample:
    drawn = Counter(spec.kinds[int(i)] for i in rng.integers(len(spec.kinds), size=spec.questions))
    tasks: list[Task] = []
    for kind in sorted(drawn):
        tasks += make_tasks(scene, seed=seed, per_kind=drawn[kind], kinds=(kind,))[: drawn[kind]]
    if not tasks:
        tasks = make_tasks(scene, seed=seed, per_kind=1, kinds=("caption",))
    order = rng.permutation(len(tasks))
    seconds = planned_seconds(scene.frame_seconds, fps=spec.fps, max_frames=spec.max_frames)
    frames = render_frames(scene, seconds, size_px=spec.frame_px)
    return Sample(seed, scene, tuple(tasks[i] for i in order), frames, seconds)


STILL_TRIES = 40  # moments drawn (4 a scene) before a still gives up


def _still_sample(seed: int, scene: Scene, rng: np.random.Generator, spec: SampleSpec) -> Sample:
    """One moment of ``scene`` as a frame pair, with every QA question about that moment.

    A moment may have nothing to ask in the focuses named (no shape on screen alone for
    "shape_colour"): another moment is drawn, and after four another scene.
    """
    for attempt in range(STILL_TRIES):
        if attempt and attempt % 4 == 0:
            scene = make_scene(int(rng.integers(2**62)), spec.world)
        tenths = calm_moment(scene, rng)
        if tenths is None:  # busy from start to end: any moment
            tenths = int(rng.integers(scene.duration_tenths))
        tasks = qa_tasks_at(scene, rng, tenths, focuses=spec.focuses)
        if tasks:
            break
    else:
        raise ValueError(f"scene seed {seed}: no moment of {STILL_TRIES} has a question in focuses {spec.focuses}")
    order = rng.permutation(len(tasks))
    seconds = np.full(2, tenths / 10)
    frames = render_frames(scene, seconds, size_px=spec.frame_px)
    return Sample(seed, scene, tuple(tasks[i] for i in order), frames, seconds)


def encode(processor, sample: Sample, task: Task | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for the prompt + answer of ``task`` (default the first), with ``labels``
    (-100 outside the answer)."""
    task = sample.task if task is None else task
    batch = processor(sample.messages(task))
    answer = processor.tokenizer.encode(task.answer + "<|im_end|>")
    prompt_len = batch["input_ids"].shape[1]
    answer_ids = torch.tensor([answer], dtype=torch.long)
    batch["input_ids"] = torch.cat([batch["input_ids"], answer_ids], dim=1)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["mm_token_type_ids"] = torch.cat(
        [batch["mm_token_type_ids"], torch.zeros_like(answer_ids)], dim=1
    )
    labels = torch.full_like(batch["input_ids"], IGNORE)
    labels[:, prompt_len:] = answer_ids
    batch["labels"] = labels
    return batch


@dataclass
class Branches:
    """A video prefix shared by several questions.

    ``prefix`` holds the model inputs up to and including the last ``<|vision_end|>`` (batch
    of one); row ``i`` of ``input_ids`` [N, L] continues it with question ``i``, the assistant
    header and the answer, right-padded; ``labels`` is -100 outside the answers. Prefix + row
    ``i`` (unpadded) is exactly ``encode(processor, sample, sample.tasks[i])["input_ids"]``.
    """

    prefix: dict[str, torch.Tensor]
    input_ids: torch.Tensor
    labels: torch.Tensor
    lengths: list[int]
    # Row i's prompt length (question + assistant header): its last prompt token is at
    # question_lengths[i] - 1. saliency [N, P]: pair_saliency of row i's task over the P frame
    # pairs of the prefix, -1 for rows that are not grounding questions.
    question_lengths: list[int] = field(default_factory=list)
    saliency: torch.Tensor | None = None
    pair_tenths: torch.Tensor | None = None  # [P]: the time printed before each pair, in tenths
    # [K, 3] rows (row, position, pair): the token at ``position`` of ``row`` predicts a digit of
    # an answer time, which is (nearest to) the time printed before frame pair ``pair``.
    pointers: torch.Tensor | None = None
    # [K] per pointer: the time's characters written before its token fit more than one printed
    # time (the token still chooses the frame pair; see ``answer_time_tokens``).
    deciding: torch.Tensor | None = None
    words: torch.Tensor | None = None  # int8 [P, V]: ``pair_words`` of the pairs (the name loss)

    def to(self, device: str | torch.device) -> Branches:
        prefix = {k: v.to(device) for k, v in self.prefix.items()}
        saliency, tenths, pointers, deciding, words = (
            None if t is None else t.to(device)
            for t in (self.saliency, self.pair_tenths, self.pointers, self.deciding, self.words)
        )
        return Branches(prefix, self.input_ids.to(device), self.labels.to(device), self.lengths,
                        self.question_lengths, saliency, tenths, pointers, deciding, words)


def length_groups(lengths: Sequence[int], *, slack: float = 1.5) -> list[list[int]]:
    """Indices grouped by similar length (each group's longest at most ``slack`` times its
    shortest), in order of length: question rows batched so that a long caption does not pad
    every short answer."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= slack * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def encode_branches(processor, sample: Sample) -> Branches:
    """The shared video prefix and one answer-labelled branch per task of ``sample``."""
    tok = processor.tokenizer
    batch = processor(sample.messages())
    ids = batch["input_ids"][0]
    cut = int((ids == tok.token_to_id("<|vision_end|>")).nonzero()[-1]) + 1
    prefix = {k: v for k, v in batch.items() if k not in ("input_ids", "mm_token_type_ids", "attention_mask")}
    prefix |= {k: batch[k][:, :cut] for k in ("input_ids", "mm_token_type_ids", "attention_mask")}
    rows, labels, asked = [], [], []
    for task in sample.tasks:
        question = tok.encode(task.question + "<|im_end|>\n<|im_start|>assistant\n")
        answer = tok.encode(task.answer + "<|im_end|>")
        rows.append(question + answer)
        labels.append([IGNORE] * len(question) + answer)
        asked.append(len(question))
    width = max(map(len, rows))
    pad = tok.token_to_id("<|endoftext|>")
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    label_ids = torch.tensor([r + [IGNORE] * (width - len(r)) for r in labels], dtype=torch.long)
    pairs = frame_pair_seconds(sample.seconds)
    saliency = torch.tensor([pair_saliency(task, pairs) or [-1.0] * len(pairs) for task in sample.tasks])
    printed = printed_seconds(sample.seconds)
    tenths = torch.tensor([round(t * 10) for t in printed])
    pointed = [
        (row, asked[row] + token - 1, pair, deciding)
        for row, task in enumerate(sample.tasks) if task.kind in ("grounding", "caption")
        for token, pair, deciding in answer_time_tokens(tok, rows[row][asked[row]:], printed)
    ]
    pointers = torch.tensor([p[:3] for p in pointed], dtype=torch.long).reshape(-1, 3)
    deciding = torch.tensor([p[3] for p in pointed], dtype=torch.bool)
    words = pair_words(tok, sample.shown, tok.vocab_size) if sample.shown is not None else None
    return Branches(prefix, input_ids, label_ids, [len(r) for r in rows], asked, saliency, tenths, pointers, deciding,
                    words)


def answer_time_tokens(tok, answer_ids: Sequence[int], printed: Sequence[float]) -> list[tuple[int, int, bool]]:
    """(token index, frame pair, deciding) for every token of ``answer_ids`` that is part of a
    time ("12.5"): the pair is the one whose printed time (``printed``) is nearest to that time;
    ``deciding`` says whether the characters of the time written before the token still fit
    more than one printed time, so that the token chooses among frame pairs. After "1", the next
    digit of "17.4" decides between the pairs printed 1.x and 10-19.x; after "17." nothing is
    left to choose."""
    pieces = [tok.decode([i]) for i in answer_ids]
    owner = [k for k, piece in enumerate(pieces) for _ in piece]  # character -> token
    text = "".join(pieces)
    times = np.asarray(printed, dtype=np.float64)
    shown = [format_seconds(t) for t in printed]  # as the prompt prints them
    found: dict[int, tuple[int, bool]] = {}
    for match in re.finditer(r"\d+\.\d", text):
        pair = int(np.abs(times - float(match.group())).argmin())
        for char in range(match.start(), match.end()):
            if owner[char] not in found:
                written = match.group()[: char - match.start()]
                found[owner[char]] = (pair, sum(s.startswith(written) for s in shown) > 1)
    return sorted((token, pair, deciding) for token, (pair, deciding) in found.items())


def pair_saliency(task: Task, pair_seconds: Sequence[float]) -> list[float]:
    """1.0 for each frame pair whose time lies in the grounding ``task``'s true span (the pair
    nearest to the span's middle when none does), 0.0 for the others; 0.0 for every pair of an
    ``absent`` task (its event happens nowhere); [] for other kinds."""
    if task.kind == "absent":
        return [0.0] * len(pair_seconds)
    if task.kind != "grounding" or not task.spans:
        return []
    start, end = task.spans[0]
    times = np.asarray(pair_seconds, dtype=np.float64)
    inside = (times >= start) & (times <= end)
    if not inside.any():
        inside[np.abs(times - (start + end) / 2).argmin()] = True
    return inside.astype(np.float64).tolist()


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def worker_options(workers: int, *, prefetch_factor: int) -> dict:
    """``DataLoader`` keywords for ``workers`` rendering processes of one torch thread each
    (none: render in the calling process)."""
    if not workers:
        return {}
    return {"num_workers": workers, "worker_init_fn": _one_thread, "prefetch_factor": prefetch_factor}


def corpus_texts(seeds: Sequence[int], spec: SampleSpec) -> list[str]:
    """Questions, answers and timestamp strings to train the tokenizer on."""
    texts = ["user", "assistant", "system", "\n"]
    for seed in seeds:
        scene = make_scene(seed, spec.world)
        for task in make_tasks(scene, seed=seed, per_kind=3):
            texts += [task.question, task.answer]
    texts += [f"<{tenths / 10:.1f} seconds>" for tenths in range(0, 36000, 7)]
    return texts
