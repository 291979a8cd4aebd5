"""An in-memory LRU of vision-tower outputs, keyed by the exact pixels and grid.

A follow-up question about the same video (same frames, same processing) must not run the
vision tower again. Keys are a hash of the patch tensor's bytes plus its grid, so a hit is
exact by construction; hashing costs about a millisecond per megabyte, far below the tower.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from .vision import VisualFeatures


def features_key(pixels: torch.Tensor, grid_thw: torch.Tensor) -> str:
    """A content key for patches [N, P] and their grids [n, 3]."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(str((tuple(pixels.shape), str(pixels.dtype), grid_thw.tolist())).encode())
    digest.update(pixels.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


class VisualCache:
    """Least-recently-used store of ``VisualFeatures`` bounded by total tensor bytes."""

    def __init__(self, *, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[VisualFeatures, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def get_or_compute(self, pixels: torch.Tensor, grid_thw: torch.Tensor, compute) -> VisualFeatures:
        """The cached features for these patches, or ``compute(pixels, grid_thw)`` stored."""
        key = features_key(pixels, grid_thw)
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]
        self.misses += 1
        features = compute(pixels, grid_thw)
        size = sum(t.numel() * t.element_size() for t in (features.tokens, *features.deepstack))
        if size <= self.max_bytes:
            self._items[key] = (features, size)
            while self.nbytes > self.max_bytes:
                self._items.popitem(last=False)
        return features
