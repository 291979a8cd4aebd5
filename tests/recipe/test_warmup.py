"""The vision-tower warm-up: labels match the pictures, batches are reproducible, the tower learns."""

from __future__ import annotations

import copy

import pytest
import torch

import vidlm
from recipe.scene import OBJECT_COLOUR_NAMES, OBJECT_COLOURS, SHAPES
from recipe.warmup import StillBatches, WarmupConfig, one_object_still, warm_up_tower


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(2)
    return vidlm.load()


def test_a_still_shows_its_one_object_in_its_colour(lm):
    still = one_object_still(5, lm.processor, frame_px=64, world=WarmupConfig().world)
    assert 0 <= still.shape < len(SHAPES) and still.grid.tolist() == [[1, 4, 4]]
    # The processor's rows hold the object's colour (normalised to [-1, 1]) somewhere.
    rgb = torch.tensor(OBJECT_COLOURS[OBJECT_COLOUR_NAMES[still.colour]], dtype=torch.float32) / 127.5 - 1
    pixels = still.pixels.reshape(-1, 3, 2 * 16 * 16).transpose(1, 2).reshape(-1, 3)
    assert (pixels - rgb).abs().max(dim=1).values.min() < 0.02


def test_batches_are_the_same_with_worker_processes(lm):
    cfg = WarmupConfig(stills=12, batch=4, frame_px=64, seed=3)
    alone = list(StillBatches(cfg, lm.processor))
    loader = torch.utils.data.DataLoader(StillBatches(cfg, lm.processor), batch_size=None, num_workers=2)
    shared = sorted(loader, key=lambda b: b[2].tolist() + b[3].tolist())
    assert len(alone) == 3
    assert sorted(b[2].tolist() + b[3].tolist() for b in alone) == [b[2].tolist() + b[3].tolist() for b in shared]


def test_warm_up_trains_only_the_tower_and_its_loss_falls(lm):
    model = copy.deepcopy(lm.model)  # never the shared built-in
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = warm_up_tower(model, lm.processor, WarmupConfig(stills=8 * 30, batch=8, frame_px=64, lr=2e-3, seed=1))
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.2  # colour is learned within tens of steps
    after = model.state_dict()
    assert after.keys() == before.keys()  # the head is not part of the checkpoint
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.visual.") for k in changed)
