"""The CPU decode fast paths agree with the plain PyTorch ops they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidlm.attention import causal_attention, split_kv_decode_attention
from vidlm.decoder import GEMV_MAX_ROWS, Linear


@pytest.mark.parametrize("rows", [1, 3, GEMV_MAX_ROWS, GEMV_MAX_ROWS + 1])
@pytest.mark.parametrize("out_features, bias", [(1024, False), (768, True), (100, False)])
def test_linear_row_blocks_match_f_linear(rows, out_features, bias):
    torch.manual_seed(0)
    layer = Linear(256, out_features, bias=bias)
    if bias:
        torch.nn.init.normal_(layer.bias)
    x = torch.randn(rows, 1, 256)
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (rows, 1, out_features)
    assert out.is_contiguous()  # laid out as F.linear's, the token dim outermost
    torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_linear_row_blocks_carry_gradients():
    torch.manual_seed(1)
    layer = Linear(64, 256)
    x = torch.randn(1, 64, requires_grad=True)
    layer(x).square().sum().backward()
    grad_w, grad_x = layer.weight.grad.clone(), x.grad.clone()
    layer.weight.grad, x.grad = None, None
    F.linear(x, layer.weight, layer.bias).square().sum().backward()
    torch.testing.assert_close(grad_w, layer.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_x, x.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keys", [1, 37, 2048])
def test_decode_attention_grouped_heads_match_repeated_kv(keys):
    torch.manual_seed(2)
    q = torch.randn(2, 8, 1, 32)
    cache_k, cache_v = torch.randn(2, 2, keys + 16, 32), torch.randn(2, 2, keys + 16, 32)
    k, v = cache_k[:, :, :keys], cache_v[:, :, :keys]  # a cache's view, not contiguous
    out = causal_attention(q, k, v)
    expected = F.scaled_dot_product_attention(
        q, k.repeat_interleave(4, dim=1), v.repeat_interleave(4, dim=1)
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch,keys", [(1, 70_001), (2, 20_011), (1, 700)])
def test_split_kv_decode_merges_splits_by_their_log_sum_exps(batch, keys):
    # The CUDA decode path cuts the cache into splits (a tail when they do not divide it) and
    # merges the splits' outputs; the CPU kernel with log-sum-exps checks the merge here.
    gen = torch.Generator().manual_seed(keys)
    rows = torch.randn(batch, 8, 2, 128, generator=gen)
    k, v = (torch.randn(batch, 8, keys + 9, 128, generator=gen)[:, :, :keys] for _ in range(2))
    k[:, :, 77] *= 5  # a key that stands out, so the softmax is not flat
    want = F.scaled_dot_product_attention(rows, k, v)
    got = split_kv_decode_attention(rows.bfloat16(), k.bfloat16(), v.bfloat16())
    unsplit = F.scaled_dot_product_attention(rows.bfloat16(), k.bfloat16(), v.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    # As close to float32 as the unsplit bf16 kernel is (rounding q, k, v to bf16 dominates).
    assert (got.float() - want).abs().max() <= 1.5 * (unsplit.float() - want).abs().max() + 1e-3
    assert torch.allclose(split_kv_decode_attention(rows, k, v), want, atol=1e-5)
