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


def test_residuals_and_activations_in_place_keep_values_gradients_and_the_float32_stream():
    """The decoder layer and the vision block add their residuals into the sublayers' outputs
    and run SiLU/GELU in place outside autograd: the same values as out of place, gradients
    still flow in training, and under bf16 autocast the residual stream stays float32."""
    from vidlm.decoder import AttentionContext, DecoderLayer
    from vidlm.model import Qwen3VL
    from vidlm.presets import preset

    torch.manual_seed(0)
    model = Qwen3VL(preset("tiny"))
    layer: DecoderLayer = model.model.language_model.layers[0]
    block = model.model.visual.blocks[0]
    x = torch.randn(1, 12, layer.mlp.gate_proj.in_features)
    cos, sin = model.model.language_model.rope_tables(torch.arange(12).expand(3, 1, 12), torch.float32)
    ctx = AttentionContext(cos, sin, None, None, "sdpa")
    patches = torch.randn(16, block.norm1.normalized_shape[0])
    rope = (torch.ones(16, block.attn.qkv.in_features // block.attn.num_heads), torch.zeros(16, block.attn.qkv.in_features // block.attn.num_heads))
    cu = torch.tensor([0, 16], dtype=torch.int32)

    def by_hand_layer(h):
        h = h + layer.self_attn(layer.input_layernorm(h), ctx)
        gate, up = layer.mlp.gate_proj(layer.post_attention_layernorm(h)), layer.mlp.up_proj(layer.post_attention_layernorm(h))
        return h + layer.mlp.down_proj(F.silu(gate) * up)

    def by_hand_block(h):
        h = h + block.attn(block.norm1(h), rope, cu, "sdpa")
        mlp = block.mlp
        return h + mlp.linear_fc2(F.gelu(mlp.linear_fc1(block.norm2(h)), approximate=mlp.approximate))

    with torch.no_grad():
        assert torch.equal(layer(x, ctx), by_hand_layer(x))
        assert torch.equal(block(patches, rope, cu, "sdpa"), by_hand_block(patches))
    # Training: gradients reach the input and the weights, equal to the out-of-place graph's.
    xs = x.clone().requires_grad_(True)
    layer(xs, ctx).square().sum().backward()
    expected = x.clone().requires_grad_(True)
    by_hand_layer(expected).square().sum().backward()
    torch.testing.assert_close(xs.grad, expected.grad)
    # bf16 autocast: the sublayers' outputs are bf16, the stream they are added to stays float32.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x, ctx).dtype == torch.float32
        assert block(patches, rope, cu, "sdpa").dtype == torch.float32
