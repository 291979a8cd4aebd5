"""Preallocated key/value cache for the decoder.

One buffer per layer, [B, K, capacity, Dh], written in place; memory grows linearly with the
tokens kept and never by concatenation. Layers write their new keys at ``length`` during a
forward, and the model calls ``advance`` once after the last layer, so all layers of a pass see
the same offset. ``truncate`` and ``clone`` let a caller keep a prompt prefix and reuse it for
several continuations.

Shapes: B batch, K kv heads, Dh head dim, L new tokens.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every decoder layer for a batch of sequences."""

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        num_kv_heads: int,
        head_dim: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity={capacity}: expected a positive number of tokens")
        shape = (batch_size, num_kv_heads, capacity, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def batch_size(self) -> int:
        return self.keys[0].shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def reserve(self, total_tokens: int) -> None:
        """Make room for ``total_tokens`` (grows by at least doubling to stay amortised O(1))."""
        if total_tokens <= self.capacity:
            return
        new_capacity = max(total_tokens, 2 * self.capacity)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                grown = old.new_empty((*old.shape[:2], new_capacity, old.shape[3]))
                grown[:, :, : self.length] = old[:, :, : self.length]
                store[i] = grown

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this pass's keys/values [B, K, L, Dh] for ``layer``; return all keys/values so far."""
        end = self.length + k.shape[2]
        assert end <= self.capacity, "reserve() must be called before the forward pass"
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, new_tokens: int) -> None:
        """Commit the tokens written by the pass that just finished."""
        self.length += new_tokens

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` tokens."""
        if not 0 <= length <= self.length:
            raise ValueError(f"length={length}: expected 0..{self.length}")
        self.length = length

    def clone(self, *, extra_capacity: int = 0, length: int | None = None) -> KVCache:
        """An independent copy of the first ``length`` (default: all kept) tokens, with room
        for ``extra_capacity`` more.

        Raises:
            ValueError: ``length`` is beyond the written tokens.
        """
        length = self.length if length is None else length
        if not 0 <= length <= self.length:
            raise ValueError(f"length={length}: expected 0..{self.length}")
        copy = KVCache.__new__(KVCache)
        capacity = max(length + extra_capacity, 1)
        copy.keys = [_copy_prefix(t, length, capacity) for t in self.keys]
        copy.values = [_copy_prefix(t, length, capacity) for t in self.values]
        copy.length = length
        return copy

    def __repr__(self) -> str:
        k = self.keys[0]
        return (
            f"KVCache(layers={len(self.keys)}, batch={k.shape[0]}, kv_heads={k.shape[1]}, "
            f"length={self.length}, capacity={k.shape[2]}, dtype={k.dtype})"
        )


def _copy_prefix(t: torch.Tensor, length: int, capacity: int) -> torch.Tensor:
    """[B, K, capacity, Dh] holding the first ``length`` tokens of ``t``."""
    out = t.new_empty((*t.shape[:2], capacity, t.shape[3]))
    out[:, :, :length] = t[:, :, :length]
    return out
