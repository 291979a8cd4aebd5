"""Fixtures for the web-app tests: tiny playable videos, AppTest runs of single pages."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import streamlit as st

HERE = Path(__file__).parent


def make_video(path: Path, seconds: int = 20, size: str = "320x240") -> Path:
    """A small H.264 test-pattern video (needs the ffmpeg binary)."""
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate=10",
            "-t",
            str(seconds),
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-g",
            "10",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """Two 20-second videos, red.mp4 and blue.mp4."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    folder = tmp_path_factory.mktemp("videos")
    for name in ("red", "blue"):
        make_video(folder / f"{name}.mp4")
    return folder


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    """Every test starts with no cached backend or tables and the fake backend selected."""
    monkeypatch.setenv("VIDLM_UI_BACKEND", "fake")
    for name in ("VIDLM_UI_FAKE_DIR", "VIDLM_UI_FAKE_SCENARIO", "VIDLM_UI_MEDIA_ROUTE"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()
