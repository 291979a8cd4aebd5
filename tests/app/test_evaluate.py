"""The evaluation command's scoring, on answers whose scores are known in advance."""

from __future__ import annotations

import json

import pytest

import app.evaluate as evaluate
import vidlm


@pytest.fixture(scope="module")
def lm(tiny_model):
    return vidlm.load(tiny_model)


def test_charades_file_scores_known_answers(lm, good_videos, tmp_path, monkeypatch):
    video = good_videos[0]
    lines = [(1.0, 3.0), (0.0, 2.0), (2.0, 4.0), (1.0, 2.0)]
    annotations = tmp_path / "charades.txt"
    annotations.write_text("".join(f"{video.stem} {s} {e}##person opens a door\n" for s, e in lines))
    asked = []

    def answer(lm, frames, seconds, question, *, max_new_tokens):
        asked.append(question)
        return "The person opens it from 1.0 to 3.0 seconds."

    monkeypatch.setattr(evaluate, "ask", answer)
    result = evaluate.evaluate_annotations(lm, annotations, video.parent)
    # IoUs with [1, 3]: 1, 1/3, 1/3, 1/2.
    assert result["r1_at_0_3"] == 1.0 and result["r1_at_0_5"] == 0.5 and result["r1_at_0_7"] == 0.25
    assert result["miou"] == pytest.approx((1 + 1 / 3 + 1 / 3 + 0.5) / 4)
    assert result["grounding_queries"] == 4 and result["qa_exact"] is None
    assert asked[0] == "Person opens a door. When does this happen?"


