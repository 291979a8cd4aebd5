"""The Export page: grounded captions as JSONL/SRT/VTT/parquet, for one video or all."""

from __future__ import annotations

import streamlit as st

from app.ui_backend import EXPORT_FORMATS, AppBackend, ExportFile, ExportFormat
from app.ui_common import cache_key, get_backend, ingested_videos, video_name

ALL = "__all__"
FORMAT_HELP = {
    "jsonl": "one JSON record per caption (QVHighlights-style fields)",
    "srt": "SubRip subtitles (a zip of one file per video for the whole library)",
    "vtt": "WebVTT subtitles (a zip of one file per video for the whole library)",
    "parquet": "a table of every caption with its video",
}


@st.cache_data(show_spinner="Preparing the file…", max_entries=32)
def export_file(_backend: AppBackend, key: tuple[str, ...], format: ExportFormat, video_id: str | None) -> ExportFile:
    """``backend.export``, cached until the library changes."""
    return _backend.export(format, video_id)


def export_page() -> None:
    """Pick a format and a video (or all), then download."""
    backend = get_backend()
    st.title("Export")
    videos = ingested_videos(backend)
    if videos is None:
        return
    names = {ALL: "All videos"} | {
        v: video_name(p, v) for v, p in zip(videos["video_id"], videos["path"], strict=True)
    }
    fmt = st.radio("Format", EXPORT_FORMATS, horizontal=True, key="export_format",
                   format_func=str.upper, captions=[FORMAT_HELP[f] for f in EXPORT_FORMATS])
    choice = st.selectbox("Videos", list(names), format_func=names.get, key="export_video")
    video_id = None if choice == ALL else choice
    exported = export_file(backend, cache_key(backend), fmt, video_id)
    st.download_button(f"Download {exported.name}", data=exported.data, file_name=exported.name,
                       mime=exported.mime, type="primary", icon=":material/download:", key="export_download")
    st.caption(f"{len(exported.data):,} bytes")
    if fmt in ("srt", "vtt", "jsonl") and exported.name.endswith(fmt):
        with st.expander("Preview"):
            st.code(exported.data.decode("utf-8", errors="replace")[:3000], language=None)
