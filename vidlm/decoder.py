"""Qwen3 text decoder: RMSNorm, QK-norm GQA attention with MRoPE, SwiGLU or MoE feed-forward.

Unusual here: QK-norm (an RMSNorm over each head's Dh channels, shared across heads) runs
*before* rope; RMSNorm normalises in float32 and casts back *before* multiplying by the weight;
and DeepStack adds visual features from the ViT's intermediate blocks to the visual positions
right after each of the first decoder layers. Dense and MoE layers differ only in ``mlp``,
chosen once from the config.

Shapes: B batch, L new tokens, D hidden, H query heads, K kv heads, Dh head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .attention import causal_attention
from .config import TextConfig
from .kv_cache import KVCache
from .moe import SparseMoeBlock
from .rope import apply_rotary, mrope_cos_sin, text_inv_freq


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(torch.float32)
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


# Products with at most this many rows (decode steps) take the row-block path below.
GEMV_MAX_ROWS = 4


class Linear(nn.Linear):
    """``nn.Linear`` that runs few-row products (decoding) on CPU as a batched GEMV over row blocks.

    PyTorch's CPU matmul with one input row runs on a single thread (~16 GB/s of weights read
    on the 2-core dev box); viewing the weight as blocks of output rows and calling ``bmm``
    spreads them over every thread (~29 GB/s). Decoding is bound by reading the weights, so this
    is most of a decode step. Same arithmetic per output (a dot product over ``in_features``),
    so results agree with ``F.linear`` to float rounding. Prefill, training and CUDA take the
    ordinary path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k = self.weight.shape
        rows = x.numel() // k if k else 0
        if x.device.type != "cpu" or not 0 < rows <= GEMV_MAX_ROWS:
            return F.linear(x, self.weight, self.bias)
        blocks = next((b for b in (16, 8, 4, 2) if n % b == 0 and n // b >= 64), 1)
        if blocks == 1:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, k)
        out = torch.bmm(self.weight.view(blocks, n // blocks, k), flat.t().expand(blocks, k, rows))
        # [blocks, n/blocks, rows] -> [rows, n], laid out row by row as F.linear's output: the
        # permuted view would leave the token dim innermost, which kernels downstream misread
        # (the CPU flash kernel did; bench/RESULTS.md, session 15). A copy of a few rows.
        out = out.permute(2, 0, 1).contiguous().view(*x.shape[:-1], n)
        return out if self.bias is None else out + self.bias


def add_residual(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x + out``, added into ``out`` (a sublayer's fresh output; no new tensor) when both have
    one dtype. Under autocast ``out`` can be bf16 beside a float32 stream, which stays float32."""
    return out.add_(x) if out.dtype == x.dtype else x + out


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        if gate.requires_grad or up.requires_grad:
            return self.down_proj(F.silu(gate) * up)
        # Not recorded by autograd: in place, no [L, intermediate] temporaries (on CPU each big
        # one is fresh pages from the OS); the same values.
        return self.down_proj(F.silu(gate, inplace=True).mul_(up))


@dataclass
class AttentionContext:
    """What every layer of one forward pass shares."""

    cos: torch.Tensor  # [B, L, Dh]
    sin: torch.Tensor  # [B, L, Dh]
    cache: KVCache | None
    key_padding_mask: torch.Tensor | None  # [B, Lk] bool over cache + new tokens
    implementation: Literal["sdpa", "flash"]


class Attention(nn.Module):
    def __init__(self, config: TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        bias = config.attention_bias
        d, dh = config.hidden_size, config.head_dim
        self.q_proj = Linear(d, self.num_heads * dh, bias=bias)
        self.k_proj = Linear(d, self.num_kv_heads * dh, bias=bias)
        self.v_proj = Linear(d, self.num_kv_heads * dh, bias=bias)
        self.o_proj = Linear(self.num_heads * dh, d, bias=bias)
        self.q_norm = RMSNorm(dh, config.rms_norm_eps)
        self.k_norm = RMSNorm(dh, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, queries: int | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, L, D]; with ``queries``, only the last that many positions' outputs
        [B, queries, D] (keys and values of all L still go to the cache)."""
        b, length, _ = x.shape
        kept = length if queries is None else queries
        cos, sin = ctx.cos[:, None], ctx.sin[:, None]
        # [B, L, H*Dh] -> [B, H, L, Dh]
        k = self.k_norm(self.k_proj(x).view(b, length, -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, length, -1, self.head_dim).transpose(1, 2)
        k = apply_rotary(k, cos, sin).to(v.dtype)
        if ctx.cache is not None:
            k, v = ctx.cache.update(self.layer_idx, k, v)
        if kept == 0:
            return x[:, :0]
        xq = x[:, length - kept:]
        q = self.q_norm(self.q_proj(xq).view(b, kept, -1, self.head_dim)).transpose(1, 2)
        # Under autocast (bf16 training) the norms and rope return float32 while v_proj gives
        # bf16; attention takes one dtype. A no-op whenever the model runs in one dtype.
        q = apply_rotary(q, cos[:, :, length - kept:], sin[:, :, length - kept:]).to(v.dtype)
        out = causal_attention(
            q, k, v, key_padding_mask=ctx.key_padding_mask, implementation=ctx.implementation
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, kept, -1))


class DecoderLayer(nn.Module):
    def __init__(self, config: TextConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp: nn.Module = (
            SparseMoeBlock(config)
            if config.is_sparse_layer(layer_idx)
            else MLP(config.hidden_size, config.intermediate_size)
        )
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, keep: int | None = None) -> torch.Tensor:
        """[B, L, D] -> [B, L, D], or only the last ``keep`` positions [B, keep, D]: the layer
        still writes all L keys and values to the cache, but runs its queries, output
        projection and MLP for those positions alone (a prompt's last layer, whose other
        outputs nobody reads)."""
        if keep is None:
            x = add_residual(self.self_attn(self.input_layernorm(x), ctx), x)
        else:
            x = add_residual(self.self_attn(self.input_layernorm(x), ctx, queries=keep), x[:, x.shape[1] - keep:])
            if keep == 0:
                return x  # the keys and values are written; nothing else is read
        return add_residual(self.mlp(self.post_attention_layernorm(x)), x)


@dataclass
class DeepStack:
    """Visual features to add after the first decoder layers.

    ``mask`` [B, L] marks the visual positions of this pass; ``features[k]`` [n_visual, D] is
    added there after layer k, in sequence order.
    """

    mask: torch.Tensor
    features: list[torch.Tensor]


class TextModel(nn.Module):
    """Embeddings, decoder layers and the final norm (``model.language_model``)."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn_implementation: Literal["sdpa", "flash"] = "sdpa"

    def rope_tables(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin [B, L, Dh] for positions [3, B, L]."""
        cfg = self.config
        inv_freq, scaling = text_inv_freq(cfg.rope, cfg.head_dim, cfg.max_position_embeddings)
        return mrope_cos_sin(
            position_ids, inv_freq, cfg.rope.mrope_section, attention_scaling=scaling, dtype=dtype
        )

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        cache: KVCache | None = None,
        key_padding_mask: torch.Tensor | None = None,
        deepstack: DeepStack | None = None,
        keep: int | None = None,
    ) -> torch.Tensor:
        """Hidden states [B, L, D] after the final norm (only the last ``keep`` positions
        [B, keep, D] when given: see ``DecoderLayer.forward``; 0 fills the cache alone).

        Args:
            inputs_embeds: [B, L, D] token (and scattered visual) embeddings.
            position_ids: [3, B, L] MRoPE positions.
            cache: written at its current length and advanced by L.
            key_padding_mask: [B, cache.length + L] bool, True for real tokens; None if unpadded.
            deepstack: visual features for the first layers (prefill only).
            keep: how many of the last positions' states to return; None for all.
        """
        length = inputs_embeds.shape[1]
        cos, sin = self.rope_tables(position_ids, inputs_embeds.dtype)
        if cache is not None:
            cache.reserve(cache.length + length)
        ctx = AttentionContext(cos, sin, cache, key_padding_mask, self.attn_implementation)
        if keep is not None and (keep >= length or keep < 0):
            keep = None
        last = len(self.layers) - 1
        if deepstack is not None and len(deepstack.features) > last:
            keep = None  # DeepStack adds to every position after the last layer too (no such checkpoint)
        h = inputs_embeds
        for i, layer in enumerate(self.layers):
            # Only the last layer can drop positions: every earlier one feeds all of them onward.
            h = layer(h, ctx, keep if i == last else None)
            if deepstack is not None and i < len(deepstack.features):
                h = add_at_mask(h, deepstack.mask, deepstack.features[i])
        if cache is not None:
            cache.advance(inputs_embeds.shape[1])
        return self.norm(h)


def add_at_mask(h: torch.Tensor, mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """h with ``features`` [n, D] added at the n True positions of ``mask`` [B, L], in order."""
    if features.numel() == 0:
        return h
    h = h.clone()
    h[mask] = h[mask] + features.to(h.dtype)
    return h
