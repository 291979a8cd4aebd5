"""Rotary position tables: interleaved MRoPE for the decoder, axial 2D rope for the ViT.

Pure functions of tensors. Unusual here: the decoder's frequency channels are assigned to the
t/h/w axes *interleaved* (T,H,W,T,H,W,...; the tail is T), not in contiguous sections; for text
tokens t == h == w, so this is ordinary 1D rope. Tables are computed in float32 whatever the
model dtype, as the reference does, and cast at the end.

Shapes: B batch, L tokens, Dh head dim, N vision patches.
"""

from __future__ import annotations

import math

import torch

from .config import RopeConfig


def text_inv_freq(rope: RopeConfig, head_dim: int, max_position_embeddings: int) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [Dh/2] and the attention scaling applied to cos/sin.

    ``default``: ``1/theta^(2j/Dh)``. ``yarn``: frequencies blended between interpolation and
    extrapolation by a linear ramp over the correction range, and cos/sin scaled by
    ``0.1*ln(factor)+1`` unless ``attention_factor`` is given.
    """
    pos_freqs = rope.theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    inv_freq = 1.0 / pos_freqs
    if rope.rope_type == "default":
        return inv_freq, 1.0
    original = rope.original_max_position_embeddings or max_position_embeddings
    low, high = _yarn_correction_range(rope.beta_fast, rope.beta_slow, head_dim, rope.theta, original)
    extrapolation_weight = 1.0 - _linear_ramp(low, high, head_dim // 2)
    interpolated = 1.0 / (rope.factor * pos_freqs)
    inv_freq = interpolated * (1 - extrapolation_weight) + inv_freq * extrapolation_weight
    scaling = rope.attention_factor
    if scaling is None:
        scaling = 0.1 * math.log(rope.factor) + 1.0
    return inv_freq, float(scaling)


def _yarn_correction_range(
    beta_fast: float, beta_slow: float, dim: int, theta: float, original_max: int
) -> tuple[float, float]:
    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(theta))

    low = math.floor(correction_dim(beta_fast))
    high = math.ceil(correction_dim(beta_slow))
    return max(low, 0), min(high, dim - 1)


def _linear_ramp(low: float, high: float, dim: int) -> torch.Tensor:
    if low == high:
        high += 0.001  # avoid a division by zero, as the reference does
    ramp = (torch.arange(dim, dtype=torch.float32) - low) / (high - low)
    return ramp.clamp(0, 1)


def mrope_axis_of_frequency(num_freqs: int, mrope_section: tuple[int, int, int]) -> torch.Tensor:
    """Axis (0=t, 1=h, 2=w) that drives each of the ``num_freqs`` frequencies (interleaved)."""
    j = torch.arange(num_freqs)
    axis = torch.zeros(num_freqs, dtype=torch.long)
    _, sec_h, sec_w = mrope_section
    axis[(j % 3 == 1) & (j < 3 * sec_h)] = 1
    axis[(j % 3 == 2) & (j < 3 * sec_w)] = 2
    return axis


def mrope_cos_sin(
    position_ids: torch.Tensor,
    inv_freq: torch.Tensor,
    mrope_section: tuple[int, int, int],
    *,
    attention_scaling: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [B, L, Dh] for 3-axis position ids [3, B, L] (t, h, w)."""
    axis = mrope_axis_of_frequency(inv_freq.numel(), mrope_section).to(position_ids.device)
    # Pick, per frequency, the position of the axis that drives it: [B, L, Dh/2].
    positions = position_ids.permute(1, 2, 0).to(torch.float32)[..., axis]
    angles = positions * inv_freq.to(device=position_ids.device, dtype=torch.float32)
    emb = torch.cat((angles, angles), dim=-1)
    cos = emb.cos() * attention_scaling
    sin = emb.sin() * attention_scaling
    return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rope: channel j pairs with j + Dh/2. ``cos``/``sin`` broadcast against ``x``.

    ``x * cos + cat(-x2, x1) * sin`` (x1, x2 the halves), written as one product and two
    multiply-adds into its halves: one output tensor instead of four temporaries (about 2x
    faster on CPU, where a prompt's rope is memory-bound).
    """
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


def vision_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """ViT axial rope frequencies [head_dim/4]: each of h and w gets a quarter of the channels."""
    spatial_dim = head_dim // 2
    return 1.0 / (theta ** (torch.arange(0, spatial_dim, 2, dtype=torch.float32) / spatial_dim))


def vision_cos_sin(patch_rowcol: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [N, head_dim] in float32 for patch (row, col) ids [N, 2].

    Channel layout ``[h-freqs | w-freqs | h-freqs | w-freqs]``.
    """
    angles = patch_rowcol[..., None].to(torch.float32) * inv_freq.to(patch_rowcol.device)  # [N, 2, F]
    half = angles.flatten(1)  # [N, 2F] = [h-freqs | w-freqs]
    emb = torch.cat((half, half), dim=-1)
    return emb.cos(), emb.sin()
