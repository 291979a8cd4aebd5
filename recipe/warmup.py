"""Vision-tower warm-up: teach the tower to see objects before any language stage.

A tiny tower trained only through the language model's answers does not keep what objects
look like: the answers can lean on priors, and the built-in model's visual tokens gave a
linear probe 0.38 on object colour and 0.22 on shape. Here a temporary head, shared by every
visual token, labels each token of a still with the shape and colour of the object whose
centre lies in it (or none), over a stream of freshly rendered stills of the evaluation world;
the head is thrown away and the tower keeps what it learned. Dense per-token labels give every
still several examples at once and the same weights at every position; a head on the whole
still's flattened features (one label a still) stayed at chance for ~150,000 stills at 128 px
on a lent H200. Here colour is learned within ~6,000 stills and shape slowly
(``bench/RESULTS.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from recipe.data import SampleSpec, worker_options
from recipe.scene import OBJECT_COLOUR_NAMES, SHAPES, WorldParams, colour_at, object_state
from recipe.tasks import calm_moment
from recipe.world import make_scene, render_frames
from vidlm.model import Qwen3VL
from vidlm.processor import Processor, process_video

log = logging.getLogger(__name__)

NO_OBJECT_WEIGHT = 0.2  # most tokens hold no object centre; they still teach where objects are not


@dataclass(frozen=True)
class WarmupConfig:
    """How many stills, how they are drawn, and how the tower is trained on them."""

    stills: int = 350_000
    batch: int = 64
    frame_px: int = 128
    lr: float = 1e-3
    seed: int = 0
    workers: int = 0
    world: WorldParams = field(default_factory=lambda: SampleSpec().world)  # the evaluation world


@dataclass(frozen=True)
class Still:
    """One calm moment with objects on screen: the processor's pixel rows and per-token labels.

    Each visual token (one merge block of the frame pair, raster order) is labelled with the
    shape and colour of the object whose centre lies in it, or with the extra last class of each
    head (``len(SHAPES)``, ``len(OBJECT_COLOUR_NAMES)``) where no centre does; where two centres
    share a token, the one drawn on top wins.
    """

    pixels: torch.Tensor  # [patches, P] as the processor hands them to the tower
    grid: torch.Tensor  # [1, 3]
    shapes: torch.Tensor  # [tokens]: index into SHAPES, or len(SHAPES)
    colours: torch.Tensor  # [tokens]: index into OBJECT_COLOUR_NAMES, or len(OBJECT_COLOUR_NAMES)


def labelled_still(seed: int, processor: Processor, *, frame_px: int, world: WorldParams) -> Still:
    """The first calm moment with an object on screen of the scenes drawn from ``seed`` on (a pure function of it)."""
    while True:
        scene, rng = make_scene(seed, world), np.random.default_rng(seed)
        tenths = calm_moment(scene, rng)
        seconds = np.full(2, tenths / 10) if tenths is not None else np.empty(0)
        # Objects in id order, the drawing order (later on top), with their state at the moment.
        shown = [(t, s) for t in scene.objects if (s := object_state(t, seconds[:1])).visible.any()]
        if shown:
            # The processor's own video path (no prompt to tokenise): the rows the tower gets.
            video = process_video(render_frames(scene, seconds, size_px=frame_px), seconds, processor.config)
            merge = processor.config.merge_size
            rows, cols = video.grid_thw[1] // merge, video.grid_thw[2] // merge
            shapes = torch.full((rows * cols,), len(SHAPES))
            colours = torch.full((rows * cols,), len(OBJECT_COLOUR_NAMES))
            for track, state in shown:
                row = min(rows - 1, max(0, int(state.y[0] * rows)))
                col = min(cols - 1, max(0, int(state.x[0] * cols)))
                shapes[row * cols + col] = SHAPES.index(track.shape)
                colours[row * cols + col] = OBJECT_COLOUR_NAMES.index(colour_at(track, tenths))
            return Still(video.patches, torch.tensor([video.grid_thw]), shapes, colours)
        seed += 1_000_003  # no calm moment with an object: the next scene of this seed's own sequence


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
            stills = [labelled_still(s, self.processor, frame_px=self.cfg.frame_px, world=self.cfg.world) for s in seeds]
            yield (torch.cat([s.pixels for s in stills]), torch.cat([s.grid for s in stills]),
                   torch.cat([s.shapes for s in stills]), torch.cat([s.colours for s in stills]))


def tower_features(model: Qwen3VL, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Every visual token with its DeepStack features beside it: [tokens, (1 + levels) * D]."""
    out = model.model.visual(pixels, grid)
    return torch.cat([out.tokens, *out.deepstack], dim=-1)


def warm_up_tower(
    model: Qwen3VL,
    processor: Processor,
    cfg: WarmupConfig = WarmupConfig(),
    *,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train ``model``'s vision tower in place to label every token of a still; returns each step's loss.

    The head (a LayerNorm and one linear layer per label, shared by all tokens) exists only
    here, so the model keeps the released checkpoint format. ``processor`` must plan frames the
    way later stages will (its video token budget), since the tower learns at that resolution.
    Tokens without an object centre weigh ``NO_OBJECT_WEIGHT`` in the loss.
    """
    torch.manual_seed(cfg.seed)
    tower = model.model.visual
    tower.to(device).train()
    vision = model.config.vision
    width = (1 + len(vision.deepstack_visual_indexes)) * vision.out_hidden_size  # tower_features' width
    head = torch.nn.ModuleDict({
        "norm": torch.nn.LayerNorm(width),
        "shape": torch.nn.Linear(width, len(SHAPES) + 1),
        "colour": torch.nn.Linear(width, len(OBJECT_COLOUR_NAMES) + 1),
    }).to(device)
    weights = {name: torch.tensor([1.0] * classes + [NO_OBJECT_WEIGHT], device=device)
               for name, classes in (("shape", len(SHAPES)), ("colour", len(OBJECT_COLOUR_NAMES)))}
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=cfg.lr)
    loader = torch.utils.data.DataLoader(
        StillBatches(cfg, processor), batch_size=None, **worker_options(cfg.workers, prefetch_factor=4)
    )
    steps = -(-cfg.stills // cfg.batch)
    losses: list[float] = []
    for step, (pixels, grid, shapes, colours) in enumerate(loader, 1):
        hidden = head["norm"](tower_features(model, pixels.to(device), grid.to(device)))
        loss = F.cross_entropy(head["shape"](hidden), shapes.to(device), weight=weights["shape"]) + F.cross_entropy(
            head["colour"](hidden), colours.to(device), weight=weights["colour"]
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
