"""The pipeline's span path with known model outputs: the tiny model's ``generate`` is replaced
by a function of the frames it is shown, so absolute window times, clamping, parsing,
retrieval and ranking are checked against exact expected values."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import numpy as np
import pytest

import ingest
import vidlm
from app.ingesting import clamp_to_window
from app.pipeline import Pipeline, PipelineOptions, merge_spans, sampling_policy
from app.prompts import CAPTION_PROMPT
from tests.app.conftest import make_folder

CAPTIONS = (
    "the red circle enters from the left",
    "the blue square leaves to the right",
    "the green triangle changes colour",
)


def video_parts(messages) -> list[dict]:
    return [p for p in messages[0]["content"] if p["type"] == "video"]


class ScriptedModel:
    """Stands in for ``VideoLM.generate``: captions name each window's own first frame time."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.confidence: Callable[[str], float] = lambda text: 1.0  # of an answer, for ``answer``

    def __call__(self, messages, **kwargs) -> str:
        question = messages[0]["content"][-1]["text"]
        seconds = [np.asarray(p["timestamps"]) for p in video_parts(messages)]
        self.calls.append({"question": question, "seconds": seconds})
        t0, t1 = float(seconds[0][0]), float(seconds[-1][-1])
        if question == CAPTION_PROMPT:
            caption = CAPTIONS[(len(self.calls) - 1) % len(CAPTIONS)]
            return (
                f"From {t0 + 0.2:.1f} to {t0 + 0.8:.1f} seconds: {caption}.\n"
                f"From {t1 + 100:.1f} to {t1 + 101:.1f} seconds: outside the window."
            )
        return f"It happens from {t0:.1f} to {t1:.1f} seconds."


@pytest.fixture(scope="module")
def lm(tiny_model):
    return vidlm.load(tiny_model)


@pytest.fixture
def scripted(lm, monkeypatch) -> ScriptedModel:
    """``generate`` scripted; ``answer`` writes what ``generate`` (as patched now) writes, with
    the confidence ``fake.confidence`` gives that text (1.0 unless a test sets it)."""
    fake = ScriptedModel()
    monkeypatch.setattr(lm, "generate", fake)

    def answer(messages, **kwargs) -> vidlm.Answer:
        text = lm.generate(messages, **kwargs)
        return vidlm.Answer(text, (0,), (float(np.log(fake.confidence(text))),))

    monkeypatch.setattr(lm, "answer", answer)
    return fake


def test_dense_captions_land_at_absolute_window_times(tmp_path, good_videos, lm, scripted):
    folder = make_folder(tmp_path / "v", good_videos[:1], broken=False)
    pipe = Pipeline(lm=lm, library=tmp_path / "lib", options=PipelineOptions(window_seconds=1.5))
    report = pipe.ingest_folder(folder)
    assert [f.action for f in report.files] == ["ingested"]
    segments = pipe.open_library(None, create=False).segments.sort("start_seconds")
    firsts = [float(c["seconds"][0][0]) for c in scripted.calls]
    assert len(firsts) >= 3 and firsts[1] > 1.0  # several windows, later ones start late
    expected = [(round(t + 0.2, 1), round(t + 0.8, 1)) for t in firsts]
    got = list(
        zip(segments["start_seconds"].round(3), segments["end_seconds"].round(3), strict=True)
    )
    assert got == [
        (pytest.approx(s), pytest.approx(e)) for s, e in expected
    ]  # "outside" lines dropped
    assert segments["caption"].to_list()[:2] == [f"{CAPTIONS[0]}.", f"{CAPTIONS[1]}."]


