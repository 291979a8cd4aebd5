"""The timestamp-binding probe scores hand-made answerers with known behaviour."""

from __future__ import annotations

import re

import numpy as np
import pytest

from recipe.probes import binding_probe, colour_pairs_video, named_colour
from recipe.scene import BACKGROUND_COLOURS


def _asked_seconds(question: str) -> float:
    return float(re.search(r"at ([\d.]+) seconds", question).group(1))


def _colour_of(frame) -> str:
    rgb = tuple(int(v) for v in frame[0, 0])
    return next(name for name, value in BACKGROUND_COLOURS.items() if tuple(value) == rgb)


def oracle(frames, seconds, question) -> str:
    pair = int(np.argmin(np.abs(seconds[::2] + 0.25 - _asked_seconds(question))))
    return f"The background is {_colour_of(frames[2 * pair])}."


def last_pair(frames, seconds, question) -> str:
    return f"{_colour_of(frames[-1]).capitalize()}."


def test_an_answerer_that_reads_the_clock_scores_one():
    scores = binding_probe(oracle, videos=25, seed=3)
    assert scores.accuracy == 1.0 and scores.last_pair_rate == 0.0 and scores.questions == 25
    assert 0.1 < scores.chance < 0.6


def test_an_answerer_that_reads_the_last_pair_is_caught():
    scores = binding_probe(last_pair, videos=25, seed=3)
    assert scores.last_pair_rate == 1.0 and scores.accuracy < 0.5


def test_probe_videos_and_colour_names():
    frames, seconds, colours = colour_pairs_video(np.random.default_rng(0), 5, frame_px=32)
    assert frames.shape == (10, 32, 32, 3) and seconds.tolist() == [i / 2 for i in range(10)]
    assert all(a != b for a, b in zip(colours, colours[1:], strict=False))
    assert [_colour_of(frames[2 * k + 1]) for k in range(5)] == colours
    assert named_colour("Dark green.") == "dark green" and named_colour("It is grey, not teal") == "grey"
    assert named_colour("No idea.") is None
    with pytest.raises(ValueError):
        binding_probe(oracle, min_pairs=1)


@pytest.mark.parametrize(("max_offset", "run"), [(0.0, 1), (90.0, 1), (0.0, 3)])
def test_lookup_samples_ask_both_ways_about_solid_colour_pairs(max_offset, run):
    from recipe.data import SampleSpec, make_sample
    from vidlm.processor import frame_pair_seconds

    spec = SampleSpec(frame_px=32, lookups=1.0, lookup_pairs=(2, 5), max_offset_seconds=max_offset,
                      offset_probability=1.0, lookup_run=run)
    longest = 0
    kinds, starts = set(), set()
    for seed in range(12):
        sample = make_sample(seed, spec)
        starts.add(float(sample.seconds[0]))
        assert sample.scene is None and 4 <= len(sample.frames) <= 10
        colours = [_colour_of(sample.frames[2 * k]) for k in range(len(sample.frames) // 2)]
        shown = [f"{t:.1f}" for t in frame_pair_seconds(sample.seconds)]
        for task in sample.tasks:
            kinds.add(task.kind)
            if task.kind == "qa":
                pair = shown.index(re.search(r"at ([\d.]+) seconds", task.question, re.I).group(1))
                assert task.answer == f"{colours[pair].capitalize()}."
            else:
                (start, end), = task.spans
                first, last = round(start - sample.seconds[0]), round(end - sample.seconds[0]) - 1
                assert start == pytest.approx(sample.seconds[2 * first])
                # The colour fills exactly pairs first..last: one run, nowhere else.
                inside = set(range(first, last + 1))
                assert {k for k, c in enumerate(colours) if c == colours[first]} == inside
                longest = max(longest, len(inside))
                assert colours[first] in task.question and task.answer == f"From {start:.1f} to {end:.1f} seconds."
    assert kinds == {"qa", "grounding"}
    assert longest == 1 if run == 1 else longest > 1
    # Shifted clocks: every sample starts at its own whole tenth of a second.
    assert starts == {0.0} if not max_offset else (len(starts) > 6 and max(starts) <= max_offset)
    plain = SampleSpec(frame_px=32)
    assert make_sample(3, plain).scene is not None
    with pytest.raises(ValueError, match="lookups"):
        SampleSpec(lookups=1.5)


def test_moment_probe_scores_an_answerer_that_sees_and_one_that_guesses():
    from recipe.probes import moment_probe, moment_questions

    truth = {(frames.tobytes(), task.question): task.answer
             for frames, _, _, task in moment_questions(6, seed=4, frame_px=32)}

    def oracle(frames, seconds, question):
        assert frames.shape[0] == 2 and seconds[0] == seconds[1]  # one moment, one frame pair
        return truth[frames.tobytes(), question]

    seen = moment_probe(oracle, moments=6, seed=4, frame_px=32)
    assert set(seen.accuracy) >= {"screen", "objects", "background", "text", "how_many"}
    assert sum(seen.questions.values()) == len(truth) >= 6 * 5
    assert set(seen.accuracy.values()) == {1.0}

    guessed = moment_probe(lambda *_: "No text.", moments=6, seed=4, frame_px=32)
    assert guessed.accuracy["screen"] == 0.0 and guessed.accuracy["background"] == 0.0
    assert guessed.questions == seen.questions
    assert guessed.as_dict()["screen_questions"] == seen.questions["screen"]
    with pytest.raises(ValueError):
        moment_probe(oracle, moments=0)
