"""The tiny trained checkpoint that the checkpoint-surgery tests (grow, spread) start from, with
their ``small()`` config and ``logits()`` helper.

Importlib mode does not put the repository root on ``sys.path``; these tests add it, so that
they can import those helpers as ``tests.recipe.conftest``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = str(Path(__file__).resolve().parents[2])


def pytest_configure() -> None:
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)


def small(steps: int, **kw):
    """A tiny TrainConfig: 64 hidden, 4 layers (4 query / 2 key-value heads, DeepStack into layers
    0-2), 4-8 s videos at 64 px."""
    from recipe.data import SampleSpec
    from recipe.train import TrainConfig
    from recipe.world import WorldParams

    spec = SampleSpec(frame_px=64, fps=1.0, world=WorldParams(min_seconds=4.0, max_seconds=8.0))
    return TrainConfig(steps=steps, accumulation=2, lr=3e-3, warmup_steps=1, log_every=1000, save_every=1000,
                       model_hidden=64, model_layers=4, tokenizer_scenes=40, sample=spec, **kw)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    """A fresh tiny model after 2 steps of ``small`` (tied embeddings); tests read it, never write it."""
    from recipe.train import train

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("tiny") / "base"
    train(out, cfg=small(2))
    return out