def test_localize_ranks_the_matching_caption_first(tmp_path, good_videos, lm, scripted):
    folder = make_folder(tmp_path / "v", good_videos, broken=False)
    pipe = Pipeline(lm=lm, library=tmp_path / "lib")
    pipe.ingest_folder(folder)
    seg = pipe.open_library(None, create=False).segments
    square = seg.filter(seg["caption"].str.contains("blue square")).row(0, named=True)
    hits = pipe.localize("a blue square leaves to the right", ground=0)
    assert hits[0].caption.startswith("the blue square") and hits[0].video_id == square["video_id"]
    assert not any(h.grounded for h in hits)
    assert (hits[0].start_seconds, hits[0].end_seconds) == (
        square["start_seconds"],
        square["end_seconds"],
    )
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert hits[0].score > hits[-1].score
    only = pipe.localize("blue square", video=hits[-1].path, ground=0)
    assert {h.video_id for h in only} == {hits[-1].video_id}


def test_localize_ranks_the_videos_where_the_model_finds_the_event_first(tmp_path, good_videos, lm, scripted):
    """The model is asked when the query happens in each video (3 <= the default 5): it answers
    with a span in one video only, one whose captions do not match best, and says it does not
    happen in the others. That video's answer span comes first, marked grounded; the caption
    hits follow in score order, less those of that video that overlap its span."""
    from recipe.tasks import ABSENT_ANSWER, grounding_question

    folder = make_folder(tmp_path / "v", good_videos, broken=False)
    pipe = Pipeline(lm=lm, library=tmp_path / "lib")
    pipe.ingest_folder(folder)
    query = "a blue square leaves to the right"
    by_caption = pipe.localize(query, ground=0)
    real = ScriptedModel.__call__
    shown: list[str] = []
    target: list[str] = []

    def grounding(self, messages, **kwargs):
        answer = real(self, messages, **kwargs)
        shown.append(hashlib.sha256(np.ascontiguousarray(video_parts(messages)[0]["video"]).tobytes()).hexdigest())
        if self.calls[-1]["question"] != grounding_question(query):
            return answer
        return "From 0.5 to 2.0 seconds." if shown[-1] in target else ABSENT_ANSWER

    pipe.lm.generate = grounding.__get__(scripted)
    signature = {}
    for path in sorted(folder.glob("*.mp4")):  # what the model is shown of each video in the library
        pipe.ask(path, "What happens?")
        signature[str(path.absolute())] = shown[-1]
    assert len(set(signature.values())) == len(good_videos)
    target_path = next(p for p in signature if p != by_caption[0].path)
    target.append(signature[target_path])
    asked = len(scripted.calls)
    hits = pipe.localize(query)
    assert [c["question"] for c in scripted.calls[asked:]] == [grounding_question(query)] * len(good_videos)
    assert (hits[0].path, hits[0].start_seconds, hits[0].end_seconds, hits[0].grounded) == (target_path, 0.5, 2.0, True)
    assert hits[0].caption == "From 0.5 to 2.0 seconds." and [h.rank for h in hits] == list(range(1, len(hits) + 1))
    rest = [(h.video_id, h.start_seconds, h.caption) for h in by_caption
            if h.path != target_path or h.end_seconds < 0.5 or h.start_seconds > 2.0]
    assert len(rest) < len(by_caption)  # one of the target_path's caption hits overlaps its answer
    assert [(h.video_id, h.start_seconds, h.caption) for h in hits[1:]] == rest[: len(hits) - 1]
    assert not any(h.grounded for h in hits[1:])
    assert hits[0].score == max(h.score for h in by_caption if h.path == target_path)
    # Grounding in the caption search's best video only: it says no, so the captions' ranking stands.
    assert [(h.video_id, h.start_seconds) for h in pipe.localize(query, ground=1)] == [
        (h.video_id, h.start_seconds) for h in by_caption]
    with pytest.raises(ValueError, match="ground"):
        pipe.localize(query, ground=-1)
    # One caption hit asked for: the other videos of the (small) library are grounded all the same.
    asked = len(scripted.calls)
    top = pipe.localize(query, k=1)
    assert len(scripted.calls) - asked == len(good_videos) and [(h.path, h.grounded) for h in top] == [(target_path, True)]
    # A video whose file is gone is not grounded; its caption hits stay, the rest goes on.
    gone = next(p for p in sorted(folder.glob("*.mp4")) if str(p.absolute()) != target_path)
    assert str(gone.absolute()) in {h.path for h in hits}
    gone.unlink()
    again = pipe.localize(query)
    assert again[0].path == target_path and again[0].grounded
    assert [h.path for h in again if h.path == str(gone.absolute())] == [h.path for h in hits if h.path == str(gone.absolute())]


