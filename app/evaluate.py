"""Evaluation of a model on grounding, timestamped QA and dense captions.

Two sources: a held-out synthetic set (written as real video files, so decoding, timing and
variable frame rate go through ingest exactly as in the product), or a Charades-STA-style
annotation file (``video_id start end##query`` per line) with a folder of videos. Answers are
read with the library's lenient span parser; scores are R1@{0.3,0.5,0.7} and mIoU for
grounding, exact match for QA, and one-to-one event precision/recall at IoU 0.5 for captions.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import index
import ingest
from app.pipeline import PipelineOptions, sampling_policy
from recipe.tasks import ABSENT_ANSWER, grounding_question

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
# Timestamp-binding probe questions (recipe.probes) per synthetic video evaluated.
BINDING_QUESTIONS_PER_VIDEO = 3
# Still moments (recipe.probes.moment_probe: every QA form about one frame pair) per video.
MOMENTS_PER_VIDEO = 2
# Grounding questions about events that do not happen (recipe.tasks.absent_tasks) per video.
ABSENT_PER_VIDEO = 2


def read_video(lm: Any, path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Frames uint8 [T, 3, H, W], their seconds and the duration, planned as the product plans."""
    policy = sampling_policy(
        lm.processor.config, PipelineOptions(), context_tokens=lm.model.config.text.max_position_embeddings
    )
    info = ingest.probe(path)
    batch = ingest.decode(path, ingest.plan(info, policy))
    return batch.frames, batch.seconds, info.duration_seconds


def ask(lm: Any, frames: np.ndarray, seconds: np.ndarray, question: str, *, max_new_tokens: int) -> str:
    messages = [{"role": "user", "content": [
        {"type": "video", "video": frames, "timestamps": seconds},
        {"type": "text", "text": question},
    ]}]
    return lm.generate(messages, max_new_tokens=max_new_tokens, do_sample=False)