def test_bad_annotation_lines_and_missing_videos_are_named(lm, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("v1 1.0 2.0 person opens a door\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'video_id start end##query'"):
        evaluate.evaluate_annotations(lm, bad, tmp_path)
    bad.write_text("nothere 1.0 2.0##x\n")
    with pytest.raises(FileNotFoundError, match="no video file for id 'nothere'"):
        evaluate.evaluate_annotations(lm, bad, tmp_path)


def written_rows(folder, seed: int) -> list[dict]:
    """The ``events.jsonl`` rows of the one-video synthetic set written with ``seed`` (as the eval writes it)."""
    from recipe.data import SampleSpec
    from recipe.synth import write_dataset

    return [json.loads(line) for line in write_dataset(folder, videos=1, seed=seed, params=SampleSpec().world).read_text().splitlines()]


def oracle(tmp_path, seed: int, *, shift: float = 0.0):
    """Answers built from the true events of the one-video synthetic set written with ``seed``."""
    from recipe.data import SampleSpec
    from recipe.synth import scene_seed
    from recipe.tasks import CAPTION_TEMPLATES, make_tasks, span_answer
    from recipe.world import make_scene

    rows = written_rows(tmp_path, seed)
    answers = {evaluate.grounding_question(r["query"]): span_answer(r["start_seconds"] + shift, r["end_seconds"] + shift) for r in rows}
    scene = make_scene(scene_seed(seed, 0), SampleSpec().world)
    answers |= {t.question: t.answer for t in make_tasks(scene, seed=seed, per_kind=2, kinds=("qa",))}
    answers |= {t.question: t.answer for t in make_tasks(scene, seed=seed, per_kind=2, kinds=("absent",))}
    answers[CAPTION_TEMPLATES[0]] = "\n".join(
        f"From {r['start_seconds'] + shift:.1f} to {r['end_seconds'] + shift:.1f} seconds: {r['caption']}" for r in rows
    )
    return lambda lm, frames, seconds, question, *, max_new_tokens: answers.get(question, "no idea")


def test_synthetic_eval_gives_full_marks_to_the_truth(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "ask", oracle(tmp_path / "truth", seed=777))
    result = evaluate.evaluate_synthetic(lm, seed=777, videos=1)
    assert result["grounding_queries"] > 0 and result["caption_events"] > 0 and result["qa_questions"] > 0
    assert result["r1_at_0_7"] == 1.0 and result["miou"] == pytest.approx(1.0)
    assert result["qa_exact"] == 1.0 and result["caption_recall"] == 1.0 and result["caption_precision"] == 1.0
    assert result["caption_recall_named"] == 1.0 and result["caption_precision_named"] == 1.0
    assert result["absent_questions"] > 0 and result["absent_accuracy"] == 1.0 and result["absent_said_for_true"] == 0.0
    kinds = [k.removeprefix("grounding_").removesuffix("_queries") for k in result
             if k.startswith("grounding_") and k.endswith("_queries") and k != "grounding_queries"]
    assert kinds and sum(result[f"grounding_{k}_queries"] for k in kinds) == result["grounding_queries"]
    assert all(result[f"grounding_{k}_r1_at_0_5"] == 1.0 for k in kinds)
    # The probe's questions are not the oracle's: it answers "no idea", named no colour.
    assert result["binding_questions"] == evaluate.BINDING_QUESTIONS_PER_VIDEO
    assert result["binding_accuracy"] == 0.0 and result["binding_last_pair_rate"] == 0.0
    assert 0.0 < result["binding_chance"] < 1.0
    # Nor the moment probe's (one still per question): every focus asked, none answered.
    asked = {k: v for k, v in result.items() if k.startswith("moment_") and k.endswith("_questions")}
    assert sum(asked.values()) >= 4 * evaluate.MOMENTS_PER_VIDEO and "moment_screen_questions" in asked
    assert all(result[k.replace("_questions", "_accuracy")] == 0.0 for k in asked)


def test_synthetic_eval_gives_no_marks_to_far_off_spans(lm, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "ask", oracle(tmp_path / "shifted", seed=777, shift=1000.0))
    result = evaluate.evaluate_synthetic(lm, seed=777, videos=1)
    assert result["r1_at_0_3"] == 0.0 and result["caption_recall"] == 0.0


def test_synthetic_grounding_is_scored_by_event_kind(lm, tmp_path, monkeypatch):
    """Spans far off for one kind of event only: that kind scores 0, every other kind 1."""
    asked = [r for r in written_rows(tmp_path / "rows", seed=777) if r["unique"]]
    missed = asked[0]["kind"]
    wrong = {evaluate.grounding_question(r["query"]) for r in asked if r["kind"] == missed}
    answer = oracle(tmp_path / "truth", seed=777)
    monkeypatch.setattr(evaluate, "ask", lambda *a, **k: "From 0.0 to 0.1 seconds." if a[3] in wrong else answer(*a, **k))
    result = evaluate.evaluate_synthetic(lm, seed=777, videos=1)
    kinds = {r["kind"] for r in asked}
    assert len(kinds) > 1 and result[f"grounding_{missed}_r1_at_0_5"] == 0.0
    assert result[f"grounding_{missed}_queries"] == sum(r["kind"] == missed for r in asked)
    assert all(result[f"grounding_{k}_r1_at_0_5"] == 1.0 for k in kinds - {missed})
    assert result["r1_at_0_5"] == pytest.approx(1 - result[f"grounding_{missed}_queries"] / len(asked))


def test_grounding_is_split_by_same_kind_siblings(lm, tmp_path, monkeypatch):
    """A model that grounds by event kind alone: right where the video has one event of the
    asked kind, on another event of that kind where it has several."""
    rows = written_rows(tmp_path / "rows", seed=770)  # 7 of its 12 asked events have siblings
    asked = [r for r in rows if r["unique"]]
    sibling_of = {
        evaluate.grounding_question(r["query"]): next(
            (o for o in rows if o["kind"] == r["kind"] and o["query"] != r["query"]), None)
        for r in asked
    }
    answer = oracle(tmp_path / "truth", seed=770)

    def by_kind(*a, **k):
        other = sibling_of.get(a[3])
        return f"From {other['start_seconds']} to {other['end_seconds']} seconds." if other else answer(*a, **k)

    monkeypatch.setattr(evaluate, "ask", by_kind)
    result = evaluate.evaluate_synthetic(lm, seed=770, videos=1)
    with_siblings = sum(v is not None for v in sibling_of.values())
    assert 0 < with_siblings < len(asked)
    assert result["grounding_queries_with_siblings"] == with_siblings
    assert result["grounding_queries_alone"] == len(asked) - with_siblings
    assert result["grounding_r1_at_0_5_alone"] == 1.0 and result["grounding_landed_on_sibling"] == 1.0
    assert result["grounding_r1_at_0_5_with_siblings"] < 1.0  # only a sibling overlapping the truth scores
    monkeypatch.setattr(evaluate, "ask", answer)
    truth = evaluate.evaluate_synthetic(lm, seed=770, videos=1)
    assert truth["grounding_r1_at_0_5_with_siblings"] == 1.0
    assert truth["grounding_landed_on_sibling"] < 1.0


def test_captions_with_the_right_spans_and_the_wrong_text_are_not_named(lm, tmp_path, monkeypatch):
    """``caption_recall`` matches spans only; ``caption_recall_named`` also wants each matched
    line to say its event: with every other line's text replaced, only the others count there."""
    from recipe.tasks import CAPTION_TEMPLATES

    answer = oracle(tmp_path / "half", seed=777)
    lines = answer(lm, None, None, CAPTION_TEMPLATES[0], max_new_tokens=0).splitlines()
    half = "\n".join(line if i % 2 == 0 else line.split(": ", 1)[0] + ": nothing happens." for i, line in enumerate(lines))
    monkeypatch.setattr(evaluate, "ask", lambda *a, **k: half if a[3] == CAPTION_TEMPLATES[0] else answer(*a, **k))
    result = evaluate.evaluate_synthetic(lm, seed=777, videos=1)
    assert len(lines) > 2 and result["caption_recall"] == 1.0
    assert result["caption_recall_named"] == pytest.approx(len(lines[::2]) / len(lines))
    assert result["caption_precision_named"] == pytest.approx(len(lines[::2]) / len(lines))


def test_events_that_do_not_happen_are_scored_apart_from_true_ones(lm, tmp_path, monkeypatch):
    """A model that says "It does not happen." to everything: every absent question right, every
    true event missed and counted as said absent; one that always gives a span: the reverse."""
    monkeypatch.setattr(evaluate, "ask", lambda *a, **k: "It does not happen.")
    result = evaluate.evaluate_synthetic(lm, seed=777, videos=1)
    assert result["absent_questions"] == evaluate.ABSENT_PER_VIDEO
    assert result["absent_accuracy"] == 1.0 and result["absent_said_for_true"] == 1.0 and result["r1_at_0_3"] == 0.0
    monkeypatch.setattr(evaluate, "ask", lambda *a, **k: "From 1.0 to 2.0 seconds.")
    result = evaluate.evaluate_synthetic(lm, seed=777, videos=1)
    assert result["absent_accuracy"] == 0.0 and result["absent_said_for_true"] == 0.0
