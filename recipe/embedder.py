"""Contrastive fine-tuning of a Qwen3-VL checkpoint into an embedder of event clips.

The result is a Qwen3-VL-Embedding-style checkpoint (same folder format; ``vidlm.load_embedder``
and ``vidlm ingest --embedder`` read it): a clip of one event of the synthetic world (its true
span widened to ``clip_min_seconds``, rendered at ``fps``, times from the clip's first frame) is
embedded as a document, the event's description ("the red circle enters from the left") as a
query under the query instruction, both with ``vidlm.embedding``'s prompt and last-token pooling.
The loss is the symmetric InfoNCE over a batch; documents whose query text is the batch's
same text are not counted as negatives.

Unusual here:
- A batch takes ``events_per_video`` events from each of several videos, so it holds both kinds
  of negatives a library search meets: other events of the same video (same scene, another
  event) and events of other videos (often the same kind of event, another object or text).
- ``fresh_decoder`` re-initialises the decoder (embeddings included) and keeps the vision tower:
  the built-in's decoder has its colour and shape words collapsed onto one vector (bench/RESULTS.md,
  session 18), and a fresh decoder learns them faster than the built-in's unlearns that.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import ingest
from recipe.data import SampleSpec
from recipe.render import render_frames
from recipe.scene import Scene, WorldParams
from recipe.tasks import unique_event_indices
from recipe.train import init_weights, save_checkpoint
from recipe.world import make_scene
from vidlm.embedding import VideoEmbedder, last_token_states, load_embedder, query_input

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderConfig:
    """Schedule and data of ``train_embedder``.

    Attributes:
        steps, lr, warmup_steps: optimiser steps; peak learning rate, reached linearly after
            ``warmup_steps`` and then cosine-decayed to zero.
        batch_items: clips (and as many queries) per step.
        events_per_video: events drawn from each video of a batch.
        temperature: the InfoNCE temperature.
        clip_min_seconds, fps, max_frames, frame_px: how an event's clip is rendered.
        world: the synthetic world the videos come from.
        fresh_decoder: re-initialise the decoder before training (the vision tower is kept).
        freeze_tower: keep the whole vision tower (its mergers included) fixed.
        scenes: draw the videos from this many scenes (a fixed training set); None: a new
            scene for every video.
        seed: data and initialisation seed.
    """

    steps: int = 900
    lr: float = 1e-3
    warmup_steps: int = 30
    batch_items: int = 24
    events_per_video: int = 2
    temperature: float = 0.05
    clip_min_seconds: float = 2.0
    fps: float = 2.0
    max_frames: int = 16
    frame_px: int = 128
    world: WorldParams = field(default_factory=lambda: SampleSpec().world)
    fresh_decoder: bool = True
    freeze_tower: bool = True
    scenes: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_items < 2 or self.events_per_video < 1:
            raise ValueError(f"need batch_items >= 2 and events_per_video >= 1, got "
                             f"{self.batch_items}, {self.events_per_video}")
        if not (self.temperature > 0 and self.fps > 0 and self.max_frames >= 2):
            raise ValueError("temperature and fps must be > 0 and max_frames >= 2")
        if self.scenes is not None and self.scenes < 1:
            raise ValueError(f"scenes={self.scenes}: expected >= 1 or None")


@dataclass(frozen=True)
class EventClip:
    """One event as a training pair: its clip (an embedding input) and its description."""

    video: dict[str, Any]
    query: str
    video_key: int


def event_clips(scene: Scene, video_key: int, cfg: EmbedderConfig, *, indices: Sequence[int] | None = None) -> list[EventClip]:
    """Clips of the scene's events whose description names one event (``indices``: a subset)."""
    chosen = unique_event_indices(scene.events) if indices is None else indices
    out = []
    for i in chosen:
        event = scene.events[i]
        lo, hi = ingest.widen_span(event.start_seconds, event.end_seconds,
                                   min_seconds=cfg.clip_min_seconds, last_seconds=scene.duration_seconds)
        count = min(cfg.max_frames, max(4, round((hi - lo) * cfg.fps) + 1))
        seconds = np.linspace(lo, hi, count + count % 2)
        frames = render_frames(scene, seconds, size_px=cfg.frame_px)
        out.append(EventClip({"video": frames, "timestamps": seconds - seconds[0]}, event.query, video_key))
    return out


