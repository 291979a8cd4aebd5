"""An LRU of prompt-prefix KV caches, so a follow-up question prefills only its own tokens.

Unusual here: token ids alone do not identify a prompt's keys and values, because every video
of the same grid has the same placeholder ids. An entry is therefore keyed by a hash of the
prompt's visual content (patches and grids) *and* its token ids; a lookup returns the longest
prefix shared with a kept prompt of the same visual content. Keys/values of a prefix depend
only on the tokens (and pixels) up to it, so reusing them is exact up to float rounding.

Entries keep the generation's own cache object (decoding only writes after the prompt), so
storing costs no copy; a lookup copies the shared prefix into a fresh cache.

Shapes: L prompt tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from .kv_cache import KVCache


@dataclass
class PrefixEntry:
    """One kept prompt: its visual content key, token ids [L] and cache (first L tokens valid)."""

    visual_key: str
    input_ids: torch.Tensor
    cache: KVCache


def common_prefix_length(a: torch.Tensor, b: torch.Tensor) -> int:
    """Number of leading equal ids of two 1D id tensors."""
    n = min(a.shape[0], b.shape[0])
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0, 0]) if differ.numel() else n


class PrefixCache:
    """Least-recently-used prompt KV caches (batch size 1), bounded by total cache bytes."""

    def __init__(self, *, max_bytes: int = 1 << 30, min_tokens: int = 16) -> None:
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._items: OrderedDict[int, PrefixEntry] = OrderedDict()
        self._next_id = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(e.cache.nbytes() for e in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def lookup(self, visual_key: str, input_ids: torch.Tensor, *, extra_capacity: int) -> KVCache | None:
        """A fresh cache holding the longest kept prefix of ``input_ids`` [L], room for the rest.

        At least one prompt token is always left to run (its logits start the answer).
        """
        best, best_len = None, 0
        ids = input_ids.cpu()
        for item_id, entry in self._items.items():
            if entry.visual_key != visual_key:
                continue
            shared = min(common_prefix_length(entry.input_ids, ids), ids.shape[0] - 1)
            if shared > best_len:
                best, best_len = item_id, shared
        if best is None or best_len < self.min_tokens:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(best)
        entry = self._items[best]
        return entry.cache.clone(extra_capacity=ids.shape[0] - best_len + extra_capacity, length=best_len)

    def store(self, visual_key: str, input_ids: torch.Tensor, cache: KVCache) -> None:
        """Keep ``cache`` (its first ``len(input_ids)`` tokens) for later prompts; evict LRU."""
        if cache.nbytes() > self.max_bytes or input_ids.shape[0] < self.min_tokens:
            return
        ids = input_ids.cpu()
        for item_id, entry in list(self._items.items()):
            if entry.visual_key == visual_key and torch.equal(entry.input_ids, ids):
                del self._items[item_id]
        self._items[self._next_id] = PrefixEntry(visual_key, ids, cache)
        self._next_id += 1
        while self.nbytes > self.max_bytes:
            self._items.popitem(last=False)
