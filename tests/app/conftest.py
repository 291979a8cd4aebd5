"""Fixtures for the app tests: a tiny trained checkpoint, a folder of short synthetic videos
plus broken files, and a CLI runner. Everything is tiny so the suite runs in a few minutes on
two CPU cores."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

SHARED_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "videos"
BROKEN = ("broken_zero_bytes.mp4", "broken_not_video_jpeg.mp4")
GOOD_COUNT = 3


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-step checkpoint in the released format (its answers are gibberish)."""
    from recipe.data import SampleSpec
    from recipe.train import TrainConfig, train
    from recipe.world import WorldParams

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    spec = SampleSpec(frame_px=64, fps=1.0, world=WorldParams(min_seconds=4, max_seconds=8))
    train(
        out,
        cfg=TrainConfig(
            steps=2,
            accumulation=1,
            model_hidden=64,
            model_layers=2,
            tokenizer_scenes=20,
            sample=spec,
        ),
    )
    return out


def write_videos(folder: Path, *, videos: int = GOOD_COUNT, seed: int = 3) -> list[Path]:
    """Short 64-px synthetic videos (3-5 s at 10 fps) in ``folder``; returns their paths."""
    from recipe.synth import write_dataset
    from recipe.world import WorldParams

    params = WorldParams(size_px=64, min_seconds=3.0, max_seconds=5.0, min_fps=10, max_fps=10)
    write_dataset(folder, videos=videos, seed=seed, params=params)
    return sorted(folder.glob("*.mp4"))


@pytest.fixture(scope="session")
def good_videos(tmp_path_factory) -> list[Path]:
    return write_videos(tmp_path_factory.mktemp("good"))


def broken_files() -> list[Path]:
    found = [SHARED_VIDEOS / name for name in BROKEN if (SHARED_VIDEOS / name).is_file()]
    if not found:
        pytest.skip(f"broken test videos not found in {SHARED_VIDEOS}")
    return found


def make_folder(dst: Path, good: list[Path], *, broken: bool = True) -> Path:
    """A folder holding copies of ``good`` (and the broken files)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in good + (broken_files() if broken else []):
        shutil.copy2(p, dst / p.name)
    return dst


@pytest.fixture
def mixed_folder(tmp_path, good_videos) -> Path:
    return make_folder(tmp_path / "videos", good_videos)


def cli_command() -> list[str]:
    """The ``vidlm`` console script as a subprocess command (works without the script on PATH)."""
    return [sys.executable, "-c", "from app.cli import main; main()"]