def test_localize_ranks_grounded_spans_by_the_answers_confidence(tmp_path, good_videos, lm, scripted):
    """The model gives a span in every video; the surest answer ranks first, whatever the
    captions' ranking, and each grounded hit carries its answer's confidence."""
    folder = make_folder(tmp_path / "v", good_videos, broken=False)
    pipe = Pipeline(lm=lm, library=tmp_path / "lib")
    pipe.ingest_folder(folder)
    query = "a blue square leaves to the right"
    by_caption = pipe.localize(query, ground=0)
    order = list(dict.fromkeys(h.path for h in by_caption))
    assert len(order) == len(good_videos)
    sure = dict(zip(order, (0.2, 0.9, 0.5), strict=True))  # the captions' best is the least sure
    said = {p: f"From 0.{i + 1} to 1.5 seconds." for i, p in enumerate(order)}
    asked_about: list[str] = []
    real_ask, real_generate = pipe._ask, ScriptedModel.__call__

    def ask(video, question, lib):
        asked_about.append(lib.entry(video)["path"])
        return real_ask(video, question, lib)

    def generate(self, messages, **kwargs):
        answer = real_generate(self, messages, **kwargs)
        return said[asked_about[-1]] if "When does this happen?" in self.calls[-1]["question"] else answer

    pipe._ask = ask
    pipe.lm.generate = generate.__get__(scripted)
    scripted.confidence = lambda text: next((sure[p] for p, t in said.items() if t == text), 1.0)
    hits = pipe.localize(query)
    grounded = [h for h in hits if h.grounded]
    assert [h.path for h in grounded] == sorted(order, key=lambda p: -sure[p])
    assert [h.confidence for h in grounded] == pytest.approx(sorted(sure.values(), reverse=True))
    assert grounded[0].path != by_caption[0].path and hits[: len(grounded)] == grounded
    assert all(h.confidence is None for h in hits if not h.grounded)
    assert hits[0].to_json()["confidence"] == pytest.approx(0.9)
    result = pipe._ask(by_caption[0].video_id, "Where?", pipe.open_library(None, create=False))
    assert result.confidence == 1.0
    result = pipe._ask(grounded[0].video_id, "It leaves. When does this happen?", pipe.open_library(None, create=False))
    assert result.answer == said[order[1]] and result.confidence == pytest.approx(0.9) and result.to_json()["confidence"] == pytest.approx(0.9)


def test_ask_whole_video_parses_the_answer_spans(tmp_path, good_videos, lm, scripted):
    pipe = Pipeline(lm=lm, library=tmp_path / "none")
    video = good_videos[0]
    result = pipe.ask(video, "When does the red circle enter?")
    seen = scripted.calls[-1]["seconds"]
    assert result.mode == "whole" and len(seen) == 1
    assert [(s.start_seconds, s.end_seconds) for s in result.spans] == [
        (round(float(seen[0][0]), 1), round(float(seen[0][-1]), 1))
    ]


