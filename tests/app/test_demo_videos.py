"""The demo's videos: the built-in model's world, written once and kept."""

from __future__ import annotations

import json

import numpy as np

from app.serve import write_demo_videos
from recipe.data import SampleSpec


def test_demo_videos_are_written_once_in_the_builtin_world(tmp_path):
    folder = write_demo_videos(tmp_path / "videos", videos=1, seed=4)
    mp4 = sorted(folder.glob("*.mp4"))
    rows = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert len(mp4) == 1 and rows and {r["video"] for r in rows} == {mp4[0].name}
    assert rows[0]["duration_seconds"] <= 30.0
    # Slow actions: the world the built-in model is trained and evaluated on.
    object_rows = [r for r in rows if r["kind"] not in ("text", "background")]
    assert object_rows and SampleSpec().world.action_scale > 1
    assert np.median([r["end_seconds"] - r["start_seconds"] for r in object_rows]) >= 3.0
    before = mp4[0].stat().st_mtime_ns
    assert write_demo_videos(folder, videos=1, seed=4) == folder
    assert mp4[0].stat().st_mtime_ns == before  # present: not written again
