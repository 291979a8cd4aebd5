"""The synthetic event world: ``make_scene(seed, params)`` scripts a video and its true events.

A scene is a pure function of ``(seed, WorldParams)``: one ``numpy`` generator drives a small
discrete-event script. Objects (a shape with a colour, described as "the red circle") are busy
with at most one action at a time — enter/appear, move, change colour, change size, collide,
leave/disappear — and rest at positions kept apart from every other object at rest and above the
text banner, so whenever no object is mid-action nothing overlaps and everything present is
visible. A (colour, shape) description belongs to one object for the whole video, so a subject never
names two objects. Text and background changes run on their own tracks. Every action writes its
keyframes and its :class:`~recipe.scene.Event` together, which is what keeps the ground truth
and the pixels consistent. All script times are integer tenths of a second.

``render_frames`` and ``describe_at`` are re-exported here so that this module is the face of
the world.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from recipe.render import render_frames
from recipe.scene import (
    BACKGROUND_COLOUR_NAMES,
    OBJECT_COLOUR_NAMES,
    SHAPES,
    TEXT_BAND_TOP,
    TEXTS,
    BackgroundTrack,
    Event,
    EventKind,
    ObjectTrack,
    Scene,
    Shape,
    TextSpan,
    WorldParams,
    describe_at,
)
from recipe.timing import make_frame_ticks

__all__ = ["WorldParams", "Scene", "Event", "make_scene", "render_frames", "describe_at"]

log = logging.getLogger(__name__)

R_MIN, R_MAX = 0.045, 0.13
MARGIN = 0.03  # gap kept between resting objects and between objects and frame edges
OFF = 0.02  # how far beyond the edge an entering/leaving object's bounding circle starts/ends
EDGE_WORDS = {
    "left": "to the left",
    "right": "to the right",
    "top": "through the top",
    "bottom": "through the bottom",
}
DIRECTIONS = (
    "right",
    "up and to the right",
    "up",
    "up and to the left",
    "left",
    "down and to the left",
    "down",
    "down and to the right",
)
ACTION_WEIGHTS = {
    "move": 3.0,
    "change_colour": 1.5,
    "change_size": 1.0,
    "collide": 1.0,
    "leave": 0.5,
    "disappear": 0.25,
}
MAX_ENTRIES = 3


@dataclass
class _Actor:
    """Mutable builder state of one object; its fields are the state after its current action."""

    object_id: int
    shape: str
    colour: str
    radius: float
    x: float = 0.5
    y: float = 0.5
    present: bool = False
    busy_until: int = 0
    entries: int = 0
    gone_at: int = -(10**9)
    keys: list[int] = field(default_factory=list)
    frames: list[tuple[float, float, float, str]] = field(default_factory=list)
    presence: list[tuple[int, int]] = field(default_factory=list)
    since: int = 0

    @property
    def name(self) -> str:
        return f"the {self.colour} {self.shape}"

    def key(self, tenths: int, *, radius: float | None = None) -> None:
        """Record the current state as a keyframe (same time as the last key replaces it)."""
        assert not self.keys or tenths >= self.keys[-1], "keyframes must not go back in time"
        value = (self.x, self.y, self.radius if radius is None else radius, self.colour)
        if self.keys and self.keys[-1] == tenths:
            self.frames[-1] = value
        else:
            self.keys.append(tenths)
            self.frames.append(value)

    def track(self, *, duration_tenths: int) -> ObjectTrack:
        presence = list(self.presence)
        if self.present:
            presence.append((self.since, duration_tenths + 1))
        xs, ys, radii, colours = zip(*self.frames, strict=True)
        shape = cast(Shape, self.shape)
        return ObjectTrack(
            self.object_id, shape, tuple(self.keys), xs, ys, radii, colours, tuple(presence)
        )


@dataclass
class _Script:
    """The whole builder: RNG, actors, claimed descriptions, events so far."""

    rng: np.random.Generator
    params: WorldParams
    duration_tenths: int
    actors: list[_Actor]
    claimed: set[tuple[str, str]]
    events: list[Event] = field(default_factory=list)

    def tenths(self, low_seconds: float, high_seconds: float) -> int:
        return int(round(self.rng.uniform(low_seconds, high_seconds) * 10))

    def action_tenths(self, low_seconds: float, high_seconds: float) -> int:
        """A duration for an object action or a fade, stretched by ``params.action_scale``."""
        return int(round(self.rng.uniform(low_seconds, high_seconds) * self.params.action_scale * 10))

    def resting(self, *, but: _Actor) -> list[tuple[float, float, float]]:
        return [(a.x, a.y, a.radius) for a in self.actors if a.present and a is not but]

    def fits(self, x: float, y: float, r: float, *, but: _Actor) -> bool:
        inside = r + MARGIN <= x <= 1 - r - MARGIN and r + MARGIN <= y <= TEXT_BAND_TOP - r - MARGIN
        return inside and all(
            np.hypot(x - ox, y - oy) >= r + orad + 2 * MARGIN
            for ox, oy, orad in self.resting(but=but)
        )

    def free_spot(self, actor: _Actor, *, min_travel: float = 0.0) -> tuple[float, float] | None:
        r = actor.radius
        for _ in range(40):
            x = float(self.rng.uniform(r + MARGIN, 1 - r - MARGIN))
            y = float(self.rng.uniform(r + MARGIN, TEXT_BAND_TOP - r - MARGIN))
            far = np.hypot(x - actor.x, y - actor.y) >= min_travel
            if far and self.fits(x, y, r, but=actor):
                return x, y
        return None

    def emit(
        self,
        kind: EventKind,
        actor: _Actor,
        predicate: str,
        base: str,
        start: int,
        end: int,
        *,
        others: tuple[int, ...] = (),
        value: str = "",
    ) -> None:
        self.events.append(
            Event(kind, actor.name, predicate, base, start, end, (actor.object_id, *others), value)
        )


def _round2(value: float) -> float:
    return round(float(value), 4)


def _offscreen(edge: str, x: float, y: float, r: float) -> tuple[float, float]:
    return {
        "left": (-(r + OFF), y),
        "right": (1 + r + OFF, y),
        "top": (x, -(r + OFF)),
        "bottom": (x, 1 + r + OFF),
    }[edge]


def _enter(s: _Script, a: _Actor, t: int) -> bool:
    spot = s.free_spot(a)
    appear = s.rng.random() < 0.3
    d = s.action_tenths(0.5, 1.5) if appear else s.action_tenths(1.0, 3.0)
    if spot is None or t + d > s.duration_tenths - 2:
        return False
    if appear:
        a.x, a.y = spot
        a.key(t, radius=0.0)
        s.emit("appear", a, "appears", "appear", t, t + d)
    else:
        edge = str(s.rng.choice(list(EDGE_WORDS)))
        a.x, a.y = _offscreen(edge, *spot, a.radius)
        a.key(t)
        a.x, a.y = spot
        s.emit(
            "enter", a, f"enters from the {edge}", f"enter from the {edge}", t, t + d, value=edge
        )
    a.key(t + d)
    a.present, a.since, a.entries, a.busy_until = True, t, a.entries + 1, t + d
    return True


def _leave(s: _Script, a: _Actor, t: int, *, vanish: bool) -> bool:
    d = s.action_tenths(0.5, 1.5) if vanish else s.action_tenths(1.0, 3.0)
    if t + d > s.duration_tenths - 2:
        return False
    a.key(t)
    if vanish:
        a.key(t + d, radius=0.0)
        s.emit("disappear", a, "disappears", "disappear", t, t + d)
    else:
        edge = str(s.rng.choice(list(EDGE_WORDS)))
        a.x, a.y = _offscreen(edge, a.x, a.y, a.radius)
        a.key(t + d)
        words = EDGE_WORDS[edge]
        s.emit("leave", a, f"leaves {words}", f"leave {words}", t, t + d, value=edge)
    a.presence.append((a.since, t + d))
    a.present, a.gone_at, a.busy_until = False, t + d, t + d
    return True


def direction_word(dx: float, dy: float) -> str:
    """The nearest of the eight ``DIRECTIONS`` to a displacement (frame fractions, y down)."""
    angle = np.degrees(np.arctan2(-dy, dx)) % 360  # y points down on screen
    return DIRECTIONS[int(((angle + 22.5) % 360) // 45)]


def _move(s: _Script, a: _Actor, t: int) -> bool:
    spot = s.free_spot(a, min_travel=0.2)
    if spot is None:
        return False
    distance = float(np.hypot(spot[0] - a.x, spot[1] - a.y))
    d = max(5, int(round(distance / s.rng.uniform(0.12, 0.35) * s.params.action_scale * 10)))
    if t + d > s.duration_tenths - 2:
        return False
    word = direction_word(spot[0] - a.x, spot[1] - a.y)
    a.key(t)
    s.emit("move", a, f"moves {word}", f"move {word}", t, t + d, value=word)
    a.x, a.y = spot
    a.key(t + d)
    a.busy_until = t + d
    return True


def _change_colour(s: _Script, a: _Actor, t: int) -> bool:
    options = [c for c in OBJECT_COLOUR_NAMES if (c, a.shape) not in s.claimed]
    d = s.action_tenths(0.5, 2.0)
    if not options or t + d > s.duration_tenths - 2:
        return False
    new = str(s.rng.choice(options))
    s.claimed.add((new, a.shape))
    a.key(t)
    s.emit("change_colour", a, f"turns {new}", f"turn {new}", t, t + d, value=new)
    a.colour = new
    a.key(t + d)
    a.busy_until = t + d
    return True


def _change_size(s: _Script, a: _Actor, t: int) -> bool:
    grown = round(a.radius * 1.4, 4)
    grow = grown <= R_MAX and s.fits(a.x, a.y, grown, but=a)
    new = grown if grow else round(a.radius / 1.4, 4)
    d = s.action_tenths(0.5, 2.0)
    if new < R_MIN or t + d > s.duration_tenths - 2:
        return False
    a.key(t)
    verb = ("grows", "grow") if grow else ("shrinks", "shrink")
    s.emit("change_size", a, verb[0], verb[1], t, t + d, value=verb[1])
    a.radius = new
    a.key(t + d)
    a.busy_until = t + d
    return True


def _collide(s: _Script, a: _Actor, t: int) -> bool:
    partners = [b for b in s.actors if b is not a and b.present and b.busy_until <= t]
    d = 2 * s.action_tenths(0.6, 1.5)
    if not partners or t + d > s.duration_tenths - 2:
        return False
    b = partners[int(s.rng.integers(len(partners)))]
    gap = float(np.hypot(b.x - a.x, b.y - a.y))
    ux, uy = (b.x - a.x) / gap, (b.y - a.y) / gap
    step = (gap - 0.8 * (a.radius + b.radius)) / 2  # each closes half the gap to contact
    for actor, sign in ((a, 1.0), (b, -1.0)):
        home = actor.x, actor.y
        actor.key(t)
        actor.x, actor.y = _round2(home[0] + sign * ux * step), _round2(home[1] + sign * uy * step)
        actor.key(t + d // 2)
        actor.x, actor.y = home
        actor.key(t + d)
        actor.busy_until = t + d
    s.emit(
        "collide",
        a,
        f"collides with {b.name}",
        f"collide with {b.name}",
        t,
        t + d,
        others=(b.object_id,),
        value=b.name,
    )
    return True


def _act(s: _Script, a: _Actor, t: int) -> bool:
    if not a.present:
        crowd = sum(x.present for x in s.actors)
        ready = a.entries < MAX_ENTRIES and t >= a.gone_at + 20
        return ready and crowd < s.params.max_present and _enter(s, a, t)
    names = list(ACTION_WEIGHTS)
    weights = np.asarray([ACTION_WEIGHTS[n] for n in names])
    action = names[int(s.rng.choice(len(names), p=weights / weights.sum()))]
    if action in ("leave", "disappear"):
        return _leave(s, a, t, vanish=action == "disappear")
    return {
        "move": _move,
        "change_colour": _change_colour,
        "change_size": _change_size,
        "collide": _collide,
    }[action](s, a, t)


def _make_actors(s: _Script, count: int) -> None:
    for object_id in range(count):
        shape = str(s.rng.choice(SHAPES))
        colours = [c for c in OBJECT_COLOUR_NAMES if (c, shape) not in s.claimed]
        colour = str(s.rng.choice(colours))
        s.claimed.add((colour, shape))
        actor = _Actor(object_id, shape, colour, _round2(s.rng.uniform(0.06, 0.10)))
        s.actors.append(actor)
        crowd = sum(x.present for x in s.actors)
        spot = s.free_spot(actor) if crowd < s.params.max_present else None
        if spot is not None and s.rng.random() < 0.4:
            actor.x, actor.y = spot
            actor.present, actor.since, actor.entries = True, -1, 1
        actor.key(0)


def _run_objects(s: _Script) -> None:
    t = int(round(s.rng.uniform(0.3, 1.5) * 10))
    while t < s.duration_tenths - 5:
        idle = [a for a in s.actors if a.busy_until <= t]
        if idle:
            _act(s, idle[int(s.rng.integers(len(idle)))], t)
        t += max(1, int(round(s.rng.exponential(s.params.event_gap_seconds) * 10)))


def _make_texts(s: _Script) -> tuple[TextSpan, ...]:
    spans, t = [], s.tenths(0.5, 6.0)
    while True:
        d = s.tenths(1.5, 8.0)
        if t + d > s.duration_tenths - 2:
            break
        text = str(s.rng.choice(TEXTS))
        spans.append(TextSpan(text, t, t + d))
        s.events.append(
            Event(
                "text",
                f'the text "{text}"',
                "appears on screen",
                "appear on screen",
                t,
                t + d,
                value=text,
            )
        )
        t += d + max(10, int(round(s.rng.exponential(s.params.text_gap_seconds) * 10)))
    return tuple(spans)


def _make_background(s: _Script) -> BackgroundTrack:
    colour = str(s.rng.choice(BACKGROUND_COLOUR_NAMES))
    keys, colours = [0], [colour]
    t = s.tenths(1.0, 12.0)
    while True:
        d = s.action_tenths(0.5, 2.0)
        if t + d > s.duration_tenths - 2:
            break
        new = str(s.rng.choice([c for c in BACKGROUND_COLOUR_NAMES if c != colour]))
        keys += [t, t + d]  # hold the old colour until t, cross-fade to the new one by t + d
        colours += [colour, new]
        s.events.append(
            Event(
                "background", "the background", f"turns {new}", f"turn {new}", t, t + d, value=new
            )
        )
        colour = new
        t += d + max(30, int(round(s.rng.exponential(s.params.background_gap_seconds) * 10)))
    return BackgroundTrack(tuple(keys), tuple(colours))


def _event_order(e: Event) -> tuple[int, int, str, str]:
    return (e.start_tenths, e.end_tenths, e.kind, e.query)


def make_scene(seed: int, params: WorldParams | None = None) -> Scene:
    """Script one synthetic video; a pure function of ``(seed, params)``.

    Args:
        seed: any non-negative integer.
        params: world knobs; defaults to ``WorldParams()``.

    Returns:
        The scene, with its true events sorted by (start, end, kind, query).

    Raises:
        ValueError: if ``seed`` is negative.
    """
    if seed < 0:
        raise ValueError(f"seed={seed}: expected a non-negative integer")
    params = WorldParams() if params is None else params
    rng = np.random.default_rng(seed)
    low, high = np.log(params.min_seconds), np.log(params.max_seconds)
    duration_tenths = max(10, int(round(np.exp(rng.uniform(low, high)) * 10)))
    ticks, variable = make_frame_ticks(rng, params, duration_tenths=duration_tenths)
    s = _Script(rng, params, duration_tenths, [], set())
    _make_actors(s, int(rng.integers(1, params.max_objects + 1)))
    _run_objects(s)
    texts = _make_texts(s)
    background = _make_background(s)
    objects = tuple(a.track(duration_tenths=duration_tenths) for a in s.actors)
    events = tuple(sorted(s.events, key=_event_order))
    log.debug(
        "scene %d: %.1f s, %d frames, vfr=%s, %d events",
        seed,
        duration_tenths / 10,
        len(ticks),
        variable,
        len(events),
    )
    return Scene(seed, params, duration_tenths, ticks, objects, texts, background, events)
