"""Display orientation: rotation and mirroring from FFmpeg's display matrix.

The matrix maps coded pixel (x, y) to display (x', y') = (a*x + c*y, b*x + d*y) up to a
translation (FFmpeg's `AV_FRAME_DATA_DISPLAYMATRIX`, 16.16 fixed point, row-major
`[a b u; c d v; x y w]`). Phones write the 8 axis-aligned cases; anything else is treated as
upright with a warning, like most players.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Orientation:
    """How a player turns the coded picture upright.

    `transpose` swaps the axes first; then `flip_rows` / `flip_cols` reverse them.
    `rotation` is the clockwise rotation in degrees and `mirrored` whether a flip remains.
    """

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0
    mirrored: bool = False

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) as displayed, from the coded size."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Turn a coded `[H, W, C]` image upright (returns a view when possible)."""
        if self.transpose:
            image = image.transpose(1, 0, 2)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return image

    def apply_chw(self, image: np.ndarray) -> np.ndarray:
        """Turn a coded `[C, H, W]` image upright (a view)."""
        if self.transpose:
            image = image.transpose(0, 2, 1)
        if self.flip_rows:
            image = image[:, ::-1]
        if self.flip_cols:
            image = image[:, :, ::-1]
        return image

    def coded_view_chw(self, upright: np.ndarray) -> np.ndarray:
        """A writable view of an upright `[C, H, W]` array in coded orientation (the inverse
        of `apply_chw`), so the decoder can write coded pixels straight into their place."""
        if self.flip_cols:
            upright = upright[:, :, ::-1]
        if self.flip_rows:
            upright = upright[:, ::-1]
        if self.transpose:
            upright = upright.transpose(0, 2, 1)
        return upright


UPRIGHT = Orientation()


def orientation_from_matrix(matrix: np.ndarray | None) -> Orientation:
    """Parse a 9-element int32 display matrix (None -> upright)."""
    if matrix is None or len(matrix) != 9:
        return UPRIGHT
    a, b, c, d = (float(v) / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    sign = [int(round(v)) for v in (a, b, c, d)]
    if not all(
        abs(v - s) < 1e-3 and s in (-1, 0, 1) for v, s in zip((a, b, c, d), sign, strict=True)
    ):
        log.warning("non axis-aligned display matrix %s ignored", list(matrix))
        return UPRIGHT
    ia, ib, ic, id_ = sign
    if ib == 0 and ic == 0 and ia != 0 and id_ != 0:
        return _make(ia, ib, ic, id_, transpose=False, flip_rows=id_ < 0, flip_cols=ia < 0)
    if ia == 0 and id_ == 0 and ib != 0 and ic != 0:
        # x' = c*y, y' = b*x: display rows come from coded columns.
        return _make(ia, ib, ic, id_, transpose=True, flip_rows=ib < 0, flip_cols=ic < 0)
    log.warning("degenerate display matrix %s ignored", list(matrix))
    return UPRIGHT


def _make(
    a: int, b: int, c: int, d: int, *, transpose: bool, flip_rows: bool, flip_cols: bool
) -> Orientation:
    """Name the transform as a clockwise rotation followed by an optional horizontal mirror."""
    mirrored = a * d - b * c < 0
    # Coded "right" (1, 0) is displayed along (a, b); undo the mirror to read the rotation.
    rx, ry = (-a, b) if mirrored else (a, b)
    rotation = int(round(math.degrees(math.atan2(ry, rx)))) % 360
    return Orientation(transpose, flip_rows, flip_cols, rotation, mirrored)