def test_ask_long_video_retrieves_windows_with_absolute_times(tmp_path, good_videos, lm, scripted):
    folder = make_folder(tmp_path / "v", good_videos[:1], broken=False)
    options = PipelineOptions(
        window_seconds=1.5, max_video_tokens=8, retrieve_k=1, retrieve_pad_seconds=0.0
    )
    pipe = Pipeline(lm=lm, library=tmp_path / "lib", options=options)
    pipe.ingest_folder(folder)
    seg = pipe.open_library(None, create=False).segments
    target = seg.filter(seg["caption"].str.contains("blue square")).row(0, named=True)
    result = pipe.ask(folder / good_videos[0].name, "when does the blue square leave to the right?")
    assert result.mode == "retrieved"
    ((start, end),) = result.windows
    assert start == pytest.approx(target["start_seconds"], abs=0.15)
    assert end == pytest.approx(target["end_seconds"], abs=0.15)
    assert result.spans[0].start_seconds == pytest.approx(round(start, 1))


def test_follow_up_questions_skip_decoding_and_the_vision_tower(
    good_videos, lm, monkeypatch, tmp_path
):
    pipe = Pipeline(
        lm=lm, library=tmp_path / "none", options=PipelineOptions(answer_max_new_tokens=4)
    )
    calls = []
    original = lm.model.encode_visual
    monkeypatch.setattr(lm.model, "encode_visual", lambda p, g: calls.append(1) or original(p, g))
    pipe.ask(good_videos[1], "When does it move?")
    pipe.ask(good_videos[1], "What colour is the circle?")
    assert len(calls) == 1 and pipe.frames.hits == 1 and pipe.frames.misses == 1


def test_the_model_reads_files_through_ingest(good_videos, lm, tmp_path):
    pipe = Pipeline(lm=lm, library=tmp_path / "none")
    frames, seconds = pipe.read_video(good_videos[0])
    assert frames.dtype == np.uint8 and frames.shape[-1] == 3 and len(frames) == len(seconds)
    assert pipe.lm.video_reader is None or callable(pipe.lm.video_reader)


def test_policy_follows_the_model_processor(lm):
    policy = sampling_policy(lm.processor.config, PipelineOptions(), context_tokens=32768)
    per_frame = lm.processor.config.video_max_tokens_per_frame
    assert policy.max_tokens_per_pair == per_frame and policy.min_tokens_per_pair <= per_frame
    assert policy.size_factor == lm.processor.config.factor
    assert policy.max_video_tokens <= 32768


def test_caption_prompt_is_one_the_model_was_trained_on():
    from recipe.tasks import CAPTION_TEMPLATES

    assert CAPTION_PROMPT in CAPTION_TEMPLATES


def test_clamp_and_merge():
    from index import Span

    window = ingest.Window(1, 10.0, 20.0)
    assert clamp_to_window(Span(8.0, 12.0, "x"), window).start_seconds == 10.0
    assert clamp_to_window(Span(25.0, 30.0, "x"), window) is None
    assert clamp_to_window(Span(12.0, 13.0, None), window) is None
    assert merge_spans([(5, 8), (1, 2), (7, 9)]) == [(1, 2), (5, 9)]


def test_generate_is_called_greedy(tmp_path, good_videos, lm, monkeypatch):
    seen = {}

    def spy(messages, **kwargs):
        seen.update(kwargs)
        return vidlm.Answer("From 0.5 to 1.0 seconds.", (0,), (0.0,))

    monkeypatch.setattr(lm, "answer", spy)
    Pipeline(lm=lm, library=tmp_path / "none").ask(good_videos[0], "when?")
    assert seen["do_sample"] is False and re.fullmatch(r"\d+", str(seen["max_new_tokens"]))


def test_ask_stream_pieces_join_to_the_ask_answer(tiny_model, good_videos):
    from app.pipeline import Pipeline

    pipe = Pipeline(model=tiny_model)
    question = "When does the red circle enter?"
    asked = pipe.ask(good_videos[0], question)
    stream = pipe.ask_stream(good_videos[0], question)
    assert "".join(stream) == asked.answer
    assert stream.answer is not None and stream.answer.confidence == pytest.approx(asked.confidence, rel=1e-4)
    with pytest.raises(ValueError, match="question"):  # on the call, before any piece
        pipe.ask_stream(good_videos[0], " ")
