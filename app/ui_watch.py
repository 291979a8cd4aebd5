"""The Watch & ask page: the player, the video's grounded-caption timeline, and the chat.

Session state: ``watch_video`` (the chosen video id), ``seek_seconds`` (where the player
starts), ``seek_count`` (bumped on every seek so that seeking to the same second again
still moves the player), ``chats`` (video id -> list of messages, each answer with its spans and confidence).
"""

from __future__ import annotations

from typing import Any

import altair as alt
import polars as pl
import streamlit as st

from app.ui_backend import AppBackend, BackendError, subtitles_vtt
from app.ui_common import (
    cache_key,
    captions_table,
    fmt_count,
    fmt_span,
    get_backend,
    ingested_videos,
    video_name,
)
from app.ui_media import video_source

TIMELINE_KEY = "timeline"
SELECTION = "pick"


def seek_to(seconds: float) -> None:
    """Start the player at ``seconds`` on this rerun (button and timeline callbacks)."""
    st.session_state["seek_seconds"] = max(0.0, float(seconds))
    st.session_state["seek_count"] = st.session_state.get("seek_count", 0) + 1


def selected_start(state: Any) -> float | None:
    """The start (seconds) of the caption picked on the timeline, from the chart's state."""
    try:
        points = state["selection"][SELECTION]
    except (KeyError, TypeError):
        return None
    if not points:
        return None
    value = points[0].get("start_seconds") if isinstance(points[0], dict) else None
    return float(value) if value is not None else None


def apply_timeline_selection(state: Any) -> None:
    """Seek to the caption picked on the timeline (``state`` is the chart's selection state)."""
    start = selected_start(state)
    if start is not None:
        seek_to(start)


def _on_timeline_select() -> None:
    apply_timeline_selection(st.session_state.get(TIMELINE_KEY))


def _on_video_change() -> None:
    st.session_state["seek_seconds"] = 0.0
    st.session_state["seek_count"] = st.session_state.get("seek_count", 0) + 1


def watch_page() -> None:
    """Pick a video, watch it, ask about it; every time in an answer seeks the player."""
    backend = get_backend()
    st.title("Watch & ask")
    videos = ingested_videos(backend)
    if videos is None:
        return
    video_id = pick_video(videos)
    row = videos.filter(pl.col("video_id") == video_id).row(0, named=True)
    captions = captions_table(backend, cache_key(backend), video_id)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        show_player(backend, video_id, captions)
        show_timeline(captions, row["duration_seconds"])
    with right:
        show_chat(backend, video_id, row["duration_seconds"])


def pick_video(videos: pl.DataFrame) -> str:
    """The video selectbox; returns the chosen id."""
    ids = videos["video_id"].to_list()
    names = dict(zip(ids, [video_name(p, v) for p, v in zip(videos["path"], ids, strict=True)], strict=True))
    if st.session_state.get("watch_video") not in ids:
        st.session_state["watch_video"] = ids[0]
    return st.selectbox("Video", ids, format_func=lambda v: names[v], key="watch_video", on_change=_on_video_change)


def show_player(backend: AppBackend, video_id: str, captions: pl.DataFrame) -> None:
    """``st.video`` from the media URL, starting at the last seek, with the captions as subtitles."""
    path = backend.video_path(video_id)
    if path is None:
        st.error(f"The file of video {video_id} is gone from disk; ingest its folder again.")
        return
    start = float(st.session_state.get("seek_seconds", 0.0))
    subtitles = {"Grounded captions": subtitles_vtt(captions)} if captions.height else None
    # A new container key per seek remounts the player, so it seeks even to the same second twice.
    with st.container(key=f"player-{st.session_state.get('seek_count', 0) % 2}"):
        st.video(video_source(path), start_time=int(start), subtitles=subtitles)
    st.caption(f"Starts at {fmt_span(start, start)} · {fmt_count(captions.height, 'grounded caption')}")


TIMELINE_ROW_PX = 28  # one caption's bar and label
TIMELINE_AXIS_PX = 78  # the seconds axis, its title and padding, inside the chart element's height


