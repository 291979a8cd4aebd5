"""Attention backends: PyTorch SDPA everywhere, flash-attn (varlen) on CUDA when installed.

Unusual here: vision attention is block-diagonal (a patch sees only its own image or frame
pair), given as ``cu_seqlens``. On SDPA, runs of equal-length blocks (all frame pairs of a
video) are batched into one call instead of a Python loop over blocks. Decoder attention is
causal with the queries aligned to the *end* of the keys (bottom-right), which is what a KV
cache needs; SDPA's own ``is_causal`` is top-left, so it is only used when there is no cache.

Shapes: B batch, H query heads, K kv heads, Lq/Lk query/key tokens, Dh head dim, N patches.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

AttnImplementation = Literal["auto", "sdpa", "flash"]


def flash_available() -> bool:
    """Whether the flash-attn package is importable (it only works on CUDA)."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(
    requested: AttnImplementation, device: torch.device | str, dtype: torch.dtype
) -> Literal["sdpa", "flash"]:
    """Pick the backend. ``auto`` means flash on CUDA with the package and a half dtype.

    Raises:
        ValueError: ``requested`` is unknown, or ``flash`` was asked for where it cannot run.
    """
    if requested not in ("auto", "sdpa", "flash"):
        raise ValueError(f"attn_implementation={requested!r}: expected 'auto', 'sdpa' or 'flash'")
    on_cuda = torch.device(device).type == "cuda"
    half = dtype in (torch.float16, torch.bfloat16)
    if requested == "sdpa":
        return "sdpa"
    if requested == "flash":
        if not flash_available():
            raise ValueError(
                "attn_implementation='flash' needs the flash-attn package: pip install 'vidlm[gpu]'"
            )
        if not on_cuda or not half:
            raise ValueError(
                f"attn_implementation='flash' needs a CUDA device and float16/bfloat16, "
                f"got device={torch.device(device)} dtype={dtype}; use 'sdpa' or 'auto'"
            )
        return "flash"
    return "flash" if on_cuda and half and flash_available() else "sdpa"


def vision_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    implementation: Literal["sdpa", "flash"] = "sdpa",
) -> torch.Tensor:
    """Block-diagonal, non-causal attention over packed patches.

    Args:
        q, k, v: [N, H, Dh].
        cu_seqlens: [n_blocks + 1] int32 block boundaries.
    Returns:
        [N, H, Dh].
    """
    if implementation == "flash":
        from flash_attn import flash_attn_varlen_func

        cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
        longest = int((cu[1:] - cu[:-1]).max())
        return flash_attn_varlen_func(q, k, v, cu, cu, longest, longest, causal=False)
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    outs, start = [], 0
    for length, count in _equal_runs(lengths):
        stop = start + length * count
        # [count*length, H, Dh] -> [count, H, length, Dh]: one batched call for equal blocks.
        shape = (count, length, *q.shape[1:])
        qs, ks, vs = (t[start:stop].reshape(shape).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs)
        outs.append(o.transpose(1, 2).reshape(stop - start, *q.shape[1:]))
        start = stop
    # One run (a video of equal frames: the usual case) needs no second copy into a buffer.
    if len(outs) == 1:
        return outs[0]
    return torch.cat(outs) if outs else torch.empty_like(q)


