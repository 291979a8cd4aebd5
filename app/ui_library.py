"""The Library page: what is ingested (thumbnail, duration, status), failures, and ingest."""

from __future__ import annotations

import polars as pl
import streamlit as st

from app.ui_backend import AppBackend, IngestSummary
from app.ui_common import (
    cache_key,
    fmt_seconds,
    get_backend,
    thumbnail_url,
    video_name,
    videos_table,
)

MAX_THUMBNAILS = 60


def library_page() -> None:
    """Videos in the library, failures with their reasons, and the ingest form."""
    backend = get_backend()
    st.title("Library")
    ingest_form(backend)
    videos = videos_table(backend, cache_key(backend))
    if videos.is_empty():
        st.info("Nothing is ingested yet: enter a folder of videos above and press **Ingest**.",
                icon=":material/video_library:")
        return
    show_counts(videos)
    show_videos(backend, videos.filter(pl.col("status") != "error"))
    show_failures(videos.filter(pl.col("status") != "ok"))


def ingest_form(backend: AppBackend) -> None:
    """A folder path and an Ingest button; runs the ingest with a live progress bar."""
    with st.form("ingest", border=True):
        folder = st.text_input("Folder of videos", key="ingest_folder", placeholder="/path/to/videos")
        submitted = st.form_submit_button("Ingest", type="primary", icon=":material/upload:")
    if submitted:
        run_ingest(backend, folder.strip())


def run_ingest(backend: AppBackend, folder: str) -> None:
    """Ingest ``folder`` with a progress bar; the outcome goes to ``st.session_state.last_ingest``."""
    if not folder:
        st.error("Enter the path of a folder of videos.")
        return
    bar = st.progress(0.0, text=f"Ingesting {folder}…")
    summary = backend.ingest(folder, lambda fraction, text: bar.progress(min(max(fraction, 0.0), 1.0), text=text))
    bar.progress(1.0, text="Done")
    st.session_state["last_ingest"] = summary
    show_summary(summary)


def show_summary(summary: IngestSummary) -> None:
    """The counts of an ingest and its failures."""
    counts = ", ".join(f"{n} {action}" for action, n in summary.counts.items() if n)
    st.success(f"Ingest finished: {counts or 'nothing to do'}.", icon=":material/check_circle:")
    for path, reason in summary.failures:
        st.warning(f"{path}: {reason}", icon=":material/warning:")


def show_counts(videos: pl.DataFrame) -> None:
    """Headline numbers."""
    cols = st.columns(4)
    cols[0].metric("Videos", videos.height)
    cols[1].metric("Ready", videos.filter(pl.col("status") == "ok").height)
    cols[2].metric("Failed", videos.filter(pl.col("status") != "ok").height)
    total = videos["duration_seconds"].fill_null(0.0).sum()
    cols[3].metric("Total duration", fmt_seconds(float(total)))


def show_videos(backend: AppBackend, videos: pl.DataFrame) -> None:
    """The videos table with thumbnails."""
    st.subheader("Videos")
    key = cache_key(backend)
    rows = [
        {
            "thumbnail": thumbnail_url(backend, key, r["video_id"]) if i < MAX_THUMBNAILS else None,
            "video": video_name(r["path"], r["video_id"]),
            "duration": fmt_seconds(r["duration_seconds"]) if r["duration_seconds"] is not None else "?",
            "status": r["status"],
            "captions": r["segments"],
            "path": r["path"],
        }
        for i, r in enumerate(videos.iter_rows(named=True))
    ]
    st.dataframe(
        rows,
        hide_index=True,
        row_height=64,
        column_config={
            "thumbnail": st.column_config.ImageColumn("", width="small"),
            "captions": st.column_config.NumberColumn("captions", help="grounded captions"),
        },
        key="videos_table",
    )


def show_failures(failures: pl.DataFrame) -> None:
    """Files that failed (or were read only in part) with their reasons."""
    st.subheader("Failures")
    if failures.is_empty():
        st.caption("No failures.")
        return
    st.dataframe(
        [{"file": video_name(r["path"], r["video_id"]), "status": r["status"], "reason": r["error"] or "",
          "path": r["path"]} for r in failures.iter_rows(named=True)],
        hide_index=True,
        key="failures_table",
    )