def normalise_answer(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@dataclass
class Tally:
    """Running totals over the evaluated videos."""

    grounding_pred: list[list[index.Span]]
    grounding_truth: list[list[tuple[float, float]]]
    grounding_kinds: list[str | None] = field(default_factory=list)  # the event kind asked about, when known
    # The spans of the other events of the asked one's kind in its video, when known (synthetic sets).
    grounding_siblings: list[list[tuple[float, float]] | None] = field(default_factory=list)
    qa_total: int = 0
    qa_correct: int = 0
    events_true: int = 0
    events_predicted: int = 0
    events_matched: int = 0
    events_named: int = 0  # matched with the true event's own caption (normalised)
    grounding_absent_said: int = 0  # true events answered "it does not happen"
    absent_total: int = 0
    absent_correct: int = 0  # events that do not happen answered so

    def summary(self) -> dict[str, Any]:
        scores = index.grounding_scores(self.grounding_pred, self.grounding_truth)
        has_captions = self.events_true > 0
        return {
            "r1_at_0_3": scores["R1@0.3"],
            "r1_at_0_5": scores["R1@0.5"],
            "r1_at_0_7": scores["R1@0.7"],
            "miou": scores["mIoU"],
            "qa_exact": self.qa_correct / self.qa_total if self.qa_total else None,
            "caption_recall": self.events_matched / self.events_true if has_captions else None,
            "caption_precision": (self.events_matched / self.events_predicted if self.events_predicted else 0.0)
            if has_captions else None,
            "caption_recall_named": self.events_named / self.events_true if has_captions else None,
            "caption_precision_named": (self.events_named / self.events_predicted if self.events_predicted else 0.0)
            if has_captions else None,
            "grounding_queries": len(self.grounding_truth),
            "qa_questions": self.qa_total,
            "caption_events": self.events_true,
            "absent_accuracy": self.absent_correct / self.absent_total if self.absent_total else None,
            "absent_said_for_true": self.grounding_absent_said / len(self.grounding_truth) if self.grounding_truth else None,
            "absent_questions": self.absent_total,
        } | self.by_kind() | self.by_siblings()

    def grounding_scores_of(self, rows: list[int]) -> dict[str, float]:
        """``index.grounding_scores`` of the grounding queries at ``rows``."""
        return index.grounding_scores([self.grounding_pred[i] for i in rows], [self.grounding_truth[i] for i in rows])

    def by_kind(self) -> dict[str, Any]:
        """``grounding_<kind>_{r1_at_0_5,miou,queries}`` for each event kind asked about (synthetic sets)."""
        out: dict[str, Any] = {}
        for kind in sorted({k for k in self.grounding_kinds if k is not None}):
            rows = [i for i, k in enumerate(self.grounding_kinds) if k == kind]
            scores = self.grounding_scores_of(rows)
            out |= {f"grounding_{kind}_r1_at_0_5": scores["R1@0.5"], f"grounding_{kind}_miou": scores["mIoU"],
                    f"grounding_{kind}_queries": len(rows)}
        return out

    def by_siblings(self) -> dict[str, Any]:
        """Grounding split by whether the video holds other events of the asked one's kind
        ("the text "SALE" appears" beside "the text "EXIT" appears"), where only the asked
        object, colour or word tells them apart: ``grounding_{r1_at_0_5,queries}_{with_siblings,
        alone}``, and ``grounding_landed_on_sibling``, the share of the first group whose first
        span lands on a sibling instead (IoU >= 0.5). Synthetic sets only."""
        known = [i for i, sib in enumerate(self.grounding_siblings) if sib is not None]
        if not known:
            return {}
        out: dict[str, Any] = {}
        groups = {"with_siblings": [i for i in known if self.grounding_siblings[i]],
                  "alone": [i for i in known if not self.grounding_siblings[i]]}
        for name, rows in groups.items():
            r1 = self.grounding_scores_of(rows)["R1@0.5"] if rows else None
            out |= {f"grounding_r1_at_0_5_{name}": r1, f"grounding_queries_{name}": len(rows)}
        rows = groups["with_siblings"]
        landed = sum(
            bool(self.grounding_pred[i]) and any(
                index.temporal_iou(self.grounding_pred[i][0].as_tuple(), sib) >= 0.5 for sib in self.grounding_siblings[i] or [])
            for i in rows
        )
        out["grounding_landed_on_sibling"] = landed / len(rows) if rows else None
        return out


def _ground(
    lm: Any, tally: Tally, frames, seconds, duration: float, query: str, truth: tuple[float, float],
    kind: str | None = None, siblings: list[tuple[float, float]] | None = None,
) -> None:
    answer = ask(lm, frames, seconds, grounding_question(query), max_new_tokens=32)
    tally.grounding_absent_said += says_absent(answer)
    tally.grounding_pred.append(index.parse_spans(answer, duration_seconds=duration))
    tally.grounding_truth.append([truth])
    tally.grounding_kinds.append(kind)
    tally.grounding_siblings.append(siblings)
    log.debug("grounding %r -> %r (truth %s)", query, answer, truth)


def says_absent(answer: str) -> bool:
    """Whether an answer says the asked event does not happen (``recipe.tasks.ABSENT_ANSWER``)."""
    return normalise_answer(ABSENT_ANSWER) in normalise_answer(answer)


def evaluate_annotations(lm: Any, annotations: Path, videos_dir: Path, *, progress: Progress | None = None) -> dict[str, Any]:
    """Grounding scores on a Charades-STA-style file (``video_id start end##query`` lines)."""
    rows = list(read_charades(annotations))
    tally = Tally([], [])
    cache: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    for done, (video_id, start, end, query) in enumerate(rows, 1):
        path = find_video(videos_dir, video_id)
        if video_id not in cache:
            cache.clear()  # one video's frames at a time: annotation files are grouped by video
            cache[video_id] = read_video(lm, path)
        frames, seconds, duration = cache[video_id]
        _ground(lm, tally, frames, seconds, duration, query, (start, end))
        if progress:
            progress(done, len(rows))
    return tally.summary()


def read_charades(path: Path) -> Iterator[tuple[str, float, float, str]]:
    """(video id, start, end, query) per line of a Charades-STA annotation file."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        head, sep, query = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected 'video_id start end##query', got {line!r}")
        yield parts[0], float(parts[1]), float(parts[2]), query.strip()


def find_video(folder: Path, video_id: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        candidate = folder / f"{video_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: no video file for id {video_id!r} (tried {', '.join(VIDEO_SUFFIXES)})")


def evaluate_synthetic(
    lm: Any, *, seed: int, videos: int, work_dir: Path | None = None, progress: Progress | None = None,
    qa_per_video: int = 2,
) -> dict[str, Any]:
    """Scores on ``videos`` held-out synthetic videos written with ``seed``."""
    from recipe.data import SampleSpec
    from recipe.probes import binding_probe, moment_probe
    from recipe.synth import scene_seed, write_dataset
    from recipe.tasks import make_tasks
    from recipe.world import make_scene

    world = SampleSpec().world
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(work_dir or tmp)
        events_file = write_dataset(folder, videos=videos, seed=seed, params=world)
        by_video: dict[str, list[dict]] = {}
        for line in events_file.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            by_video.setdefault(row["video"], []).append(row)
        tally = Tally([], [])
        for i, name in enumerate(sorted(by_video)):
            frames, seconds, duration = read_video(lm, folder / name)
            rows = by_video[name]
            for row in rows:
                if row["unique"]:
                    siblings = [(r["start_seconds"], r["end_seconds"]) for r in rows
                                if r["kind"] == row["kind"] and r["query"] != row["query"]]
                    _ground(lm, tally, frames, seconds, duration, row["query"], (row["start_seconds"], row["end_seconds"]),
                            row["kind"], siblings)
            scene = make_scene(scene_seed(seed, i), world)
            for task in make_tasks(scene, seed=seed + i, per_kind=qa_per_video, kinds=("qa",)):
                answer = ask(lm, frames, seconds, task.question, max_new_tokens=48)
                tally.qa_total += 1
                tally.qa_correct += normalise_answer(answer) == normalise_answer(task.answer)
            for task in make_tasks(scene, seed=seed + i, per_kind=ABSENT_PER_VIDEO, kinds=("absent",)):
                answer = ask(lm, frames, seconds, task.question, max_new_tokens=32)
                tally.absent_total += 1
                tally.absent_correct += says_absent(answer)
            _score_captions(lm, tally, frames, seconds, duration, rows)
            if progress:
                progress(i + 1, len(by_video))
    binding = binding_probe(
        lambda frames, seconds, question: ask(lm, frames, seconds, question, max_new_tokens=12),
        videos=BINDING_QUESTIONS_PER_VIDEO * videos,
        seed=seed,
    )
    moments = moment_probe(
        lambda frames, seconds, question: ask(lm, frames, seconds, question, max_new_tokens=48),
        moments=MOMENTS_PER_VIDEO * videos,
        seed=seed,
        same=lambda said, want: normalise_answer(said) == normalise_answer(want),
    )
    return (
        tally.summary()
        | {f"binding_{key}": value for key, value in binding.as_dict().items()}
        | {f"moment_{key}": value for key, value in moments.as_dict().items()}
    )


def _score_captions(lm: Any, tally: Tally, frames, seconds, duration: float, rows: list[dict]) -> None:
    from recipe.tasks import CAPTION_TEMPLATES

    answer = ask(lm, frames, seconds, CAPTION_TEMPLATES[0], max_new_tokens=1024)
    predicted = index.parse_dense_captions(answer, duration_seconds=duration)
    truth = [(r["start_seconds"], r["end_seconds"]) for r in rows]
    scores = index.event_scores(predicted, truth, iou_threshold=0.5)
    labels = ([normalise_answer(p.caption or "") for p in predicted], [normalise_answer(r["caption"]) for r in rows])
    named = index.event_scores(predicted, truth, iou_threshold=0.5, labels=labels)
    tally.events_true += len(truth)
    tally.events_predicted += len(predicted)
    tally.events_matched += len(scores.matches)
    tally.events_named += len(named.matches)