def timeline_chart(captions: pl.DataFrame, duration: float | None, now: float) -> alt.LayerChart:
    """Bars from start to end per caption, clickable (selection ``pick`` on start_seconds)."""
    data = captions.with_columns(
        pl.format("{} s · {}", pl.col("start_seconds").round(1), pl.col("caption")).alias("label")
    )
    pick = alt.selection_point(name=SELECTION, fields=["start_seconds"], on="click")
    scale = alt.Scale(domain=[0, max(duration or 0.0, float(captions["end_seconds"].max() or 0.0))])
    bars = alt.Chart(data).mark_bar(cornerRadius=3, height={"band": 0.7}).encode(
        x=alt.X("start_seconds:Q", title="seconds", scale=scale),
        x2="end_seconds:Q",
        y=alt.Y("label:N", title=None, sort=None, axis=alt.Axis(labelLimit=280, labelOverlap=False)),
        color=alt.when(pick, empty=False).then(alt.value("#e4572e")).otherwise(alt.value("#8fb8de")),
        tooltip=[alt.Tooltip("caption:N"), alt.Tooltip("start_seconds:Q", title="start"),
                 alt.Tooltip("end_seconds:Q", title="end")],
    ).add_params(pick)
    rule = alt.Chart(pl.DataFrame({"t": [now]})).mark_rule(color="#333", strokeDash=[4, 3]).encode(x="t:Q")
    return alt.layer(bars, rule).properties(height=_bars_height(data.height))


def _bars_height(captions: int) -> int:
    """Pixels of the bars' area for ``captions`` rows (the chart's own height, axis not included)."""
    return TIMELINE_ROW_PX * max(captions, 2)


def timeline_height(captions: int) -> int:
    """Pixels for a timeline of ``captions`` rows, the axis included (the chart element's height)."""
    return TIMELINE_AXIS_PX + _bars_height(captions)


def show_timeline(captions: pl.DataFrame, duration: float | None) -> None:
    """The grounded captions as a timeline; clicking a bar seeks the player."""
    st.subheader("Grounded captions")
    if captions.is_empty():
        st.caption("This video has no grounded captions.")
        return
    chart = timeline_chart(captions, duration, float(st.session_state.get("seek_seconds", 0.0)))
    st.altair_chart(chart, on_select=_on_timeline_select, selection_mode=SELECTION, key=TIMELINE_KEY,
                    width="stretch", height=timeline_height(captions.height))


def chat_history(video_id: str) -> list[dict[str, Any]]:
    """The video's chat messages (kept in session state)."""
    chats = st.session_state.setdefault("chats", {})
    return chats.setdefault(video_id, [])


def show_chips(video_id: str, index: int, spans: list[tuple[float, float]]) -> None:
    """One button per span in an answer; clicking seeks the player to its start."""
    if not spans:
        return
    cols = st.columns(min(len(spans), 4))
    for j, (start, end) in enumerate(spans):
        cols[j % len(cols)].button(
            fmt_span(start, end), key=f"chip-{video_id}-{index}-{j}", icon=":material/play_arrow:",
            on_click=seek_to, args=(start,), help=f"Play from {start:.1f} s",
        )


def show_chat(backend: AppBackend, video_id: str, duration: float | None) -> None:
    """The chat: history with chips, then a streamed answer to a new question."""
    history = chat_history(video_id)
    box = st.container(height=440, border=True)
    with box:
        # The hint's slot stays (empty) once there is a history, so a rerun draws every message where
        # the last run drew it: no stale copy of a question lingers above its answer while it runs.
        hint = st.empty()
        if not history:
            hint.caption("Ask when something happens, e.g. *When does the red circle enter?*")
        for i, message in enumerate(history):
            with st.chat_message(message["role"]):
                st.markdown(message["content"] or "*(no answer)*")
                if message["role"] == "assistant":
                    show_chips(video_id, i, message.get("spans", []))
                    show_confidence(message.get("confidence"))
    question = st.chat_input("Ask about this video", key="question")
    if question:
        hint.empty()
        with box:
            answer_question(backend, video_id, duration, question, history)


def answer_question(backend: AppBackend, video_id: str, duration: float | None, question: str,
                    history: list[dict[str, Any]]) -> None:
    """Stream the answer into the chat, then keep both messages and show the answer's chips."""
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"):
        try:
            stream = backend.ask_stream(video_id, question)
            answer = st.write_stream(stream)
        except BackendError as err:
            st.error(str(err), icon=":material/error:")
            return
        text = answer if isinstance(answer, str) else "".join(map(str, answer))
        if not text.strip():
            st.caption("The model gave no answer.")
        spans = backend.spans(text, duration)
        history.append({"role": "user", "content": question})
        confidence = None if stream.answer is None else stream.answer.confidence
        history.append({"role": "assistant", "content": text, "spans": spans, "confidence": confidence})
        show_chips(video_id, len(history) - 1, spans)
        show_confidence(confidence)


def show_confidence(confidence: float | None) -> None:
    """How sure the model was of its answer, under it."""
    if confidence is not None:
        st.caption(f"{confidence:.0%} sure", help="The probability the model gave the least likely word of its "
                   "answer: low when it had to guess somewhere, such as at a time it could not place.")
