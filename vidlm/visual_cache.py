"""An in-memory LRU of vision-tower outputs, keyed by the exact pixels and grid.

A follow-up question about the same video (same frames, same processing) must not run the
vision tower again. Keys are a hash of the patch tensor's bytes plus its grid, so a hit is
exact by construction; hashing costs about a millisecond per megabyte, far below the tower.

Behind the memory LRU an optional ``VisualDiskCache`` keeps features across processes: one
safetensors file per key (written to a temp file and renamed, so a crash never leaves half a
file), evicted least-recently-used (by file access time) past a byte bound. The caller names
the key; ``VisualCache`` uses the model id plus the patch hash, and the patches are a function
of the video's content and its sampling plan, so the key covers (content, plan, model).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .vision import VisualFeatures

log = logging.getLogger(__name__)
Encoder = Callable[[torch.Tensor, torch.Tensor], VisualFeatures]


def features_key(pixels: torch.Tensor, grid_thw: torch.Tensor) -> str:
    """A content key for patches [N, P] and their grids [n, 3]."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(str((tuple(pixels.shape), str(pixels.dtype), grid_thw.tolist())).encode())
    digest.update(pixels.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def features_nbytes(features: VisualFeatures) -> int:
    return sum(t.numel() * t.element_size() for t in (features.tokens, *features.deepstack))


class VisualDiskCache:
    """Visual tokens + DeepStack features on disk, one safetensors file per caller-given key.

    Args:
        folder: where the files live (created on first write).
        max_bytes: total size kept; the least recently used files are removed past it.
    """

    def __init__(self, folder: str | os.PathLike[str], *, max_bytes: int = 8 << 30) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    def path(self, key: str) -> Path:
        name = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
        return self.folder / f"{name}.safetensors"

    def get(self, key: str, device: torch.device | str = "cpu") -> VisualFeatures | None:
        """The stored features of ``key``, or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        tensors = load_file(path, device=str(device))
        os.utime(path)  # mark as recently used for eviction
        levels = sum(1 for name in tensors if name.startswith("deepstack."))
        return VisualFeatures(tokens=tensors["tokens"], deepstack=[tensors[f"deepstack.{i}"] for i in range(levels)])

    def put(self, key: str, features: VisualFeatures) -> None:
        """Store ``features`` under ``key`` atomically, then evict past ``max_bytes``."""
        if features_nbytes(features) > self.max_bytes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # Own copies: safetensors refuses tensors that share storage (e.g. views of one buffer).
        tensors = {"tokens": features.tokens.detach().cpu().clone()}
        tensors |= {f"deepstack.{i}": t.detach().cpu().clone() for i, t in enumerate(features.deepstack)}
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"key": key})
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.evict()

    def evict(self) -> None:
        """Remove least recently used files until the total is within ``max_bytes``."""
        files = sorted(self.folder.glob("*.safetensors"), key=lambda f: f.stat().st_mtime)
        total = sum(f.stat().st_size for f in files)
        for f in files:
            if total <= self.max_bytes:
                break
            total -= f.stat().st_size
            f.unlink(missing_ok=True)
            log.debug("visual disk cache: evicted %s", f.name)


class VisualCache:
    """Least-recently-used store of ``VisualFeatures`` bounded by total tensor bytes.

    Args:
        max_bytes: memory bound of the in-process LRU.
        disk: an optional on-disk layer consulted on a memory miss.
        namespace: prefixed to disk keys (the model id), so models never share entries.
    """

    def __init__(
        self, *, max_bytes: int = 512 * 2**20, disk: VisualDiskCache | None = None, namespace: str = ""
    ) -> None:
        self.max_bytes = max_bytes
        self.disk = disk
        self.namespace = namespace
        self._items: OrderedDict[str, tuple[VisualFeatures, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def get_or_compute(self, pixels: torch.Tensor, grid_thw: torch.Tensor, compute: Encoder) -> VisualFeatures:
        """The cached features for these patches, or ``compute(pixels, grid_thw)`` stored."""
        key = features_key(pixels, grid_thw)
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]
        self.misses += 1
        disk_key = f"{self.namespace}/{key}"
        features = self.disk.get(disk_key, pixels.device) if self.disk is not None else None
        if features is not None:
            self.disk_hits += 1
        else:
            features = compute(pixels, grid_thw)
            if self.disk is not None:
                self.disk.put(disk_key, features)
        size = features_nbytes(features)
        if size <= self.max_bytes:
            self._items[key] = (features, size)
            while self.nbytes > self.max_bytes:
                self._items.popitem(last=False)
        return features
