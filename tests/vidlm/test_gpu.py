"""GPU-only checks: bf16 and flash-attn against SDPA. Skipped where CUDA (or flash-attn) is absent."""

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
