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

Grounding asks about events (enters, moves left, turns blue), which a calm still never shows.
With ``WarmupConfig.moving`` a share of the moments are frame pairs 0.5 s apart (the product's
2 fps) inside an object's event, and each token is also labelled with what its object is doing
(``ACTIONS``) and which way it travels between the two frames (``DIRECTIONS``): the tower's
temporal patch sees both frames, so motion is there to learn. A tower warmed on stills alone
gave a linear probe 0.27 on actions (majority 0.24) and nothing on directions.

Labelling objects alone, the tower forgets the background (its background-change AUC fell from
0.94 to 0.73); with ``WarmupConfig.background`` every token also names the background's colour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from recipe.data import SampleSpec, worker_options
from recipe.scene import (
    BACKGROUND_COLOUR_NAMES,
    OBJECT_COLOUR_NAMES,
    SHAPES,
    ObjectState,
    Scene,
    WorldParams,
    background_at,
    colour_at,
    object_state,
)
from recipe.tasks import calm_moment
from recipe.world import DIRECTIONS as MOVE_DIRECTIONS
from recipe.world import direction_word, make_scene, render_frames
from vidlm.model import Qwen3VL
from vidlm.processor import Processor, process_video

log = logging.getLogger(__name__)

NO_OBJECT_WEIGHT = 0.2  # most tokens hold no object centre; they still teach where objects are not
# What an object is doing during a frame pair: resting, or the kind of the event it is in.
ACTIONS: tuple[str, ...] = ("still", "enter", "appear", "move", "change_colour", "change_size", "collide",
                            "leave", "disappear")
# Its direction of travel between the pair's two frames (the world's words; "none" below MIN_TRAVEL).
DIRECTIONS: tuple[str, ...] = ("none", *MOVE_DIRECTIONS)
MIN_TRAVEL = 0.004  # of the frame side, ~0.5 px at 128 px
PAIR_GAP_SECONDS = 0.5  # the two frames of a pair at the product's 2 fps
# Each per-token label of a Still with its classes (the last, one more, is "no object centre").
LABELS: dict[str, tuple[str, ...]] = {
    "shapes": SHAPES, "colours": OBJECT_COLOUR_NAMES, "actions": ACTIONS, "directions": DIRECTIONS,
}
# With ``WarmupConfig.background``, every token is also labelled with the background's colour
# (the old one during a fade).
BACKGROUND_LABELS: dict[str, tuple[str, ...]] = {"backgrounds": BACKGROUND_COLOUR_NAMES}


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
    moving: float = 0.0  # the share of moments drawn inside an object's event (a pair 0.5 s apart)
    background: bool = False  # also label every token with the background's colour

    @property
    def labels(self) -> dict[str, tuple[str, ...]]:
        """The per-token labels this warm-up trains heads for."""
        return LABELS | BACKGROUND_LABELS if self.background else LABELS


@dataclass(frozen=True)
class Still:
    """One moment (a frame pair) with objects on screen: the processor's pixel rows and per-token labels.

    Each visual token (one merge block of the frame pair, raster order) is labelled with the
    shape, colour, action (``ACTIONS``) and direction of travel (``DIRECTIONS``) of the object
    whose centre (at the pair's middle time) lies in it, or with the extra last class of each
    head (``len(SHAPES)``, ...) where no centre does; where two centres share a token, the one
    drawn on top wins.
    """

    pixels: torch.Tensor  # [patches, P] as the processor hands them to the tower
    grid: torch.Tensor  # [1, 3]
    shapes: torch.Tensor  # [tokens]: index into SHAPES, or len(SHAPES)
    colours: torch.Tensor  # [tokens]: index into OBJECT_COLOUR_NAMES, or len(OBJECT_COLOUR_NAMES)
    actions: torch.Tensor  # [tokens]: index into ACTIONS, or len(ACTIONS)
    directions: torch.Tensor  # [tokens]: index into DIRECTIONS, or len(DIRECTIONS)
    backgrounds: torch.Tensor  # [tokens]: every token the background's index in BACKGROUND_COLOUR_NAMES


