"""Training samples from the synthetic world: frames at planned times, a question, an answer.

Each sample is a pure function of its seed: a scene, the frame times a 2-fps plan would pick
(snapped to the scene's real frame times, so variable-frame-rate scenes are timed by their
frames, as ingest times real files), the frames rendered at those times, one task, and the
chat messages the model sees. ``encode`` turns a sample into model inputs with labels only on
the answer tokens (and the closing ``<|im_end|>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recipe.tasks import Task, TaskKind, make_tasks
from recipe.world import Scene, WorldParams, make_scene, render_frames

IGNORE = -100


@dataclass(frozen=True)
class SampleSpec:
    """How training samples are drawn."""

    frame_px: int = 96
    fps: float = 2.0
    max_frames: int = 128
    world: WorldParams = WorldParams(min_seconds=8.0, max_seconds=60.0)
    kinds: tuple[TaskKind, ...] = ("grounding", "grounding", "grounding", "qa", "caption", "count", "order")


@dataclass(frozen=True)
class Sample:
    seed: int
    scene: Scene
    task: Task
    frames: np.ndarray  # uint8 [T, H, W, 3]
    seconds: np.ndarray  # float64 [T]

    def messages(self) -> list[dict]:
        return [
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": self.frames, "timestamps": self.seconds},
                    {"type": "text", "text": self.task.question},
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
    """One training sample, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    scene = make_scene(seed, spec.world)
    kind = spec.kinds[int(rng.integers(len(spec.kinds)))]
    tasks = make_tasks(scene, seed=seed, per_kind=2, kinds=(kind,)) or make_tasks(
        scene, seed=seed, per_kind=2, kinds=("caption",)
    )
    task = tasks[int(rng.integers(len(tasks)))]
    seconds = planned_seconds(scene.frame_seconds, fps=spec.fps, max_frames=spec.max_frames)
    frames = render_frames(scene, seconds, size_px=spec.frame_px)
    return Sample(seed, scene, task, frames, seconds)


def encode(processor, sample: Sample) -> dict[str, torch.Tensor]:
    """Model inputs for the prompt + answer, with ``labels`` (-100 outside the answer)."""
    batch = processor(sample.messages())
    answer = processor.tokenizer.encode(sample.task.answer + "<|im_end|>")
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


def corpus_texts(seeds: Sequence[int], spec: SampleSpec) -> list[str]:
    """Questions, answers and timestamp strings to train the tokenizer on."""
    texts = ["user", "assistant", "system", "\n"]
    for seed in seeds:
        scene = make_scene(seed, spec.world)
        for task in make_tasks(scene, seed=seed, per_kind=3):
            texts += [task.question, task.answer]
    texts += [f"<{tenths / 10:.1f} seconds>" for tenths in range(0, 36000, 7)]
    return texts
