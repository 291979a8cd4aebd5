"""The synthetic world: scenes are pure functions of the seed, and the pixels agree with the
true events (presence, colours, background, text, collisions, frame rates)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recipe.render import object_pixel_count
from recipe.scene import BACKGROUND_COLOURS, OBJECT_COLOURS, Scene, object_state
from recipe.world import WorldParams, make_scene, render_frames

SHORT = WorldParams(size_px=96, min_seconds=8.0, max_seconds=40.0, max_objects=5)
SEEDS = range(8)
PRESENCE_KINDS = {"enter", "appear", "leave", "disappear"}


SLOW = dataclasses.replace(SHORT, action_scale=3.0)


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [make_scene(seed, SHORT) for seed in SEEDS] + [make_scene(seed, SLOW) for seed in range(4)]


def test_scene_is_a_pure_function_of_seed_and_params() -> None:
    assert make_scene(3, SHORT) == make_scene(3, SHORT)
    assert make_scene(3, SHORT) != make_scene(4, SHORT)
    assert (
        make_scene(3, SHORT).events
        != make_scene(3, dataclasses.replace(SHORT, max_objects=2)).events
    )


def test_render_is_deterministic_uint8_and_order_free(scenes: list[Scene]) -> None:
    scene = scenes[0]
    seconds = np.array([5.3, 0.0, 2.25, scene.duration_seconds - 0.01])
    frames = render_frames(scene, seconds)
    assert frames.shape == (4, 96, 96, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, render_frames(scene, seconds))
    np.testing.assert_array_equal(frames[::-1], render_frames(scene, seconds[::-1]))
    assert render_frames(scene, seconds, size_px=64).shape == (4, 64, 64, 3)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="size_px=33"):
        WorldParams(size_px=33)
    with pytest.raises(ValueError, match="min_fps=40"):
        WorldParams(min_fps=40, max_fps=50)
    with pytest.raises(ValueError, match="seed=-1"):
        make_scene(-1)
    with pytest.raises(ValueError, match="expected \\[T\\]"):
        render_frames(make_scene(0, SHORT), np.zeros((2, 2)))


def test_events_are_sorted_spans_on_the_tenths_grid(scenes: list[Scene]) -> None:
    for scene in scenes:
        assert scene.events, "every short scene has events"
        assert list(scene.events) == sorted(
            scene.events, key=lambda e: (e.start_tenths, e.end_tenths, e.kind, e.query)
        )
        for e in scene.events:
            assert 0 <= e.start_tenths < e.end_tenths <= scene.duration_tenths
            assert f"{e.start_seconds:.1f}" == f"{e.start_tenths // 10}.{e.start_tenths % 10}"
            assert e.caption == f"{e.subject} {e.predicate}."


def test_durations_and_frame_rates_follow_params() -> None:
    params = WorldParams(min_seconds=4.0, max_seconds=300.0)
    scenes = [make_scene(seed, params) for seed in range(30)]
    durations = [s.duration_seconds for s in scenes]
    assert min(durations) >= 4.0 and max(durations) <= 300.0
    assert min(durations) < 20.0 and max(durations) > 100.0, "durations span seconds to minutes"
    for scene in scenes:
        ticks = np.asarray(scene.frame_ticks)
        assert ticks[0] == 0 and np.all(np.diff(ticks) > 0)
        assert scene.frame_seconds[-1] < scene.duration_seconds


def test_action_scale_stretches_actions_and_fades() -> None:
    stretched = {"enter", "appear", "move", "change_colour", "change_size", "collide", "leave", "disappear", "background"}

    def median_length(params: WorldParams) -> float:
        scenes = [make_scene(seed, params) for seed in range(12)]
        return float(np.median([e.end_seconds - e.start_seconds for s in scenes for e in s.events if e.kind in stretched]))

    assert median_length(SLOW) > 2.2 * median_length(SHORT)
    assert make_scene(5, dataclasses.replace(SHORT, action_scale=1.0)) == make_scene(5, SHORT)
    with pytest.raises(ValueError, match="action_scale=0"):
        WorldParams(action_scale=0)


def test_shorter_text_and_background_gaps_give_several_events_of_one_kind() -> None:
    busy = WorldParams(min_seconds=30.0, max_seconds=40.0, text_gap_seconds=1.0, background_gap_seconds=1.0)
    plain = dataclasses.replace(busy, text_gap_seconds=8.0, background_gap_seconds=15.0)
    assert plain == WorldParams(min_seconds=30.0, max_seconds=40.0)  # the old world is the default

    def count(scene: Scene, kind: str) -> int:
        return sum(e.kind == kind for e in scene.events)

    pairs = [(make_scene(seed, plain), make_scene(seed, busy)) for seed in range(12)]
    for kind in ("text", "background"):
        assert sum(count(b, kind) for _, b in pairs) > 1.4 * sum(count(p, kind) for p, _ in pairs)
        assert all(count(b, kind) >= 2 for _, b in pairs)
    for p, b in pairs:  # the objects' events are drawn first and do not change
        assert [e for e in p.events if e.kind not in ("text", "background")] == [
            e for e in b.events if e.kind not in ("text", "background")
        ]
        texts = sorted((e.start_tenths, e.end_tenths) for e in b.events if e.kind == "text")
        assert all(later[0] - earlier[1] >= 10 for earlier, later in zip(texts, texts[1:], strict=False))  # 1 s apart at least
    with pytest.raises(ValueError, match="background_gap_seconds=0"):
        WorldParams(background_gap_seconds=0)


def test_variable_frame_rate_scenes_really_vary() -> None:
    vfr = make_scene(1, dataclasses.replace(SHORT, vfr_probability=1.0))
    cfr = make_scene(1, dataclasses.replace(SHORT, vfr_probability=0.0))
    assert len(np.unique(np.diff(vfr.frame_ticks))) >= 2
    assert len(np.unique(np.diff(cfr.frame_ticks))) == 1


def _without(scene: Scene, object_id: int) -> Scene:
    return dataclasses.replace(
        scene, objects=tuple(o for o in scene.objects if o.object_id != object_id)
    )


def _busy(
    scene: Scene, object_id: int, tenths: np.ndarray, *, kinds: set[str] | None = None
) -> np.ndarray:
    busy = np.zeros(tenths.shape, dtype=bool)
    for e in scene.events:
        if object_id in e.object_ids and (kinds is None or e.kind in kinds):
            busy |= (tenths >= e.start_tenths - 1) & (tenths <= e.end_tenths + 1)
    return busy


def test_objects_visible_exactly_inside_their_presence(scenes: list[Scene]) -> None:
    for scene in scenes:
        seconds = np.arange(0.05, scene.duration_seconds, 0.5)
        tenths = seconds * 10
        full = render_frames(scene, seconds)
        for track in scene.objects:
            inside = np.zeros(seconds.shape, dtype=bool)
            for start, end in track.presence:
                inside |= (tenths > start) & (tenths < end)
            pixels = object_pixel_count(track, seconds, size_px=96)
            shown = np.any(
                full != render_frames(_without(scene, track.object_id), seconds), axis=(1, 2, 3)
            )
            assert not pixels[~inside].any() and not shown[~inside].any()
            steady = inside & ~_busy(scene, track.object_id, tenths, kinds=PRESENCE_KINDS)
            assert pixels[steady].min(initial=1) > 0 and shown[steady].all(), (
                scene.seed,
                track.object_id,
            )


def test_presence_spans_start_and_end_with_their_events(scenes: list[Scene]) -> None:
    for scene in scenes:
        for track in scene.objects:
            mine = [e for e in scene.events if e.object_ids[:1] == (track.object_id,)]
            starts = {e.start_tenths for e in mine if e.kind in {"enter", "appear"}}
            ends = {e.end_tenths for e in mine if e.kind in {"leave", "disappear"}}
            for start, end in track.presence:
                assert start == -1 or start in starts
                assert end == scene.duration_tenths + 1 or end in ends
            assert len(starts) + any(s == -1 for s, _ in track.presence) == len(track.presence)


def test_colour_changes_match_the_pixels(scenes: list[Scene]) -> None:
    checked = 0
    for scene in scenes:
        for e in (e for e in scene.events if e.kind == "change_colour"):
            track = scene.objects[e.object_ids[0]]
            after = np.array([e.end_seconds + 0.05])
            state = object_state(track, after)
            np.testing.assert_allclose(state.rgb[0], OBJECT_COLOURS[e.value])
            x, y = int(state.x[0] * 96), int(state.y[0] * 96)
            assert tuple(render_frames(scene, after)[0, y, x]) == OBJECT_COLOURS[e.value]
            old = e.subject.split(" ")[1]
            before = object_state(track, np.array([e.start_seconds - 0.05]))
            np.testing.assert_allclose(before.rgb[0], OBJECT_COLOURS[old])
            checked += 1
    assert checked > 3


def _mode_colour(frame: np.ndarray) -> tuple[int, ...]:
    colours, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
    return tuple(int(c) for c in colours[counts.argmax()])


def test_background_matches_its_events(scenes: list[Scene]) -> None:
    checked = 0
    for scene in scenes:
        changes = [e for e in scene.events if e.kind == "background"]
        colour = scene.background.colours[0]
        for e in changes:
            before, after = render_frames(
                scene, np.array([e.start_seconds - 0.05, e.end_seconds + 0.05])
            )
            assert _mode_colour(before) == BACKGROUND_COLOURS[colour]
            assert _mode_colour(after) == BACKGROUND_COLOURS[e.value]
            colour = e.value
            checked += 1
    assert checked > 3


def test_text_is_visible_exactly_when_its_event_says(scenes: list[Scene]) -> None:
    for scene in scenes:
        seconds = np.arange(0.05, scene.duration_seconds, 0.25)
        tenths = seconds * 10
        inside = np.zeros(seconds.shape, dtype=bool)
        for e in (e for e in scene.events if e.kind == "text"):
            inside |= (tenths > e.start_tenths) & (tenths < e.end_tenths)
        plain = render_frames(dataclasses.replace(scene, texts=()), seconds)
        shown = np.any(render_frames(scene, seconds) != plain, axis=(1, 2, 3))
        np.testing.assert_array_equal(shown, inside)


def test_collisions_bring_the_two_objects_into_contact(scenes: list[Scene]) -> None:
    collisions = [(s, e) for s in scenes for e in s.events if e.kind == "collide"]
    assert collisions
    for scene, e in collisions:
        a, b = (scene.objects[i] for i in e.object_ids)
        times = np.array([e.start_seconds, (e.start_seconds + e.end_seconds) / 2, e.end_seconds])
        sa, sb = object_state(a, times), object_state(b, times)
        gap = np.hypot(sa.x - sb.x, sa.y - sb.y)
        touch = sa.radius + sb.radius
        assert gap[1] <= 0.81 * touch[1] and gap[0] > touch[0] and gap[2] > touch[2]
        assert e.subject.endswith(a.shape) and e.value.endswith(b.shape)
