"""Scene data for the synthetic event world: palettes, frozen dataclasses and state lookup.

What is unusual here: every time in a scene's script is an integer number of *tenths* of a second
(``*_tenths``), so that event spans print exactly with one decimal ("From 12.5 to 18.0 seconds").
Frame times are integer ticks of a 90 kHz clock (``frame_ticks``), which every supported frame
rate divides exactly, so the PTS written to a file equals the scene's time to the tick.
Positions and radii are fractions of the frame side, so one scene renders at any size. Object
properties are piecewise-linear keyframes evaluated with ``np.interp``; an object is visible only
strictly inside one of its presence spans.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TIME_BASE_HZ = 90_000
FPS_CHOICES = (10, 12, 15, 18, 20, 24, 25, 30)
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 200, 60),
    "blue": (40, 90, 240),
    "yellow": (250, 220, 30),
    "orange": (250, 140, 20),
    "purple": (150, 60, 200),
    "pink": (250, 130, 190),
    "cyan": (40, 220, 230),
    "white": (245, 245, 245),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "grey": (110, 110, 110),
    "navy": (20, 30, 90),
    "dark green": (20, 80, 40),
    "maroon": (100, 20, 30),
    "teal": (20, 100, 100),
    "brown": (100, 65, 30),
}
TEXTS = (
    "HELLO",
    "GOAL",
    "START",
    "STOP",
    "SALE",
    "OPEN",
    "EXIT",
    "WELCOME",
    "LEVEL 2",
    "GAME OVER",
    "SCORE 10",
    "PAUSE",
    "READY",
    "NEXT",
    "DANGER",
    "BONUS",
)
OBJECT_COLOUR_NAMES = tuple(OBJECT_COLOURS)
BACKGROUND_COLOUR_NAMES = tuple(BACKGROUND_COLOURS)
TEXT_BAND_TOP = 0.86  # the text banner covers y in [TEXT_BAND_TOP, 1) of the frame

EventKind = Literal[
    "enter",
    "appear",
    "move",
    "change_colour",
    "change_size",
    "collide",
    "leave",
    "disappear",
    "text",
    "background",
]
Shape = Literal["circle", "square", "triangle", "star", "diamond", "hexagon", "cross"]


@dataclass(frozen=True)
class WorldParams:
    """Knobs of the world; a scene is a pure function of ``(seed, WorldParams)``.

    Attributes:
        size_px: default square frame side in pixels (even, for yuv420p).
        min_seconds / max_seconds: duration range (drawn log-uniformly).
        min_fps / max_fps: frame-rate range; rates come from ``FPS_CHOICES``.
        vfr_probability: chance that a video is variable-frame-rate.
        max_objects: objects in a video (1..max_objects); max_present on screen at once.
        event_gap_seconds: mean pause between object actions (smaller = busier).
        action_scale: stretches every object action and background fade (2 = twice as slow);
            long actions suit coarse frame sampling (a 1 s frame pair cannot time a 1 s event).
        text_gap_seconds / background_gap_seconds: mean pause (beyond a floor of 1 s / 3 s)
            between on-screen texts / background changes; smaller gives a video several events
            of one kind, which only the asked text or colour tells apart.
    """

    size_px: int = 128
    min_seconds: float = 4.0
    max_seconds: float = 240.0
    min_fps: int = 10
    max_fps: int = 30
    vfr_probability: float = 0.3
    max_objects: int = 5
    max_present: int = 4
    event_gap_seconds: float = 1.5
    action_scale: float = 1.0
    text_gap_seconds: float = 8.0
    background_gap_seconds: float = 15.0

    def __post_init__(self) -> None:
        if self.size_px < 32 or self.size_px % 2:
            raise ValueError(f"size_px={self.size_px}: expected an even integer >= 32")
        if not 1.0 <= self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"min_seconds={self.min_seconds}, max_seconds={self.max_seconds}: "
                "expected 1 <= min_seconds <= max_seconds"
            )
        if not [f for f in FPS_CHOICES if self.min_fps <= f <= self.max_fps]:
            raise ValueError(
                f"min_fps={self.min_fps}, max_fps={self.max_fps}: the range must contain one "
                f"of {FPS_CHOICES}"
            )
        if not 0.0 <= self.vfr_probability <= 1.0:
            raise ValueError(f"vfr_probability={self.vfr_probability}: expected in [0, 1]")
        if not 1 <= self.max_objects <= 12:
            raise ValueError(f"max_objects={self.max_objects}: expected 1..12")
        if self.max_present < 1:
            raise ValueError(f"max_present={self.max_present}: expected >= 1")
        if self.event_gap_seconds <= 0:
            raise ValueError(f"event_gap_seconds={self.event_gap_seconds}: expected > 0")
        if not 0.25 <= self.action_scale <= 10.0:
            raise ValueError(f"action_scale={self.action_scale}: expected in [0.25, 10]")
        for name in ("text_gap_seconds", "background_gap_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected > 0")

    def fps_choices(self) -> tuple[int, ...]:
        return tuple(f for f in FPS_CHOICES if self.min_fps <= f <= self.max_fps)


@dataclass(frozen=True)
class Event:
    """One true event: ``caption`` is ``f"{subject} {predicate}."``.

    ``predicate_base`` is the bare-infinitive form for questions ("When does the red circle
    enter from the left?"). ``object_ids`` names the objects involved (empty for text and
    background events); ``value`` is the new colour, the shown text or the direction word.
    """

    kind: EventKind
    subject: str
    predicate: str
    predicate_base: str
    start_tenths: int
    end_tenths: int
    object_ids: tuple[int, ...] = ()
    value: str = ""

    @property
    def start_seconds(self) -> float:
        return self.start_tenths / 10

    @property
    def end_seconds(self) -> float:
        return self.end_tenths / 10

    @property
    def query(self) -> str:
        return f"{self.subject} {self.predicate}"

    @property
    def caption(self) -> str:
        return f"{self.query}."


@dataclass(frozen=True)
class ObjectTrack:
    """One object's keyframes (times in tenths; x, y, radius as fractions of the frame side)."""

    object_id: int
    shape: Shape
    key_tenths: tuple[int, ...]
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    radii: tuple[float, ...]
    colours: tuple[str, ...]  # colour name at each keyframe; RGB is interpolated between
    presence: tuple[tuple[int, int], ...]  # open spans (tenths) in which the object is drawn


