"""The vision-tower warm-up: labels match the pictures, batches are reproducible, the tower learns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import vidlm
from recipe.scene import (
    BACKGROUND_COLOUR_NAMES,
    BACKGROUND_COLOURS,
    OBJECT_COLOUR_NAMES,
    OBJECT_COLOURS,
    SHAPES,
)
from recipe.tasks import calm_moment
from recipe.warmup import (
    ACTIONS,
    DIRECTIONS,
    LABELS,
    StillBatches,
    WarmupConfig,
    labelled_still,
    warm_up_tower,
)
from recipe.world import describe_at, make_scene
from vidlm.processor import Processor, ProcessorConfig


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(2)
    return vidlm.load()


@pytest.mark.parametrize("seed", [5, 17, 40])
def test_each_object_labels_the_token_that_shows_its_colour(lm, seed):
    processor = Processor(lm.processor.tokenizer, ProcessorConfig(video_max_tokens_per_frame=16))
    world = WarmupConfig().world
    still = labelled_still(seed, processor, frame_px=128, world=world)
    assert still.grid.tolist() == [[1, 8, 8]] and still.shapes.shape == still.colours.shape == (16,)
    labelled = still.shapes < len(SHAPES)
    assert torch.equal(labelled, still.colours < len(OBJECT_COLOUR_NAMES))
    # The labels name objects on screen at the still's moment (the scene is the seed's own).
    scene = make_scene(seed, world)
    tenths = calm_moment(scene, np.random.default_rng(seed))
    on_screen = describe_at(scene, tenths / 10).objects
    names = [f"{OBJECT_COLOUR_NAMES[c]} {SHAPES[s]}" for s, c in zip(still.shapes[labelled], still.colours[labelled], strict=True)]
    assert names and set(names) <= set(on_screen)
    # A calm moment: every labelled object rests.
    assert set(still.actions[labelled].tolist()) == {ACTIONS.index("still")}
    assert set(still.directions[labelled].tolist()) == {DIRECTIONS.index("none")}
    # Rows come in merge blocks of 4 patches per token: a labelled token holds its object's colour.
    pixels = still.pixels.reshape(16, 4, 3, 2 * 16 * 16).permute(0, 1, 3, 2).reshape(16, -1, 3)
    for token in labelled.nonzero().flatten().tolist():
        rgb = torch.tensor(OBJECT_COLOURS[OBJECT_COLOUR_NAMES[still.colours[token]]], dtype=torch.float32) / 127.5 - 1
        assert (pixels[token] - rgb).abs().max(dim=1).values.min() < 0.02, token


def test_batches_are_the_same_with_worker_processes(lm):
    cfg = WarmupConfig(stills=12, batch=4, frame_px=64, seed=3)
    alone = list(StillBatches(cfg, lm.processor))
    loader = torch.utils.data.DataLoader(StillBatches(cfg, lm.processor), batch_size=None, num_workers=2)
    key = lambda batch: [batch[2][name].tolist() for name in LABELS] + [batch[0].sum().item()]  # noqa: E731
    assert len(alone) == 3
    assert sorted(map(key, alone)) == sorted(map(key, loader))


def test_warm_up_trains_only_the_tower_and_its_loss_falls(lm):
    model = copy.deepcopy(lm.model)  # never the shared built-in
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = warm_up_tower(model, lm.processor, WarmupConfig(stills=8 * 30, batch=8, frame_px=64, lr=2e-3, seed=1, moving=0.5))
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2  # colour is learned within tens of steps
    after = model.state_dict()
    assert after.keys() == before.keys()  # the head is not part of the checkpoint
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.visual.") for k in changed)


def test_moving_moments_label_what_each_object_is_doing(lm):
    """Moments inside events: two frames 0.5 s apart; a token's action is an event of its object
    under way then, and a moving object's direction is the world's word for its travel."""
    world = WarmupConfig().world
    seen_actions, moves = set(), 0
    for seed in range(30):
        still = labelled_still(seed, lm.processor, frame_px=64, world=world, moving=True)
        labelled = still.shapes < len(SHAPES)
        assert torch.equal(labelled, still.actions < len(ACTIONS)) and labelled.any()
        seen_actions |= {ACTIONS[a] for a in still.actions[labelled].tolist()}
        scene = make_scene(seed, world)
        for token in labelled.nonzero().flatten().tolist():
            action = ACTIONS[still.actions[token]]
            if action == "move":  # the world says which way it goes; the label must agree
                words = {e.value for e in scene.events if e.kind == "move"}
                assert DIRECTIONS[still.directions[token]] in words
                moves += 1
    assert moves >= 3 and len(seen_actions - {"still"}) >= 4


@pytest.mark.parametrize("seed", [5, 23])
def test_background_labels_every_token_with_the_colour_on_screen(lm, seed):
    """With ``background``, every token carries the background's colour, and it is the colour of
    the still's corner pixels (objects start inside the frame, away from its corners)."""
    processor = Processor(lm.processor.tokenizer, ProcessorConfig(video_max_tokens_per_frame=16))
    still = labelled_still(seed, processor, frame_px=128, world=WarmupConfig().world)
    assert still.backgrounds.shape == (16,) and len(set(still.backgrounds.tolist())) == 1
    name = BACKGROUND_COLOUR_NAMES[int(still.backgrounds[0])]
    pixels = still.pixels.reshape(16, 4, 3, 2 * 16 * 16).permute(0, 1, 3, 2).reshape(16, -1, 3)
    corner = pixels[0, 0]  # the top-left pixel of the first frame
    rgb = torch.tensor(BACKGROUND_COLOURS[name], dtype=torch.float32) / 127.5 - 1
    assert (corner - rgb).abs().max() < 0.02
    cfg = WarmupConfig(stills=4, batch=4, frame_px=64, background=True)
    assert "backgrounds" in next(iter(StillBatches(cfg, lm.processor)))[2]
    assert "backgrounds" not in next(iter(StillBatches(WarmupConfig(stills=4, batch=4, frame_px=64), lm.processor)))[2]