def labelled_still(
    seed: int, processor: Processor, *, frame_px: int, world: WorldParams, moving: bool = False
) -> Still:
    """The first moment with an object on screen of the scenes drawn from ``seed`` on (a pure
    function of it): a calm one (both frames of the pair at one time), or with ``moving`` a pair
    ``PAIR_GAP_SECONDS`` apart inside one object's event."""
    while True:
        scene, rng = make_scene(seed, world), np.random.default_rng(seed)
        seconds = _moving_pair(scene, rng) if moving else _calm_pair(scene, rng)
        # Objects in id order, the drawing order (later on top), with their state at the moment.
        shown = [(t, s) for t in scene.objects if (s := object_state(t, seconds)).visible.any()]
        if shown:
            # The processor's own video path (no prompt to tokenise): the rows the tower gets.
            video = process_video(render_frames(scene, seconds, size_px=frame_px), seconds, processor.config)
            merge = processor.config.merge_size
            rows, cols = video.grid_thw[1] // merge, video.grid_thw[2] // merge
            labels = {name: torch.full((rows * cols,), len(classes)) for name, classes in LABELS.items()}
            middle = float(seconds.mean()) * 10
            for track, state in shown:
                row = min(rows - 1, max(0, int(state.y.mean() * rows)))
                col = min(cols - 1, max(0, int(state.x.mean() * cols)))
                token = row * cols + col
                labels["shapes"][token] = SHAPES.index(track.shape)
                labels["colours"][token] = OBJECT_COLOUR_NAMES.index(colour_at(track, middle))
                labels["actions"][token] = ACTIONS.index(_action(scene, track.object_id, middle))
                labels["directions"][token] = DIRECTIONS.index(_direction(state))
            background = BACKGROUND_COLOUR_NAMES.index(background_at(scene.background, middle))
            labels["backgrounds"] = torch.full((rows * cols,), background)
            return Still(video.patches, torch.tensor([video.grid_thw]), **labels)
        seed += 1_000_003  # no such moment with an object: the next scene of this seed's own sequence


def _calm_pair(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    tenths = calm_moment(scene, rng)
    return np.full(2, tenths / 10) if tenths is not None else np.empty(0)


def _moving_pair(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Two times ``PAIR_GAP_SECONDS`` apart starting inside a random object event (none: empty)."""
    events = [e for e in scene.events if e.object_ids]
    if not events:
        return np.empty(0)
    event = events[int(rng.integers(len(events)))]
    start = int(rng.integers(event.start_tenths, max(event.start_tenths + 1, event.end_tenths - 2)))
    return np.array([start / 10, min(start / 10 + PAIR_GAP_SECONDS, scene.duration_tenths / 10)])


def _action(scene: Scene, object_id: int, tenths: float) -> str:
    """The kind of the first event of ``object_id`` under way at ``tenths``, else "still"."""
    for event in scene.events:
        if object_id in event.object_ids and event.start_tenths <= tenths <= event.end_tenths:
            return event.kind
    return "still"


def _direction(state: ObjectState) -> str:
    dx, dy = float(state.x[-1] - state.x[0]), float(state.y[-1] - state.y[0])
    return "none" if np.hypot(dx, dy) < MIN_TRAVEL else direction_word(dx, dy)


class StillBatches(torch.utils.data.IterableDataset):
    """Batches of fresh stills; worker ``k`` of ``n`` draws batches ``k, k + n, ...`` so every
    batch number (and its stills) is the same whatever the number of workers."""

    def __init__(self, cfg: WarmupConfig, processor: Processor) -> None:
        self.cfg, self.processor = cfg, processor

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
        info = torch.utils.data.get_worker_info()
        first, stride = (info.id, info.num_workers) if info else (0, 1)
        batches = -(-self.cfg.stills // self.cfg.batch)
        for number in range(first, batches, stride):
            seeds = [self.cfg.seed * 1_000_000_007 + number * self.cfg.batch + i for i in range(self.cfg.batch)]
            stills = [
                labelled_still(s, self.processor, frame_px=self.cfg.frame_px, world=self.cfg.world,
                               moving=bool(np.random.default_rng([s, 1]).random() < self.cfg.moving))
                for s in seeds
            ]
            labels = {name: torch.cat([getattr(s, name) for s in stills]) for name in self.cfg.labels}
            yield torch.cat([s.pixels for s in stills]), torch.cat([s.grid for s in stills]), labels



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
    norm = torch.nn.LayerNorm(width).to(device)
    labels_of = cfg.labels
    head = torch.nn.ModuleDict({name: torch.nn.Linear(width, len(classes) + 1) for name, classes in labels_of.items()})
    head.to(device)
    weights = {name: torch.tensor([1.0] * len(classes) + [NO_OBJECT_WEIGHT], device=device)
               for name, classes in labels_of.items()}
    optimizer = torch.optim.AdamW([*tower.parameters(), *norm.parameters(), *head.parameters()], lr=cfg.lr)
    loader = torch.utils.data.DataLoader(
        StillBatches(cfg, processor), batch_size=None, **worker_options(cfg.workers, prefetch_factor=4)
    )
    steps = -(-cfg.stills // cfg.batch)
    losses: list[float] = []
    for step, (pixels, grid, labels) in enumerate(loader, 1):
        hidden = norm(tower_features(model, pixels.to(device), grid.to(device)))
        loss = sum(
            (F.cross_entropy(head[name](hidden), labels[name].to(device), weight=weights[name]) for name in labels_of),
            torch.zeros((), device=device),
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
