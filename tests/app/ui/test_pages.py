"""AppTest tests of each page's logic with the fake backend."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[3] / "app" / "streamlit_app.py")
TIMEOUT = 30


def library():
    from app.ui_common import guarded
    from app.ui_library import library_page

    guarded(library_page)()


def watch():
    from app.ui_common import guarded
    from app.ui_watch import watch_page

    guarded(watch_page)()


def search():
    from app.ui_common import guarded
    from app.ui_search import search_page

    guarded(search_page)()


def export():
    from app.ui_common import guarded
    from app.ui_export import export_page

    guarded(export_page)()


def run(page) -> AppTest:
    return AppTest.from_function(page, default_timeout=TIMEOUT).run()


def messages(at: AppTest) -> dict[str, list[str]]:
    return {
        "error": [e.value for e in at.error],
        "info": [e.value for e in at.info],
        "exception": [e.value for e in at.exception],
    }


def fake_backend():
    from app.ui_common import get_backend

    return get_backend()


# ----- the whole app ---------------------------------------------------------------------------


def test_app_opens_on_the_library_page_with_navigation():
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Library"
    assert [m.label for m in at.metric] == ["Videos", "Ready", "Failed", "Total duration"]
    assert "fake backend" in at.sidebar.caption[0].value


def test_a_bad_backend_setting_is_a_message_not_a_traceback(monkeypatch):
    monkeypatch.setenv("VIDLM_UI_BACKEND", "nonsense")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert any("VIDLM_UI_BACKEND" in e for e in messages(at)["error"])


# ----- Library -----------------------------------------------------------------------------------


def test_library_lists_videos_and_failures_with_reasons():
    at = run(library)
    assert not at.exception
    assert at.metric[0].value == "3" and at.metric[2].value == "1"
    videos = at.dataframe[0].value
    assert list(videos["video"]) == ["red.mp4", "blue.mp4"]
    assert list(videos["duration"]) == ["0:20.0", "0:12.0"]
    failures = at.dataframe[1].value
    assert list(failures["reason"]) == ["not a video: text file"]


def test_library_shows_thumbnails_of_real_files(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = run(library)
    thumbs = at.dataframe[0].value["thumbnail"]
    assert all(t.startswith("data:image/jpeg;base64,") for t in thumbs)


def test_empty_library_says_nothing_is_ingested(monkeypatch):
    monkeypatch.setenv("VIDLM_UI_FAKE_SCENARIO", "empty")
    for page in (library, watch, search, export):
        at = run(page)
        assert not at.exception
        assert any("Nothing is ingested yet" in m for m in messages(at)["info"]), page.__name__


def test_ingest_a_bad_folder_is_an_error(tmp_path):
    at = run(library)
    at.text_input(key="ingest_folder").input(str(tmp_path / "nope"))
    at.button[0].click().run()
    assert not at.exception
    assert messages(at)["error"] == [f"{tmp_path / 'nope'}: no such folder"]


def test_ingest_runs_with_progress_and_refreshes_the_table(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDLM_UI_FAKE_SCENARIO", "empty")
    at = run(library)
    assert not at.dataframe
    at.text_input(key="ingest_folder").input(str(tmp_path))
    at.button[0].click().run()
    assert not at.exception
    assert "2 ingested" in at.success[0].value and "1 failed" in at.success[0].value
    assert "broken.mp4: not a video" in at.warning[0].value
    assert at.session_state["last_ingest"].counts["ingested"] == 2
    assert at.get("progress")  # the live bar was drawn
    at.run()
    assert at.dataframe[0].value.shape[0] == 2


def test_ingest_without_the_model_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDLM_UI_FAKE_SCENARIO", "no-model")
    at = run(library)
    at.text_input(key="ingest_folder").input(str(tmp_path))
    at.button[0].click().run()
    assert not at.exception
    assert any("model is missing" in e for e in messages(at)["error"])


# ----- Watch & ask -------------------------------------------------------------------------------


def video_element(at: AppTest):
    videos = at.get("video")
    assert len(videos) == 1
    return videos[0].proto


def test_watch_starts_at_zero_on_the_first_video_with_subtitles(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = run(watch)
    assert not at.exception
    assert at.selectbox(key="watch_video").value == "blue"
    proto = video_element(at)
    assert proto.start_time == 0
    assert len(proto.subtitles) == 1 and proto.subtitles[0].label == "Grounded captions"


def test_ask_streams_an_answer_whose_chips_seek_the_player(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = run(watch)
    at.chat_input(key="question").set_value("When does the red circle enter?").run()
    assert not at.exception
    history = at.session_state["chats"]["blue"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[1]["content"].strip().startswith("The red circle enters from 12.0 to 15.5 seconds")
    assert history[1]["spans"] == [(12.0, 15.5), (17.0, 17.0)]
    assert history[1]["confidence"] == 0.62 and "62% sure" in [c.value for c in at.caption]
    chips = [b for b in at.button if b.key and b.key.startswith("chip-blue-1-")]
    assert [c.label for c in chips] == ["0:12.0–0:15.5", "0:17.0"]
    at.button(key="chip-blue-1-1").click().run()
    assert at.session_state["seek_seconds"] == 17.0
    assert video_element(at).start_time == 17
    at.button(key="chip-blue-1-0").click().run()
    assert video_element(at).start_time == 12
    assert fake_backend().asked == [("blue", "When does the red circle enter?")]


def test_chat_is_kept_per_video_and_a_new_video_starts_at_zero(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = run(watch)
    at.chat_input(key="question").set_value("When?").run()
    at.button(key="chip-blue-1-1").click().run()
    at.selectbox(key="watch_video").select("red").run()
    assert video_element(at).start_time == 0
    assert at.session_state["chats"].get("red", []) == []
    at.selectbox(key="watch_video").select("blue").run()
    assert len(at.session_state["chats"]["blue"]) == 2
    assert len(at.chat_message) == 2


def test_ask_without_the_model_is_an_error_in_the_chat(monkeypatch):
    monkeypatch.setenv("VIDLM_UI_FAKE_SCENARIO", "no-model")
    at = run(watch)
    at.chat_input(key="question").set_value("When?").run()
    assert not at.exception
    assert any("model is missing" in e for e in messages(at)["error"])
    assert at.session_state["chats"].get("red", []) == []


def watch_with_timeline_click():
    import streamlit as st

    from app.ui_common import guarded
    from app.ui_watch import apply_timeline_selection, watch_page

    # What the chart's on_select callback receives when the 6.0 s bar is clicked.
    clicked = st.session_state.pop("test_click", None)
    if clicked is not None:
        apply_timeline_selection({"selection": {"pick": [{"start_seconds": clicked}]}})
    guarded(watch_page)()


def test_timeline_selection_seeks_the_player(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    from app.ui_watch import selected_start

    assert selected_start({"selection": {"pick": [{"start_seconds": 6.0}]}}) == 6.0
    assert selected_start({"selection": {"pick": []}}) is None
    assert selected_start(None) is None
    at = run(watch_with_timeline_click)
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    assert '"pick"' in charts[0].proto.spec and list(charts[0].proto.selection_mode) == ["pick"]
    at.session_state["test_click"] = 6.0
    at.run()
    assert not at.exception
    assert at.session_state["seek_seconds"] == 6.0
    assert video_element(at).start_time == 6


# ----- Search ------------------------------------------------------------------------------------


def search_for(at: AppTest, query: str, k: int) -> AppTest:
    """Type ``query``, ask for ``k`` results and press Search."""
    at.text_input(key="search_text").input(query)
    at.number_input(key="search_k").set_value(k)
    return at.button[0].click().run()


def search_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def test_search_lists_ranked_clips_each_playable_at_its_span(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = search_for(run(search), "the red circle enters", 2)
    assert not at.exception
    hits = at.session_state["search_hits"]
    assert [h["rank"] for h in hits] == [1, 2]
    assert hits[0]["score"] >= hits[1]["score"]
    players = at.get("video")
    assert [(p.proto.start_time, p.proto.end_time) for p in players] == [(2, 5), (4, 7)]
    assert "#1 · blue.mp4" in at.markdown[0].value
    found = [m.value for m in at.markdown if "found by the model" in m.value]
    assert hits[0]["grounded"] and not hits[1]["grounded"] and len(found) == 1 and "0:02" in found[0]
    assert "62% sure" in found[0] and hits[1]["confidence"] is None


def test_search_counts_its_clips_in_words(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = search_for(run(search), "circle", 1)
    assert any(c.startswith("1 clip for “circle”") for c in search_captions(at)), search_captions(at)
    at = search_for(at, "circle", 2)
    assert any(c.startswith("2 clips for “circle”") for c in search_captions(at)), search_captions(at)


def test_search_opens_a_hit_in_watch(monkeypatch, video_dir):
    monkeypatch.setenv("VIDLM_UI_FAKE_DIR", str(video_dir))
    at = run(search)
    at.text_input(key="search_text").input("circle")
    at.button[0].click().run()
    at.button(key="open-2").click().run()
    assert at.session_state["watch_video"] == "red"
    assert at.session_state["seek_seconds"] == 4.0


def test_empty_query_is_an_error():
    at = run(search)
    at.button[0].click().run()
    assert messages(at)["error"] == ["Type what to look for first."]


# ----- Export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "srt", "vtt", "parquet"])
def test_export_offers_each_format_for_one_video_or_all(fmt):
    at = run(export)
    at.radio(key="export_format").set_value(fmt).run()
    assert not at.exception
    button = at.get("download_button")[0]
    assert button.proto.label == f"Download library.{fmt}"
    at.selectbox(key="export_video").select("blue").run()
    assert at.get("download_button")[0].proto.label == f"Download blue.{fmt}"
    if fmt == "vtt":
        assert "WEBVTT" in at.code[0].value and "&lt;blue&gt; &amp; green" in at.code[0].value
