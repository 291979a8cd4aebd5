"""FrameBatch: a frozen value that checks its dims, prints shapes and slices without copying."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import ingest


def batch(t: int = 6) -> ingest.FrameBatch:
    frames = np.arange(t * 3 * 4 * 5, dtype=np.uint8).reshape(t, 3, 4, 5)
    return ingest.FrameBatch(frames=frames, seconds=np.arange(t) * 0.5, video_id="abc")


def test_repr_prints_shapes_not_pixels() -> None:
    text = repr(batch())
    assert "uint8[6, 3, 4, 5]" in text and "0.000..2.500 s" in text
    assert "array" not in text and len(text) < 200


def test_slices_are_views() -> None:
    b = batch()
    part = b[2:4]
    assert len(part) == 2 and part.video_id == "abc"
    assert np.shares_memory(part.frames, b.frames)
    assert list(part.seconds) == [1.0, 1.5]
    window = b.between(1.0, 2.0)
    assert list(window.seconds) == [1.0, 1.5] and np.shares_memory(window.frames, b.frames)
    assert b.to_hwc().shape == (6, 4, 5, 3)


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch().video_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("frames", "seconds", "match"),
    [
        (np.zeros((2, 3, 4, 4), np.float32), np.zeros(2), "uint8"),
        (np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2), "3 channels"),
        (np.zeros((2, 3, 4, 4), np.uint8), np.zeros(3), "2 frames but 3 seconds"),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3), "uint8"),
    ],
)
def test_checks_leading_dims(frames, seconds, match) -> None:
    with pytest.raises(ValueError, match=match):
        ingest.FrameBatch(frames=frames, seconds=seconds, video_id="x")


def test_integer_index_is_rejected() -> None:
    with pytest.raises(TypeError, match="slices"):
        batch()[0]  # type: ignore[index]
