"""Written datasets: deterministic events.jsonl, real H.264 files whose decoded frame times are
the scene's times (VFR kept), and pixels that match the renderer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import av
import numpy as np
import pytest

from recipe.synth import EVENTS_FILE, scene_seed, video_name, write_dataset
from recipe.world import WorldParams, make_scene, render_frames

PARAMS = WorldParams(size_px=64, min_seconds=3.0, max_seconds=8.0, vfr_probability=0.5)
VFR = dataclasses.replace(PARAMS, vfr_probability=1.0)


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(seconds ``[T]``, rgb frames ``[T, H, W, 3]``) of a file, from each frame's PTS."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = list(container.decode(stream))
    seconds = np.array([float(f.pts * f.time_base) for f in frames])
    return seconds, np.stack([f.to_ndarray(format="rgb24") for f in frames])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    calls: list[tuple[int, int]] = []
    write_dataset(out, videos=3, seed=11, params=PARAMS, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    return out


def test_same_seed_gives_the_same_events_bytes(dataset: Path, tmp_path: Path) -> None:
    again = write_dataset(tmp_path / "again", videos=3, seed=11, params=PARAMS)
    assert again.read_bytes() == (dataset / EVENTS_FILE).read_bytes()
    other = write_dataset(tmp_path / "other", videos=3, seed=12, params=PARAMS)
    assert other.read_bytes() != again.read_bytes()


def test_events_jsonl_rows_are_the_scene_events(dataset: Path) -> None:
    rows = [json.loads(line) for line in (dataset / EVENTS_FILE).read_text().splitlines()]
    expected = [
        (video_name(i), e.query, e.start_seconds, e.end_seconds, e.caption, e.kind)
        for i in range(3)
        for e in make_scene(scene_seed(11, i), PARAMS).events
    ]
    got = [
        (r["video"], r["query"], r["start_seconds"], r["end_seconds"], r["caption"], r["kind"])
        for r in rows
    ]
    assert got == expected
    for row in rows:
        assert (dataset / row["video"]).is_file()
        assert 0 <= row["start_seconds"] < row["end_seconds"] <= row["duration_seconds"]
        assert isinstance(row["unique"], bool)


def test_decoded_frame_times_and_pixels_match_the_scene(dataset: Path) -> None:
    for index in range(3):
        scene = make_scene(scene_seed(11, index), PARAMS)
        seconds, frames = _decode(dataset / video_name(index))
        assert seconds.shape == scene.frame_seconds.shape
        np.testing.assert_allclose(seconds, scene.frame_seconds, atol=1e-3, rtol=0)
        rendered = render_frames(scene, scene.frame_seconds).astype(np.int16)
        assert np.abs(frames.astype(np.int16) - rendered).mean() < 6.0


def test_vfr_files_are_really_variable(tmp_path: Path) -> None:
    write_dataset(tmp_path, videos=1, seed=2, params=VFR)
    seconds, _ = _decode(tmp_path / video_name(0))
    intervals = np.diff(seconds)
    assert intervals.max() - intervals.min() > 0.01, "frame intervals change inside the file"
    np.testing.assert_allclose(
        seconds, make_scene(scene_seed(2, 0), VFR).frame_seconds, atol=1e-3, rtol=0
    )


def test_bad_arguments_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="videos=0"):
        write_dataset(tmp_path, videos=0, seed=1)
    with pytest.raises(ValueError, match="seed=-2"):
        write_dataset(tmp_path, videos=1, seed=-2)
