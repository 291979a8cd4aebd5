"""The embedder recipe (``recipe.embedder``): its loss, its retrieval scores, a short run."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import vidlm
from recipe.embedder import (
    EmbedderConfig,
    contrastive_loss,
    draw_batch,
    event_clips,
    retrieval_scores,
    train_embedder,
)
from recipe.world import WorldParams, make_scene

# Four scenes seen again and again: the loss must fall within a few dozen steps (it did by
# 0.65-1.5 for seeds 0-3).
SMALL = EmbedderConfig(steps=30, lr=1e-3, warmup_steps=2, batch_items=8, events_per_video=2, frame_px=64,
                       max_frames=6, temperature=0.1, scenes=4,
                       world=WorldParams(size_px=64, min_seconds=6.0, max_seconds=10.0, action_scale=2.0))


def test_retrieval_scores_on_known_vectors():
    docs = np.eye(4, dtype=np.float32)
    # query 0 finds its clip; 1 finds clip 0 (another video); 2 finds clip 3 (its own video, wrong clip);
    # 3 finds clip 2 (its video): keys 0, 1, 2, 2.
    queries = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0.2, 0.9], [0, 0, 0.9, 0.2]], np.float32)
    got = retrieval_scores(queries, docs, [0, 1, 2, 2])
    assert got == {"r1": 0.25, "video_r1": 0.75, "within_video_r1": 0.5}


def test_contrastive_loss_ignores_documents_with_the_same_text():
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    d = q.clone()
    d[2] = q[0]  # the third document is a copy of the first, with the first's text
    loss_same = contrastive_loss(q, d, ["a", "b", "a"], 0.05)
    loss_other = contrastive_loss(q, d, ["a", "b", "c"], 0.05)
    assert loss_same < loss_other
    assert contrastive_loss(q, q, ["a", "b", "c"], 0.05) < 1e-3


def test_event_clips_cover_the_events_and_start_at_zero():
    scene = make_scene(7, SMALL.world)
    clips = event_clips(scene, 7, SMALL)
    assert clips and {c.query for c in clips} <= {e.query for e in scene.events}
    for c in clips:
        frames, seconds = c.video["video"], c.video["timestamps"]
        assert frames.shape[1:] == (64, 64, 3) and frames.dtype == np.uint8
        assert seconds[0] == 0 and len(seconds) % 2 == 0 and seconds[-1] >= SMALL.clip_min_seconds - 1e-9
    fresh = dataclasses.replace(SMALL, scenes=None)
    batch = draw_batch(np.random.default_rng(0), fresh)
    assert len(batch) == fresh.batch_items and len({c.video_key for c in batch}) >= fresh.batch_items // 2
    assert {c.video_key for c in draw_batch(np.random.default_rng(0), SMALL)} <= set(range(SMALL.scenes))


def test_a_short_run_lowers_the_loss_and_saves_a_loadable_embedder(base, tmp_path):
    out = tmp_path / "embedder"
    losses = train_embedder(out, init=base, cfg=SMALL)
    assert len(losses) == SMALL.steps
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.3
    emb = vidlm.load_embedder(out)
    vectors = emb.embed([{"text": "the red circle enters"}, {"text": "the blue square leaves"}])
    assert vectors.shape == (2, emb.dim) and torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_config_is_validated():
    with pytest.raises(ValueError, match="batch_items"):
        EmbedderConfig(batch_items=1)
    with pytest.raises(ValueError, match="scenes"):
        EmbedderConfig(scenes=0)


def test_the_saved_embedder_keeps_the_starting_points_processor_settings(base, tmp_path):
    out = tmp_path / "embedder"
    train_embedder(out, init=base, cfg=EmbedderConfig(steps=1, batch_items=2, events_per_video=1, frame_px=128,
                                                      max_frames=4, world=SMALL.world))
    for name in ("video_preprocessor_config.json", "preprocessor_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes()
    assert vidlm.load_embedder(out).processor.config == vidlm.load_embedder(base).processor.config


def test_train_embedder_command_writes_an_embedder_and_scores_it(base, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "cli-embedder"
    done = subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", "train-embedder", str(out), "--init", str(base),
         "--steps", "2", "--batch-items", "4", "--eval-videos", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    scores = json.loads(done.stdout.strip().splitlines()[-2])
    assert set(scores) == {"r1", "video_r1", "within_video_r1", "queries"} and scores["queries"] >= 1
    assert scores["video_r1"] == 1.0  # one held-out video: every first clip is from it
    assert done.stdout.strip().splitlines()[-1] == str(out)
    assert json.loads((out / "training.json").read_text())["config"]["steps"] == 2
    assert vidlm.load_embedder(out).dim == vidlm.load_embedder(base).dim
