"""Vision-tower warm-up: teach the tower to tell shapes apart before any language stage.

A tiny tower trained only through the language model's answers learns colours but not shapes:
the answers can lean on priors, and shapes of a few pixels at random offsets inside 16-pixel
patches take a few hundred thousand examples to generalise. Here a temporary head on the
tower's tokens and DeepStack features classifies the one object of a still (its shape and its
colour) over a stream of freshly rendered one-object stills; the head is thrown away and the
tower keeps what it learned. On a lent H200 at 128 px, held-out shape accuracy stayed near
chance until ~150,000 stills and reached 0.81 by ~330,000 (``bench/RESULTS.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from recipe.data import SampleSpec, worker_options
from recipe.scene import OBJECT_COLOUR_NAMES, SHAPES, WorldParams
from recipe.tasks import calm_moment
from recipe.world import describe_at, make_scene, render_frames
from vidlm.model import Qwen3VL
from vidlm.processor import Processor, process_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmupConfig:
    """How many stills, how they are drawn, and how the tower is trained on them."""

    stills: int = 350_000
    batch: int = 64
    frame_px: int = 128
    lr: float = 5e-4
    seed: int = 0
    workers: int = 0
    world: WorldParams = field(default_factory=lambda: SampleSpec().world)  # the evaluation world


@dataclass(frozen=True)
class Still:
    """One moment with exactly one object: the processor's pixel rows and the object's labels."""

    pixels: torch.Tensor  # [patches, P] as the processor hands them to the tower
    grid: torch.Tensor  # [1, 3]
    shape: int  # index into SHAPES
    colour: int  # index into OBJECT_COLOUR_NAMES


def one_object_still(seed: int, processor: Processor, *, frame_px: int, world: WorldParams) -> Still:
    """The first calm one-object moment of the scenes drawn from ``seed`` on (a pure function of it)."""
    while True:
        scene, rng = make_scene(seed, world), np.random.default_rng(seed)
        tenths = calm_moment(scene, rng)
        objects = describe_at(scene, tenths / 10).objects if tenths is not None else ()
        if len(objects) == 1:
            colour, shape = objects[0].rsplit(" ", 1)
            seconds = np.full(2, tenths / 10)
            # The processor's own video path (no prompt to tokenise): the rows the tower gets.
            video = process_video(render_frames(scene, seconds, size_px=frame_px), seconds, processor.config)
            return Still(video.patches, torch.tensor([video.grid_thw]), SHAPES.index(shape),
                         OBJECT_COLOUR_NAMES.index(colour))
        seed += 1_000_003  # no calm one-object moment: the next scene of this seed's own sequence


class StillBatches(torch.utils.data.IterableDataset):
    """Batches of fresh stills; worker ``k`` of ``n`` draws batches ``k, k + n, ...`` so every
    batch number (and its stills) is the same whatever the number of workers."""

    def __init__(self, cfg: WarmupConfig, processor: Processor) -> None:
        self.cfg, self.processor = cfg, processor

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        first, stride = (info.id, info.num_workers) if info else (0, 1)
        batches = -(-self.cfg.stills // self.cfg.batch)
        for number in range(first, batches, stride):
            seeds = (self.cfg.seed * 1_000_000_007 + number * self.cfg.batch + i for i in range(self.cfg.batch))
            stills = [one_object_still(s, self.processor, frame_px=self.cfg.frame_px, world=self.cfg.world) for s in seeds]
            yield (torch.cat([s.pixels for s in stills]), torch.cat([s.grid for s in stills]),
                   torch.tensor([s.shape for s in stills]), torch.tensor([s.colour for s in stills]))


def tower_features(model: Qwen3VL, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Each still's visual tokens and DeepStack features, flattened: [stills, tokens * (1 + levels) * D]."""
    out = model.model.visual(pixels, grid)
    stills = grid.shape[0]
    features = torch.cat([out.tokens, *out.deepstack], dim=-1)
    return features.reshape(stills, features.shape[0] // stills, -1).flatten(1)


def warm_up_tower(
    model: Qwen3VL,
    processor: Processor,
    cfg: WarmupConfig = WarmupConfig(),
    *,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train ``model``'s vision tower in place to classify one-object stills; returns each step's loss.

    The head (a LayerNorm and one linear layer per label) exists only here, so the model keeps
    the released checkpoint format. ``processor`` must plan frames the way later stages will
    (its video token budget), since the tower learns at that resolution.
    """
    torch.manual_seed(cfg.seed)
    tower = model.model.visual
    tower.to(device).train()
    probe = one_object_still(cfg.seed, processor, frame_px=cfg.frame_px, world=cfg.world)
    with torch.no_grad():
        width = tower_features(model, probe.pixels.to(device), probe.grid).shape[1]
    head = torch.nn.ModuleDict({
        "norm": torch.nn.LayerNorm(width),
        "shape": torch.nn.Linear(width, len(SHAPES)),
        "colour": torch.nn.Linear(width, len(OBJECT_COLOUR_NAMES)),
    }).to(device)
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=cfg.lr)
    loader = torch.utils.data.DataLoader(
        StillBatches(cfg, processor), batch_size=None, **worker_options(cfg.workers, prefetch_factor=4)
    )
    steps = -(-cfg.stills // cfg.batch)
    losses: list[float] = []
    for step, (pixels, grid, shape, colour) in enumerate(loader, 1):
        hidden = head["norm"](tower_features(model, pixels.to(device), grid))
        loss = F.cross_entropy(head["shape"](hidden), shape.to(device)) + F.cross_entropy(
            head["colour"](hidden), colour.to(device)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, steps, losses[-1])
        if step % 100 == 0:
            log.info("tower warm-up step %d/%d loss %.4f", step, steps, losses[-1])
    tower.eval()
    return losses