@dataclass(frozen=True)
class TextSpan:
    text: str
    start_tenths: int
    end_tenths: int


@dataclass(frozen=True)
class BackgroundTrack:
    key_tenths: tuple[int, ...]
    colours: tuple[str, ...]


@dataclass(frozen=True)
class Scene:
    """A whole synthetic video: script, frame times and true events (sorted by start)."""

    seed: int
    params: WorldParams
    duration_tenths: int
    frame_ticks: tuple[int, ...]
    objects: tuple[ObjectTrack, ...]
    texts: tuple[TextSpan, ...]
    background: BackgroundTrack
    events: tuple[Event, ...] = field(default=())

    @property
    def duration_seconds(self) -> float:
        return self.duration_tenths / 10

    @property
    def frame_seconds(self) -> np.ndarray:
        """float64 ``[T]``: presentation time of each frame in seconds."""
        return np.asarray(self.frame_ticks, dtype=np.float64) / TIME_BASE_HZ


@dataclass(frozen=True)
class ObjectState:
    """An object's properties at ``T`` times: arrays ``[T]`` (``rgb`` is ``[T, 3]``)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    rgb: np.ndarray
    visible: np.ndarray


@dataclass(frozen=True)
class Snapshot:
    """What a viewer sees at one time: objects ("red circle", left to right), background, text."""

    objects: tuple[str, ...]
    background: str
    text: str | None


def _interp(tenths: np.ndarray, keys: tuple[int, ...], values: np.ndarray) -> np.ndarray:
    return np.interp(tenths, np.asarray(keys, dtype=np.float64), values)


def _rgb_table(names: tuple[str, ...], palette: dict[str, tuple[int, int, int]]) -> np.ndarray:
    return np.asarray([palette[n] for n in names], dtype=np.float64)  # [K, 3]


def object_state(track: ObjectTrack, seconds: np.ndarray) -> ObjectState:
    """Evaluate one object at ``seconds`` (float ``[T]``)."""
    tenths = np.asarray(seconds, dtype=np.float64) * 10
    table = _rgb_table(track.colours, OBJECT_COLOURS)
    rgb = np.stack([_interp(tenths, track.key_tenths, table[:, c]) for c in range(3)], axis=-1)
    visible = np.zeros(tenths.shape, dtype=bool)
    for start, end in track.presence:
        visible |= (tenths > start) & (tenths < end)
    return ObjectState(
        x=_interp(tenths, track.key_tenths, np.asarray(track.xs)),
        y=_interp(tenths, track.key_tenths, np.asarray(track.ys)),
        radius=_interp(tenths, track.key_tenths, np.asarray(track.radii)),
        rgb=rgb,
        visible=visible,
    )


def background_rgb(track: BackgroundTrack, seconds: np.ndarray) -> np.ndarray:
    """float64 ``[T, 3]`` background colour (cross-fades between keyframes)."""
    tenths = np.asarray(seconds, dtype=np.float64) * 10
    table = _rgb_table(track.colours, BACKGROUND_COLOURS)
    return np.stack([_interp(tenths, track.key_tenths, table[:, c]) for c in range(3)], axis=-1)


def _name_at(keys: tuple[int, ...], names: tuple[str, ...], tenths: float) -> str:
    """The colour name in force at ``tenths`` (the latest keyframe at or before it)."""
    index = int(np.searchsorted(np.asarray(keys), tenths, side="right")) - 1
    return names[max(index, 0)]


def colour_at(track: ObjectTrack, tenths: float) -> str:
    """The object's colour name in force at ``tenths`` (the old colour during a change)."""
    return _name_at(track.key_tenths, track.colours, tenths)


def background_at(track: BackgroundTrack, tenths: float) -> str:
    """The background's colour name in force at ``tenths`` (the old colour during a fade)."""
    return _name_at(track.key_tenths, track.colours, tenths)


def describe_at(scene: Scene, seconds: float) -> Snapshot:
    """The viewer's snapshot at ``seconds``: objects left to right, background, text.

    Meaningful at stable times (no event span covers ``seconds``); inside a colour change the
    old colour is reported, inside a fade the old background.
    """
    tenths = seconds * 10
    placed = []
    for track in scene.objects:
        if any(start < tenths < end for start, end in track.presence):
            colour = colour_at(track, tenths)
            x = float(_interp(np.asarray([tenths]), track.key_tenths, np.asarray(track.xs))[0])
            placed.append((x, f"{colour} {track.shape}"))
    texts = [s.text for s in scene.texts if s.start_tenths < tenths < s.end_tenths]
    return Snapshot(
        objects=tuple(name for _, name in sorted(placed)),
        background=background_at(scene.background, tenths),
        text=texts[0] if texts else None,
    )
