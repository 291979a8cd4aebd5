"""Vision tower: patch embedding, resampled position table, 2D rope ViT, merger and DeepStack.

Unusual here: patches arrive in *block-major* order (every m x m = 4 consecutive rows form one
future LLM token), so position ids and the resampled position table are generated in that
order too. The learned 48x48 position table is resampled bilinearly (align_corners) to each
frame grid. Attention never crosses an image or frame pair. DeepStack mergers (norm *after*
the 2x2 shuffle, width 4C) tap the outputs of chosen blocks; the main merger (norm before,
width C) takes the last block. There is no final LayerNorm.

Shapes: N patches, C vision width, M merged tokens (N/4), D text hidden, P = 3*tp*p*p.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .attention import vision_attention
from .config import VisionConfig
from .decoder import add_residual
from .image_ops import PixelNorm
from .rope import apply_rotary, vision_cos_sin, vision_inv_freq


def patch_rowcol(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(row, col) [N, 2] of every patch inside its frame, block-major, repeated per temporal patch."""
    out = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h).view(h // merge, merge, 1, 1).expand(-1, -1, w // merge, merge)
        cols = torch.arange(w).view(1, 1, w // merge, merge).expand(h // merge, merge, -1, -1)
        # [h/m, m, w/m, m] -> block-major [h/m, w/m, m, m]
        rc = torch.stack((rows.transpose(1, 2).flatten(), cols.transpose(1, 2).flatten()), dim=-1)
        out.append(rc.repeat(t, 1))
    return torch.cat(out)


def cu_seqlens(grid_thw: torch.Tensor) -> torch.Tensor:
    """Block boundaries [n_blocks + 1] (int32): one block per image or frame pair."""
    lengths = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0])
    return F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))


