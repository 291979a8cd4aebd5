"""The Search page: a query across the library returns ranked clips, each playable at its span."""

from __future__ import annotations

from typing import Any

import polars as pl
import streamlit as st

from app.ui_backend import AppBackend
from app.ui_common import fmt_count, fmt_span, get_backend, ingested_videos, video_name
from app.ui_media import video_source

WATCH_PAGE = "watch"


def search_page() -> None:
    """Query form, then ranked results (session state ``search_query``/``search_hits``)."""
    backend = get_backend()
    st.title("Search")
    if ingested_videos(backend) is None:
        return
    with st.form("search", border=False):
        cols = st.columns([5, 1, 1], vertical_alignment="bottom")
        query = cols[0].text_input("Find an event across the library", key="search_text",
                                   placeholder="the red circle enters from the left")
        k = cols[1].number_input("Results", min_value=1, max_value=50, value=5, key="search_k")
        submitted = cols[2].form_submit_button("Search", type="primary", icon=":material/search:")
    if submitted:
        if not query.strip():
            st.error("Type what to look for first.")
            return
        st.session_state["search_query"] = query.strip()
        with st.spinner("Searching the captions, then asking the model when it happens in the best videos…"):
            st.session_state["search_hits"] = backend.search(query.strip(), int(k)).to_dicts()
    show_hits(backend, st.session_state.get("search_query"), st.session_state.get("search_hits"))


def show_hits(backend: AppBackend, query: str | None, hits: list[dict[str, Any]] | None) -> None:
    """One bordered row per hit: what and where, a player cued to the span, and a jump to Watch."""
    if hits is None:
        return
    if not hits:
        st.info(f"No clips match “{query}”.")
        return
    st.caption(f"{fmt_count(len(hits), 'clip')} for “{query}”, best first")
    for hit in hits:
        show_hit(backend, hit)


def show_hit(backend: AppBackend, hit: dict[str, Any]) -> None:
    """A result: rank, video, span, caption (the model's answer for a span it found), score, and the clip."""
    with st.container(border=True, key=f"hit-{hit['rank']}"):
        text, player = st.columns([3, 2], gap="medium")
        with text:
            st.markdown(f"**#{hit['rank']} · {video_name(hit['path'], hit['video_id'])}**")
            found = ""
            if hit.get("grounded"):
                sure = hit.get("confidence")
                found = " &nbsp; · &nbsp; found by the model" + ("" if sure is None else f", {sure:.0%} sure")
            st.markdown(f":material/schedule: {fmt_span(hit['start_seconds'], hit['end_seconds'])}"
                        f" &nbsp; · &nbsp; score {hit['score']:.3f}{found}")
            st.write(hit["caption"])
            if st.button("Open in Watch & ask", key=f"open-{hit['rank']}", icon=":material/open_in_new:"):
                open_in_watch(hit)
        with player:
            path = backend.video_path(hit["video_id"])
            if path is None:
                st.caption("The file is gone from disk.")
            else:
                start, end = int(hit["start_seconds"]), int(hit["end_seconds"])
                st.video(video_source(path), start_time=start, end_time=max(end, start + 1))


def open_in_watch(hit: dict[str, Any]) -> None:
    """Go to Watch & ask on this video, cued to the hit."""
    st.session_state["watch_video"] = hit["video_id"]
    st.session_state["seek_seconds"] = float(hit["start_seconds"])
    st.session_state["seek_count"] = st.session_state.get("seek_count", 0) + 1
    from app.ui_pages import page

    st.switch_page(page(WATCH_PAGE))


def hits_frame(hits: list[dict[str, Any]]) -> pl.DataFrame:
    """The hits as a table (tests, downloads)."""
    return pl.DataFrame(hits)
