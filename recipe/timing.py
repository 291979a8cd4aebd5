"""Frame times of a synthetic video, as integer ticks of the 90 kHz clock.

Constant-rate videos take one rate from ``FPS_CHOICES``. Variable-rate videos are made of
segments of 1-6 seconds, each with its own rate, and drop some single frames, so that frame
intervals genuinely change inside the file (not just a nominal rate). Every rate divides
90 000, so ticks are exact and survive muxing unchanged.
"""

from __future__ import annotations

import numpy as np

from recipe.scene import TIME_BASE_HZ, WorldParams

DROP_PROBABILITY = 0.08


def constant_ticks(*, fps: int, duration_tenths: int) -> np.ndarray:
    """int64 ``[T]`` ticks of a constant-rate video covering ``[0, duration)``."""
    step = TIME_BASE_HZ // fps
    return np.arange(0, duration_tenths * TIME_BASE_HZ // 10, step, dtype=np.int64)


def variable_ticks(
    rng: np.random.Generator, *, fps_choices: tuple[int, ...], duration_tenths: int
) -> np.ndarray:
    """int64 ``[T]`` ticks with per-segment rates and dropped frames (always >= 2 rates used)."""
    end = duration_tenths * TIME_BASE_HZ // 10
    choices = fps_choices if len(fps_choices) > 1 else (fps_choices[0], fps_choices[0] * 2)
    pieces, tick, previous = [], 0, -1
    while tick < end:
        options = [f for f in choices if f != previous]
        fps = int(rng.choice(options))
        previous = fps
        seg_end = min(end, tick + int(rng.uniform(1.0, 6.0) * TIME_BASE_HZ))
        step = TIME_BASE_HZ // fps
        seg = np.arange(tick, seg_end, step, dtype=np.int64)
        pieces.append(seg)
        tick = int(seg[-1]) + step
    ticks = np.concatenate(pieces)
    keep = rng.random(ticks.shape[0]) >= DROP_PROBABILITY
    keep[0] = True  # the stream starts at 0
    return ticks[keep]


def make_frame_ticks(
    rng: np.random.Generator, params: WorldParams, *, duration_tenths: int
) -> tuple[tuple[int, ...], bool]:
    """Draw the frame times of one video; returns (ticks, is_variable_rate)."""
    choices = params.fps_choices()
    if rng.random() < params.vfr_probability:
        ticks = variable_ticks(rng, fps_choices=choices, duration_tenths=duration_tenths)
        return tuple(int(t) for t in ticks), True
    fps = int(rng.choice(choices))
    ticks = constant_ticks(fps=fps, duration_tenths=duration_tenths)
    return tuple(int(t) for t in ticks), False