def pos_embed_taps(h: int, w: int, side: int, merge: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (align_corners) taps of an h x w frame's patches (block-major) into the side x
    side table: indices [h*w, 4], weights [h*w, 4]."""
    ys = torch.arange(h, dtype=torch.float32) * (side - 1) / max(h - 1, 1)
    xs = torch.arange(w, dtype=torch.float32) * (side - 1) / max(w - 1, 1)
    y0, x0 = ys.floor(), xs.floor()
    dy, dx = (ys - y0)[:, None], (xs - x0)[None, :]
    y0, x0 = y0.long()[:, None], x0.long()[None, :]
    y1, x1 = (y0 + 1).clamp(max=side - 1), (x0 + 1).clamp(max=side - 1)
    taps = torch.stack((y0 * side + x0, y0 * side + x1, y1 * side + x0, y1 * side + x1), -1)
    weights = torch.stack(((1 - dy) * (1 - dx), (1 - dy) * dx, dy * (1 - dx), dy * dx), -1)
    order = _block_major(h, w, merge)
    return taps.reshape(h * w, 4)[order], weights.reshape(h * w, 4)[order]


def _block_major(h: int, w: int, merge: int) -> torch.Tensor:
    """Raster indices of an h x w grid listed in block-major order."""
    raster = torch.arange(h * w).view(h // merge, merge, w // merge, merge)
    return raster.transpose(1, 2).flatten()


def gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    """``F.gelu``, in place when autograd does not record ``x`` (inference, a frozen tower;
    ``x`` is a linear layer's fresh output): no [N, intermediate] temporary per block."""
    if x.requires_grad:
        return F.gelu(x, approximate=approximate)
    return torch.ops.aten.gelu_(x, approximate=approximate)


class PatchEmbed(nn.Module):
    """Conv3d with kernel == stride == one patch: a matmul over flattened patch rows."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel, stride=kernel, bias=True)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        w = self.proj.weight
        return F.linear(pixels.to(w.dtype), w.reshape(w.shape[0], -1), self.proj.bias)  # [N, C]


class VisionAttention(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cu: torch.Tensor,
                implementation: Literal["sdpa", "flash"]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, -1).unbind(1)  # each [N, heads, Dh]
        cos, sin = rope[0][:, None], rope[1][:, None]
        q = apply_rotary(q.float(), cos, sin).to(x.dtype)
        k = apply_rotary(k.float(), cos, sin).to(x.dtype)
        out = vision_attention(q, k, v, cu, implementation=implementation)
        return self.proj(out.reshape(n, -1))


class VisionMLP(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.linear_fc2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)
        self.approximate = "tanh" if config.hidden_act == "gelu_pytorch_tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(gelu(self.linear_fc1(x), self.approximate))


class VisionBlock(nn.Module):
    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=1e-6)
        self.attn = VisionAttention(config)
        self.mlp = VisionMLP(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cu: torch.Tensor,
                implementation: Literal["sdpa", "flash"]) -> torch.Tensor:
        x = add_residual(self.attn(self.norm1(x), rope, cu, implementation), x)
        return add_residual(self.mlp(self.norm2(x)), x)


class PatchMerger(nn.Module):
    """2x2 patches -> one token of width D. ``postshuffle_norm``: norm the 4C vector (DeepStack)."""

    def __init__(self, config: VisionConfig, *, postshuffle_norm: bool) -> None:
        super().__init__()
        self.merged = config.hidden_size * config.spatial_merge_size**2
        self.postshuffle_norm = postshuffle_norm
        self.norm = nn.LayerNorm(self.merged if postshuffle_norm else config.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.merged, self.merged, bias=True)
        self.linear_fc2 = nn.Linear(self.merged, config.out_hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.postshuffle_norm:
            x = self.norm(x.view(-1, self.merged))
        else:
            x = self.norm(x).view(-1, self.merged)  # [N, C] -> [M, 4C]
        return self.linear_fc2(gelu(self.linear_fc1(x), "none"))


@dataclass
class VisualFeatures:
    """Merged visual tokens [M, D] and one DeepStack feature [M, D] per tapped block."""

    tokens: torch.Tensor
    deepstack: list[torch.Tensor]


class VisionModel(nn.Module):
    """``model.visual``."""

    def __init__(self, config: VisionConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.pos_embed = nn.Embedding(config.num_position_embeddings, config.hidden_size)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.merger = PatchMerger(config, postshuffle_norm=False)
        self.deepstack_merger_list = nn.ModuleList(
            PatchMerger(config, postshuffle_norm=True) for _ in config.deepstack_visual_indexes
        )
        self.attn_implementation: Literal["sdpa", "flash"] = "sdpa"
        # How uint8 patch rows are normalised (the checkpoint's preprocessor settings); float
        # rows arrive normalised already.
        self.pixel_norm = PixelNorm()

    def position_embeddings(self, h: int, w: int) -> torch.Tensor:
        """The position table resampled to the patches of one h x w frame [h*w, C] (block-major;
        every frame pair of a grid shares it)."""
        side = math.isqrt(self.config.num_position_embeddings)
        taps, weights = pos_embed_taps(h, w, side, self.config.spatial_merge_size)
        table = self.pos_embed.weight
        return (table[taps.to(table.device)] * weights.to(table.device)[..., None]).sum(1)

    def _add_position_embeddings(self, x: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """x [N, C] plus each patch's position embedding, resampled once per grid row (not per
        frame pair) and added in place."""
        start = 0
        for t, h, w in grid_thw.tolist():
            stop = start + t * h * w
            x[start:stop].view(t, h * w, -1).add_(self.position_embeddings(h, w).to(x.dtype))
            start = stop
        return x

    def forward(
        self, pixels: torch.Tensor, grid_thw: torch.Tensor, *, chunk_pairs: int | None = None
    ) -> VisualFeatures:
        """pixels [N, P] in the processor's layout, grid_thw [n_items, 3] -> merged features.

        uint8 pixels (the processor's ``video_pixel_dtype="uint8"``) are normalised with
        ``pixel_norm`` one chunk at a time, so the float rows are never held whole.

        Args:
            chunk_pairs: run at most this many images / frame pairs per pass (exact, since
                attention never crosses them), so activation memory is bounded by the chunk.
        """
        if chunk_pairs is None:
            return self._encode(pixels, grid_thw)
        parts = list(self.stream(pixels, grid_thw, chunk_pairs=chunk_pairs))
        return VisualFeatures(
            tokens=torch.cat([p.tokens for p in parts]),
            deepstack=[torch.cat(level) for level in zip(*(p.deepstack for p in parts), strict=True)],
        )

    def stream(
        self, pixels: torch.Tensor, grid_thw: torch.Tensor, *, chunk_pairs: int
    ) -> Iterator[VisualFeatures]:
        """The features of ``forward``, yielded in order for ``chunk_pairs`` frame pairs at a time."""
        for start, end, grid in frame_pair_chunks(grid_thw.cpu(), chunk_pairs):
            yield self._encode(pixels[start:end], grid)

    def _encode(self, pixels: torch.Tensor, grid_thw: torch.Tensor) -> VisualFeatures:
        cfg = self.config
        grid_cpu = grid_thw.cpu()
        if pixels.dtype == torch.uint8:
            pixels = self.pixel_norm(pixels)
        x = self.patch_embed(pixels)
        x = self._add_position_embeddings(x, grid_cpu)
        rowcol = patch_rowcol(grid_cpu, cfg.spatial_merge_size).to(x.device)
        rope = vision_cos_sin(rowcol, vision_inv_freq(cfg.head_dim, cfg.rope_theta))
        cu = cu_seqlens(grid_cpu)
        deepstack = []
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cu, self.attn_implementation)
            if i in cfg.deepstack_visual_indexes:
                merger = self.deepstack_merger_list[cfg.deepstack_visual_indexes.index(i)]
                deepstack.append(merger(x))
        return VisualFeatures(tokens=self.merger(x), deepstack=deepstack)


def frame_pair_chunks(grid_thw: torch.Tensor, chunk_pairs: int) -> list[tuple[int, int, torch.Tensor]]:
    """Split grids [n, 3] into runs of at most ``chunk_pairs`` images / frame pairs.

    Returns (first patch, end patch, sub-grid [m, 3]) per chunk; a video's temporal extent is
    split between chunks, since every frame pair is its own attention block.

    Raises:
        ValueError: ``chunk_pairs`` is not positive.
    """
    if chunk_pairs <= 0:
        raise ValueError(f"chunk_pairs={chunk_pairs}: expected a positive number of frame pairs")
    pairs = [(h, w) for t, h, w in grid_thw.tolist() for _ in range(t)]
    chunks, start = [], 0
    for first in range(0, len(pairs), chunk_pairs):
        rows: list[list[int]] = []
        for h, w in pairs[first : first + chunk_pairs]:
            if rows and rows[-1][1:] == [h, w]:
                rows[-1][0] += 1
            else:
                rows.append([1, h, w])
        end = start + sum(t * h * w for t, h, w in rows)
        chunks.append((start, end, torch.tensor(rows, dtype=grid_thw.dtype)))
        start = end
    return chunks