def _equal_runs(lengths: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for length in lengths:
        if runs and runs[-1][0] == length:
            runs[-1] = (length, runs[-1][1] + 1)
        else:
            runs.append((length, 1))
    return runs


# Below this many cached keys one fused call reads the cache fast enough, and the split and
# merge would only add kernel launches to a decode step that the host already bounds.
SPLIT_KV_MIN_KEYS = 16384


@functools.cache
def _flash_kernel_runs_on(device: torch.device, head_dim: int) -> bool:
    """PyTorch's flash kernel needs an Ampere or newer GPU and heads of at most 256 channels."""
    if device.type != "cuda":
        return device.type == "cpu"
    return torch.cuda.get_device_capability(device)[0] >= 8 and head_dim <= 256


def split_kv_decode_attention(rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of a few query rows to all of ``k``/``v`` on CUDA, the cache read by the whole GPU.

    A fused kernel gives a decode step one block per (batch, kv head): 8 of an H200's 132
    multiprocessors stream a 256K-token cache (3 ms a layer). Here the keys are cut into equal
    splits that run as a batch of flash-attention calls, and the splits' outputs are merged by
    their log-sum-exps (0.27 ms a layer, ~3.9 TB/s). float32, which flash-attention does not
    take, and GPUs older than Ampere go through two batched products instead.

    Args:
        rows: [B, K, G, Dh], the G query heads of each kv head as rows; k, v: [B, K, Lk, Dh].
    Returns:
        [B, K, G, Dh].
    """
    b, kv, _, dh = rows.shape
    lk = k.shape[2]
    if rows.dtype not in (torch.float16, torch.bfloat16) or not _flash_kernel_runs_on(rows.device, dh):
        scores = torch.matmul(rows * dh**-0.5, k.transpose(-1, -2))
        return torch.matmul(scores.float().softmax(dim=-1).to(v.dtype), v)
    splits = max(1, min(128 // (b * kv), lk // 1024))
    size = lk // splits
    # The fused kernel that also returns each row's log-sum-exp (the CPU one lets tests check this on CPU).
    flash = (torch.ops.aten._scaled_dot_product_flash_attention if rows.is_cuda
             else torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    outs = []
    for i in range(b):  # splits of one sequence are views of the cache; across a batch they are not
        q1, k1, v1 = rows[i : i + 1], k[i : i + 1], v[i : i + 1]
        # [1, K, splits*size, Dh] -> [splits, K, size, Dh] (a view: the splits become the batch)
        parts = [(k1[:, :, : splits * size].unflatten(2, (splits, size)).squeeze(0).transpose(0, 1),
                  v1[:, :, : splits * size].unflatten(2, (splits, size)).squeeze(0).transpose(0, 1))]
        if splits * size < lk:
            parts.append((k1[:, :, splits * size :], v1[:, :, splits * size :]))
        out, lse = [], []
        for ks, vs in parts:
            o, l_ = flash(q1.expand(ks.shape[0], -1, -1, -1), ks, vs)[:2]
            out.append(o)
            lse.append(l_)
        # Each split's softmax is normalised over its own keys; weigh them by their share of the total.
        weights = torch.cat(lse).float().softmax(dim=0)[..., None]
        outs.append((torch.cat(out).float() * weights).sum(dim=0, keepdim=True).to(rows.dtype))
    return torch.cat(outs)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    implementation: Literal["sdpa", "flash"] = "sdpa",
) -> torch.Tensor:
    """Causal attention with queries aligned to the last ``Lq`` of ``Lk`` keys (GQA allowed).

    Args:
        q: [B, H, Lq, Dh]; k, v: [B, K, Lk, Dh] with Lk >= Lq (cache + new tokens).
        key_padding_mask: [B, Lk] bool, True for real tokens; None when nothing is padded.
    Returns:
        [B, H, Lq, Dh].
    """
    lq, lk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if implementation == "flash" and key_padding_mask is None:
        from flash_attn import flash_attn_func

        # flash-attn aligns causal masks bottom-right, as a cache needs; it takes [B, L, H, Dh].
        o = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
        return o.transpose(1, 2)
    if key_padding_mask is None and lq == lk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if key_padding_mask is None and lq == 1:
        # One query at the end of the keys sees all of them: no mask. The query heads sharing a
        # kv head become rows of one query block, so the cache is read once per kv head, never
        # repeated (on CPU 1.7x faster than enable_gqa at 32K keys).
        b, heads, _, dh = q.shape
        rows = q.reshape(b, k.shape[1], heads // k.shape[1], dh)
        if q.device.type == "cuda" and lk >= SPLIT_KV_MIN_KEYS:
            return split_kv_decode_attention(rows, k, v).reshape(b, heads, 1, dh)
        return F.scaled_dot_product_attention(rows, k, v).reshape(b, heads, 1, dh)
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if key_padding_mask is None and q.device.type == "cpu" and not training:
        # Not under autograd: it does not differentiate the log-sum-exps this path merges with.
        return prefix_causal_attention(q, k, v)
    if key_padding_mask is None:
        # Bottom-right causal bias: fused kernels on CUDA without an [Lq, Lk] mask in memory.
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(lq, lk), enable_gqa=gqa)
    mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(diagonal=lk - lq)
    mask = mask[None, None]
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, None, None, :].to(q.device)
        # A fully masked query row (a left-pad position) would give NaN; let it see itself.
        own = torch.zeros(lq, lk, dtype=torch.bool, device=q.device)
        rows = torch.arange(lq, device=q.device)
        own[rows, rows + (lk - lq)] = True
        mask = mask | own[None, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)


def prefix_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Chunk-after-cache causal attention without any mask: prefix part + causal square, merged.

    The ``Lq`` queries see all ``Lk - Lq`` cached keys (no mask; the query heads of one kv head
    are stacked as extra rows, so keys are never repeated) and the last ``Lq`` keys causally
    (``is_causal``, top-left == bottom-right on a square). The two softmaxes are merged with
    their log-sum-exps, so memory is O(Lq + Lk) per head instead of an [Lq, Lk] mask.

    Args:
        q: [B, H, Lq, Dh]; k, v: [B, K, Lk, Dh] with Lk > Lq.
    Returns:
        [B, H, Lq, Dh].
    """
    b, heads, lq, dh = q.shape
    kv_heads, past = k.shape[1], k.shape[2] - lq
    # The CPU flash kernel reads q wrongly when its last dim is not the innermost one (it does
    # not check). No extra work for the usual q, a transposed [B, L, H, Dh] view: the reshape
    # to q_rows below would make this copy anyway, and now views it.
    q = q.contiguous()
    group = heads // kv_heads
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    # [B, H, Lq, Dh] -> [B, K, group*Lq, Dh]: query heads sharing a kv head become rows.
    q_rows = q.reshape(b, kv_heads, group * lq, dh)
    out_prefix, lse_prefix = flash(q_rows, k[:, :, :past], v[:, :, :past])[:2]
    out_prefix = out_prefix.reshape(b, heads, lq, dh)
    lse_prefix = lse_prefix.reshape(b, heads, lq)
    k_new, v_new = (t[:, :, past:].repeat_interleave(group, dim=1) for t in (k, v))  # [B, H, Lq, Dh]
    out_new, lse_new = flash(q, k_new, v_new, is_causal=True)[:2]
    lse = torch.logaddexp(lse_prefix, lse_new)
    w_prefix = (lse_prefix - lse).exp()[..., None]
    w_new = (lse_new - lse).exp()[..., None]
    return (out_prefix.float() * w_prefix + out_new.float() * w_new).to(q.dtype)