def draw_batch(rng: np.random.Generator, cfg: EmbedderConfig) -> list[EventClip]:
    """``batch_items`` clips, ``events_per_video`` from each of fresh random videos."""
    batch: list[EventClip] = []
    while len(batch) < cfg.batch_items:
        key = int(rng.integers(0, cfg.scenes or 2**31 - 1))
        scene = make_scene(key, cfg.world)
        unique = unique_event_indices(scene.events)
        take = min(cfg.events_per_video, len(unique))
        picked = sorted(rng.choice(unique, take, replace=False).tolist()) if take else []
        batch += event_clips(scene, key, cfg, indices=picked)
    return batch[: cfg.batch_items]


def pooled(emb: VideoEmbedder, inputs: Sequence[dict[str, Any]]) -> torch.Tensor:
    """Unit last-token vectors ``[N, D]`` of embedding inputs, with gradients."""
    return F.normalize(last_token_states(emb.model, emb.processor, inputs), dim=-1)


def contrastive_loss(queries: torch.Tensor, docs: torch.Tensor, texts: Sequence[str], temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE; row i's positive is column i, and columns with row i's text are not negatives."""
    same = torch.tensor([[a == b for b in texts] for a in texts], device=queries.device)
    same.fill_diagonal_(False)
    logits = (queries @ docs.T / temperature).masked_fill(same, float("-inf"))
    target = torch.arange(len(texts), device=queries.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def retrieval_scores(queries: np.ndarray, docs: np.ndarray, video_keys: Sequence[int]) -> dict[str, float]:
    """How well each query finds its own clip (row i of both) among all clips.

    Returns ``r1`` (its clip ranks first), ``video_r1`` (the first clip is from its video) and
    ``within_video_r1`` (its clip ranks first among its video's clips).
    """
    scores = queries @ docs.T
    keys = np.asarray(video_keys)
    top = scores.argmax(axis=1)
    rows = np.arange(len(keys))
    within = [np.flatnonzero(keys == keys[i])[scores[i, keys == keys[i]].argmax()] == i for i in rows]
    return {
        "r1": float(np.mean(top == rows)),
        "video_r1": float(np.mean(keys[top] == keys)),
        "within_video_r1": float(np.mean(within)),
    }


def evaluate(emb: VideoEmbedder, cfg: EmbedderConfig, *, seeds: Sequence[int]) -> dict[str, float]:
    """``retrieval_scores`` over every unique event of the videos of ``seeds`` (held out)."""
    clips = [c for s in seeds for c in event_clips(make_scene(s, cfg.world), s, cfg)]
    docs = emb.embed([c.video for c in clips]).numpy()
    queries = emb.embed_queries([c.query for c in clips]).numpy()
    return {**retrieval_scores(queries, docs, [c.video_key for c in clips]), "queries": len(clips)}


def evaluate_embedder(folder: Path, cfg: EmbedderConfig, *, seeds: Sequence[int]) -> dict[str, float]:
    """``evaluate`` of the embedder checkpoint in ``folder``."""
    return evaluate(load_embedder(folder), cfg, seeds=seeds)


def train_embedder(
    out: Path,
    *,
    init: Path,
    cfg: EmbedderConfig = EmbedderConfig(),
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train an embedder from the checkpoint ``init`` and save it to ``out``; returns the losses.

    Args:
        out: the checkpoint folder to write (released format, replaced atomically).
        init: the checkpoint to start from, in the recipe's layout (the built-in, or one from
            ``vidlm train``): its tokenizer, chat template and processor settings are kept.
        cfg: schedule and data.
        device: "cpu" or "cuda".
        progress: called with (step, steps, loss) after every step.
    """
    torch.manual_seed(cfg.seed)
    emb = load_embedder(init, device=device)
    model = emb.model
    if cfg.fresh_decoder:
        init_weights(model.model.language_model, cfg.seed)
    if cfg.freeze_tower:
        model.model.visual.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    model.train()
    start = time.time()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        batch = draw_batch(rng, cfg)
        docs = pooled(emb, [c.video for c in batch])
        queries = pooled(emb, [query_input(c.query) for c in batch])
        loss = contrastive_loss(queries, docs, [c.query for c in batch], cfg.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, cfg.steps, losses[-1])
        if (step + 1) % 50 == 0:
            log.info("step %d/%d loss %.4f %.1fs", step + 1, cfg.steps, losses[-1], time.time() - start)
    model.eval()
    save_checkpoint(model, init, out, frame_px=cfg.frame_px)
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        if (init / name).is_file():  # the clips were processed with the starting point's settings
            (out / name).write_bytes((init / name).read_bytes())
    record = {"init": str(init), "config": asdict(cfg), "losses": losses}
    (out / "training.json").write_text(json.dumps(record, default=str), encoding="utf-8")
    return losses


def _lr_at(step: int, cfg: EmbedderConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps)))
