"""Shared helpers for index tests: small libraries of random vectors in tmp_path.

The helpers are handed out as fixtures (``make_entry``, ``make_segments``) because tests run
with --import-mode=importlib, where test files cannot import conftest by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index import Library, Segment, VideoEntry

DIM = 16


def _entry(
    video_id: str, *, path: str | None = None, status: str = "ok", **kw: object
) -> VideoEntry:
    return VideoEntry(
        video_id=video_id,
        path=path or f"/videos/{video_id}.mp4",
        size_bytes=1000,
        status=status,  # type: ignore[arg-type]
        duration_seconds=kw.pop("duration_seconds", 60.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def _segments(n: int, *, step: float = 5.0, prefix: str = "event") -> list[Segment]:
    return [Segment(i * step, i * step + step, f"{prefix} {i}") for i in range(n)]


@pytest.fixture
def make_entry():  # noqa: ANN201
    return _entry


@pytest.fixture
def make_segments():  # noqa: ANN201
    return _segments


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def lib_path(tmp_path: Path) -> Path:
    return tmp_path / "library"


@pytest.fixture
def filled(lib_path: Path, rng: np.random.Generator) -> Library:
    """A committed library: v1 (4 segments), v2 (3 segments), v3 (error row)."""
    lib = Library.open(lib_path, create=True, embedder_id="random-16", dimension=DIM)
    lib.upsert_video(_entry("v1"), _segments(4), rng.normal(size=(4, DIM)))
    lib.upsert_video(_entry("v2"), _segments(3, prefix="scene"), rng.normal(size=(3, DIM)))
    lib.upsert_video(_entry("v3", status="error", error_message="moov atom not found"), [])
    lib.commit()
    return lib
