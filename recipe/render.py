"""Render a scene to uint8 frames ``[T, H, W, 3]`` at arbitrary seconds, vectorised over time.

How it stays fast: each object is rasterised only inside a fixed ``S x S`` crop around its
centre (``S`` from its largest radius in the batch), for all ``T`` frames at once, and pasted
into a canvas padded by ``S`` on every side with one fancy-indexed ``np.where``; so objects
entering from outside the frame need no clipping logic. Text glyphs are drawn once per
(text, size) with Pillow and cached. Shapes are half-plane / polar tests on crop coordinates.
Objects are drawn in id order; text is drawn last, on a dark box at the bottom.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from recipe.scene import (
    TEXT_BAND_TOP,
    ObjectState,
    ObjectTrack,
    Scene,
    background_rgb,
    object_state,
)

SQRT3 = float(np.sqrt(3.0))
TEXT_BOX_RGB = (16, 16, 16)
TEXT_RGB = (255, 255, 255)


def _star_line() -> tuple[np.ndarray, float]:
    """Normal and offset of the star edge from outer vertex (angle 0) to inner (36 deg)."""
    outer, inner = np.array([1.0, 0.0]), 0.45 * np.array([np.cos(np.pi / 5), np.sin(np.pi / 5)])
    direction = inner - outer
    normal = np.array([direction[1], -direction[0]])
    normal /= np.linalg.norm(normal)
    return normal, float(normal @ outer)


STAR_NORMAL, STAR_OFFSET = _star_line()


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Boolean mask of ``shape`` with bounding radius ``r``; dx, dy, r broadcast (y points down)."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(ax, ay) <= 0.8 * r
    if shape == "diamond":
        return ax + ay <= r
    if shape == "triangle":  # apex up, centroid at the centre
        return (dy <= 0.5 * r) & (SQRT3 * ax - dy <= r)
    if shape == "hexagon":
        return (ay <= 0.5 * SQRT3 * r) & (SQRT3 * ax + ay <= SQRT3 * r)
    if shape == "cross":
        arm = 0.33 * r
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if shape == "star":
        return _star_mask(dx, dy, r)
    raise ValueError(f"shape={shape!r}: unknown shape")


def _star_mask(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    # Fold the angle into the first half-sector (outer vertex at 0, inner at 36 degrees), then
    # test against that one edge: a five-pointed star with its top point up.
    angle = np.arctan2(dx, -dy)
    sector = 2 * np.pi / 5
    folded = np.abs(np.mod(angle, sector) - sector / 2)
    folded = sector / 2 - folded
    rho = np.sqrt(dx * dx + dy * dy)
    proj = rho * (STAR_NORMAL[0] * np.cos(folded) + STAR_NORMAL[1] * np.sin(folded))
    return proj <= STAR_OFFSET * r


def _paste_object(
    canvas: np.ndarray, shape: str, state: ObjectState, *, size_px: int, pad: int
) -> None:
    """Draw one object into the padded canvas ``[T, H+2p, W+2p, 3]`` in place."""
    live = state.visible & (state.radius > 0)
    if not live.any():
        return
    frames = np.nonzero(live)[0]
    radius_px = state.radius[frames] * size_px
    cx, cy = state.x[frames] * size_px, state.y[frames] * size_px
    side = int(np.ceil(2 * radius_px.max())) + 3
    x0 = np.clip(np.floor(cx - side / 2).astype(np.int64), -pad, size_px + pad - side)
    y0 = np.clip(np.floor(cy - side / 2).astype(np.int64), -pad, size_px + pad - side)
    offsets = np.arange(side, dtype=np.float64) + 0.5
    dx = (x0[:, None] + offsets[None, :]) - cx[:, None]  # [F, S]
    dy = (y0[:, None] + offsets[None, :]) - cy[:, None]  # [F, S]
    mask = shape_mask(shape, dx[:, None, :], dy[:, :, None], radius_px[:, None, None])  # [F,S,S]
    rows = (y0 + pad)[:, None, None] + np.arange(side)[None, :, None]
    cols = (x0 + pad)[:, None, None] + np.arange(side)[None, None, :]
    region = canvas[frames[:, None, None], rows, cols]  # [F, S, S, 3]
    colour = np.rint(state.rgb[frames]).astype(np.uint8)[:, None, None, :]
    canvas[frames[:, None, None], rows, cols] = np.where(mask[..., None], colour, region)


@lru_cache(maxsize=256)
def text_glyph(text: str, *, width_px: int, height_px: int) -> np.ndarray:
    """Boolean ``[height, width]`` mask of ``text`` centred in a box; drawn once and cached."""
    font = ImageFont.load_default(size=max(8, int(height_px * 0.7)))
    image = Image.new("L", (width_px, height_px), 0)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (width_px - (right - left)) / 2 - left
    y = (height_px - (bottom - top)) / 2 - top
    draw.text((x, y), text, fill=255, font=font)
    mask = np.asarray(image) >= 128
    mask.flags.writeable = False
    return mask


def _paste_texts(frames: np.ndarray, scene: Scene, seconds: np.ndarray, *, size_px: int) -> None:
    tenths = seconds * 10
    top = int(round(TEXT_BAND_TOP * size_px))
    height = size_px - top
    for span in scene.texts:
        shown = (tenths > span.start_tenths) & (tenths < span.end_tenths)
        if not shown.any():
            continue
        glyph = text_glyph(span.text, width_px=size_px, height_px=height)
        cols = np.nonzero(glyph.any(axis=0))[0]
        left, right = max(int(cols[0]) - 3, 0), min(int(cols[-1]) + 4, size_px)
        band = frames[shown, top:, left:right]  # copy [F, h, w, 3]
        band[:] = TEXT_BOX_RGB
        band[:, glyph[:, left:right]] = TEXT_RGB
        frames[shown, top:, left:right] = band


def render_frames(scene: Scene, seconds: np.ndarray, *, size_px: int | None = None) -> np.ndarray:
    """Render ``scene`` at the given times.

    Args:
        scene: the scene to draw.
        seconds: float ``[T]`` times in seconds (any order, any spacing).
        size_px: frame side; defaults to ``scene.params.size_px``.

    Returns:
        uint8 ``[T, size_px, size_px, 3]`` RGB frames.

    Raises:
        ValueError: if ``seconds`` is not one-dimensional or ``size_px`` is too small.
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    if seconds.ndim != 1:
        raise ValueError(f"seconds has shape {seconds.shape}: expected [T]")
    size_px = scene.params.size_px if size_px is None else size_px
    if size_px < 16:
        raise ValueError(f"size_px={size_px}: expected >= 16")
    pad = int(np.ceil(0.3 * size_px)) + 4  # > the largest object diameter
    count = seconds.shape[0]
    canvas = np.empty((count, size_px + 2 * pad, size_px + 2 * pad, 3), dtype=np.uint8)
    canvas[:] = np.rint(background_rgb(scene.background, seconds)).astype(np.uint8)[:, None, None]
    for track in scene.objects:
        _paste_object(canvas, track.shape, object_state(track, seconds), size_px=size_px, pad=pad)
    frames = np.ascontiguousarray(canvas[:, pad : pad + size_px, pad : pad + size_px])
    _paste_texts(frames, scene, seconds, size_px=size_px)
    return frames


def object_pixel_count(track: ObjectTrack, seconds: np.ndarray, *, size_px: int) -> np.ndarray:
    """int ``[T]``: how many in-frame pixels the object covers (ignoring occlusion)."""
    state = object_state(track, np.asarray(seconds, dtype=np.float64))
    pad = int(np.ceil(0.3 * size_px)) + 4
    canvas = np.zeros((len(seconds), size_px + 2 * pad, size_px + 2 * pad, 3), dtype=np.uint8)
    marker = ObjectState(
        state.x, state.y, state.radius, np.full_like(state.rgb, 255), state.visible
    )
    _paste_object(canvas, track.shape, marker, size_px=size_px, pad=pad)
    inner = canvas[:, pad : pad + size_px, pad : pad + size_px, 0]
    return (inner > 0).sum(axis=(1, 2))
