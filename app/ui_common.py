"""Shared pieces of the web app's pages: the backend, cached tables, time labels, error display.

The backend is one object per server (``st.cache_resource``, keyed by the environment that
chose it); tables are ``st.cache_data`` keyed by the backend's ``version()``, so an ingest
shows up on the next rerun without reloading anything else.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path

import polars as pl
import streamlit as st

from app.ui_backend import (
    AppBackend,
    BackendError,
    EmptyLibraryError,
    backend_from_env,
    backend_key,
)

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Loading the library…")
def _backend_for(key: tuple[str, ...]) -> AppBackend:
    return backend_from_env()


def get_backend() -> AppBackend:
    """The server's backend (built once per environment)."""
    return _backend_for(backend_key())


def cache_key(backend: AppBackend) -> tuple[str, ...]:
    """Key of everything cached from the library as it is now."""
    return (*backend_key(), backend.version())


@st.cache_data(show_spinner=False, max_entries=64)
def videos_table(_backend: AppBackend, key: tuple[str, ...]) -> pl.DataFrame:
    """``backend.videos()``, cached until the library changes."""
    return _backend.videos()


@st.cache_data(show_spinner=False, max_entries=256)
def captions_table(_backend: AppBackend, key: tuple[str, ...], video_id: str) -> pl.DataFrame:
    """``backend.captions(video_id)``, cached until the library changes."""
    return _backend.captions(video_id)


@st.cache_data(show_spinner=False, max_entries=1024)
def thumbnail_url(_backend: AppBackend, key: tuple[str, ...], video_id: str) -> str | None:
    """A ``data:`` URL of the video's thumbnail (for an image column), or None."""
    data = _backend.thumbnail(video_id)
    return "data:image/jpeg;base64," + base64.b64encode(data).decode() if data else None


def fmt_seconds(seconds: float) -> str:
    """``75.5`` -> ``"1:15.5"``; ``3725`` -> ``"1:02:05.0"``."""
    seconds = max(0.0, float(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 1:
        return f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}"
    return f"{int(minutes)}:{secs:04.1f}"


def fmt_span(start: float, end: float) -> str:
    """A span label: ``"0:02.0–0:05.5"``, or one time when start == end."""
    return fmt_seconds(start) if abs(end - start) < 0.05 else f"{fmt_seconds(start)}–{fmt_seconds(end)}"


def fmt_count(count: int, noun: str) -> str:
    """``(1, "clip")`` -> ``"1 clip"``; ``(3, "clip")`` -> ``"3 clips"`` (nouns with a plain plural)."""
    return f"{count} {noun if count == 1 else noun + 's'}"


def video_name(path: str | None, video_id: str) -> str:
    """The file name of a video (its id when the path is unknown)."""
    return Path(path).name if path else video_id


def show_error(err: Exception) -> None:
    """A page message for an error: info for an empty library, error otherwise, never a traceback."""
    if isinstance(err, EmptyLibraryError):
        st.info(str(err), icon=":material/video_library:")
    elif isinstance(err, BackendError):
        st.error(str(err), icon=":material/error:")
    else:
        log.exception("unexpected error in the web app")
        st.error(f"Something went wrong: {type(err).__name__}: {err}", icon=":material/error:")


def guarded(page: Callable[[], None]) -> Callable[[], None]:
    """Wraps a page so that any error becomes a message on the page."""

    def run() -> None:
        try:
            page()
        except Exception as err:  # noqa: BLE001 - the page shows it instead of a traceback
            show_error(err)  # st.rerun/st.stop raise BaseExceptions and pass through

    run.__name__ = page.__name__
    run.__doc__ = page.__doc__
    return run


def ok_videos(videos: pl.DataFrame) -> pl.DataFrame:
    """The videos that can be watched and asked about (status ok or partial)."""
    return videos.filter(pl.col("status").is_in(["ok", "partial"]))


def ingested_videos(backend: AppBackend) -> pl.DataFrame | None:
    """The usable videos, or None after telling the person that nothing is ingested yet."""
    videos = ok_videos(videos_table(backend, cache_key(backend)))
    if videos.is_empty():
        st.info("Nothing is ingested yet: ingest a folder on the Library page first.",
                icon=":material/video_library:")
        return None
    return videos
