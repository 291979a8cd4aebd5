"""GPU-only checks: bf16 and flash-attn against SDPA, split-KV decode, a bf16 training step. Skipped where CUDA (or flash-attn) is absent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    import tiny

    out = tmp_path_factory.mktemp("gpu")
    tiny.build_reference_checkpoint(out, seed=21, moe=True)
    return out


def prompt() -> dict[str, torch.Tensor]:
    from test_model_parity import mixed_prompt

    return mixed_prompt(seed=5)


@torch.no_grad()
def test_bf16_on_cuda_agrees_with_fp32_on_cpu(folder):
    from vidlm.weights import build_model

    cpu = build_model(folder)
    gpu = build_model(folder, dtype=torch.bfloat16, device="cuda")
    batch = prompt()
    a = cpu(**batch).logits[0]
    b = gpu(**{k: v.cuda() for k, v in batch.items()}).logits[0].float().cpu()
    # Tolerance: bf16 keeps 8 mantissa bits; top-1 and direction must survive (reference doc §10).
    assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 0.999
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95


@torch.no_grad()
def test_flash_attention_matches_sdpa(folder):
    pytest.importorskip("flash_attn")
    import vidlm

    sdpa = vidlm.load(folder, device="cuda", dtype="bfloat16", attn_implementation="sdpa")
    flash = vidlm.load(folder, device="cuda", dtype="bfloat16", attn_implementation="flash")
    batch = {k: v.cuda() for k, v in prompt().items()}
    a, b = sdpa.model(**batch).logits.float(), flash.model(**batch).logits.float()
    # Both run in bf16 with different accumulation orders.
    assert (a - b).abs().max() < 5e-2
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.95


@torch.no_grad()
@pytest.mark.parametrize("batch,keys", [(1, 70_001), (2, 20_011), (1, 5_000)])  # split, split, one call
def test_one_query_decode_attention_on_cuda_matches_float32_sdpa(batch, keys):
    from vidlm.attention import causal_attention

    gen = torch.Generator(device="cuda").manual_seed(3)
    q = torch.randn(batch, 16, 1, 128, device="cuda", generator=gen)
    k, v = (torch.randn(batch, 8, keys + 5, 128, device="cuda", generator=gen)[:, :, :keys] for _ in range(2))
    k[:, :, 123] *= 4  # a few keys that stand out, so the softmax is not flat
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    got = causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    unsplit = torch.nn.functional.scaled_dot_product_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), enable_gqa=True)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    # bf16 inputs against float32: no worse than the fused kernel on the same bf16 inputs.
    assert (got.float() - want).abs().max() <= 1.5 * (unsplit.float() - want).abs().max() + 1e-3
    assert torch.allclose(causal_attention(q, k, v), want, atol=1e-4)


def test_bf16_autocast_training_step_on_cuda():
    import vidlm
    from recipe.data import SampleSpec, encode_branches, make_sample
    from recipe.train import branch_loss
    from vidlm.weights import build_model

    folder = Path(vidlm.__file__).parent / "builtin"
    model = build_model(folder, device="cuda").train()
    processor = vidlm.load(folder).processor
    branches = encode_branches(processor, make_sample(3, SampleSpec(frame_px=64, questions=4))).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = branch_loss(model, branches, visual_norm_weight=0.05)
    loss.backward()
    full = branch_loss(model.float(), branches, visual_norm_weight=0.05)
    assert torch.isfinite(loss) and abs(loss.item() - full.item()) < 0.05 * full.item()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)
