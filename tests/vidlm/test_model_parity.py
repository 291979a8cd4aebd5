"""Stage-by-stage parity of our Qwen3-VL against the pinned transformers reference (fp32, CPU).

Tiny random reference models are built in transformers, saved with ``save_pretrained`` and
loaded through ``vidlm.weights``; both then see the same hand-built prompt mixing text, two
images and a three-frame-pair video (laid out as the Qwen processor does: a timestamp text and
its own vision_start/end around every frame pair).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
transformers = pytest.importorskip("transformers")
import tiny  # noqa: E402

from vidlm.generate import GenerationConfig, generate_ids, prefill  # noqa: E402
from vidlm.kv_cache import KVCache  # noqa: E402
from vidlm.positions import rope_index  # noqa: E402
from vidlm.weights import build_model  # noqa: E402

IMG, VID, VS, VE, IM_START, IM_END = 262, 263, 259, 260, 258, 256

# (name, kwargs): dense/MoE, tied/untied, GQA ratios 2, 4 and 1, DeepStack layouts.
VARIANTS = {
    "dense": dict(moe=False, tie=False, heads=4, kv_heads=2, deepstack=(0, 1)),
    "dense_tied_gqa4": dict(moe=False, tie=True, heads=4, kv_heads=1, deepstack=(1, 2)),
    "moe": dict(moe=True, tie=False, heads=4, kv_heads=2, deepstack=(0, 1)),
    "moe_tied_mha": dict(moe=True, tie=True, heads=4, kv_heads=4, deepstack=(2, 0, 1)),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    ref = tiny.build_reference_checkpoint(folder, seed=len(request.param), **VARIANTS[request.param])
    return ref, build_model(folder), folder


def visual(kind: int, grid: tuple[int, int, int]) -> list[int]:
    return [VS] + [kind] * (grid[1] * grid[2] // 4) + [VE]


def mixed_prompt(seed: int = 0) -> dict[str, torch.Tensor]:
    """Text, two images of different shapes, and a 3-frame-pair video, as one sequence."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(0, 256, (n,), generator=g).tolist()  # noqa: E731
    ids = [IM_START] + text(4) + visual(IMG, (1, 4, 6)) + text(2) + visual(IMG, (1, 6, 4)) + text(1)
    for _ in range(3):
        ids += text(5) + visual(VID, (1, 4, 4))
    ids += text(3) + [IM_END, IM_START] + text(2)
    input_ids = torch.tensor([ids])
    types = torch.zeros_like(input_ids)
    types[input_ids == IMG] = 1
    types[input_ids == VID] = 2
    return dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        mm_token_type_ids=types,
        pixel_values=torch.randn(48, 1536, generator=g),
        image_grid_thw=torch.tensor([[1, 4, 6], [1, 6, 4]]),
        pixel_values_videos=torch.randn(48, 1536, generator=g),
        video_grid_thw=torch.tensor([[3, 4, 4]]),
    )


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def test_vision_tokens_and_deepstack_features(pair):
    ref, ours, _ = pair
    batch = mixed_prompt()
    for pixels, grid in (
        (batch["pixel_values"], batch["image_grid_thw"]),
        (batch["pixel_values_videos"], batch["video_grid_thw"]),
    ):
        expected = ref.model.visual(pixels, grid_thw=grid)
        got = ours.encode_visual(pixels, grid)
        assert max_diff(expected.pooler_output, got.tokens) < 1e-5
        assert len(got.deepstack) == len(expected.deepstack_features) == len(ours.config.vision.deepstack_visual_indexes)
        for exp_level, got_level in zip(expected.deepstack_features, got.deepstack, strict=True):
            assert max_diff(exp_level, got_level) < 1e-5


def test_position_ids_and_rope_deltas_with_left_padding(pair):
    ref, ours, _ = pair
    one = mixed_prompt()
    pad = 5
    ids = torch.cat([torch.full((1, pad), 257), one["input_ids"]], dim=1)
    plain = torch.cat([torch.full((1, pad), 257), torch.randint(0, 256, (1, one["input_ids"].shape[1]))], dim=1)
    input_ids = torch.cat([ids, plain])
    mask = torch.ones_like(input_ids)
    mask[0, :pad] = 0
    types = torch.zeros_like(input_ids)
    types[0, pad:] = one["mm_token_type_ids"][0]
    expected_pos, expected_delta = ref.model.get_rope_index(
        input_ids, mm_token_type_ids=types, image_grid_thw=one["image_grid_thw"],
        video_grid_thw=one["video_grid_thw"], attention_mask=mask,
    )
    got_pos, got_delta = rope_index(
        input_ids, types, image_grid_thw=one["image_grid_thw"], video_grid_thw=one["video_grid_thw"],
        attention_mask=mask, spatial_merge_size=2,
    )
    assert torch.equal(got_pos, expected_pos)
    assert torch.equal(got_delta.view(-1), expected_delta.view(-1))
    assert got_delta[0, 0] < 0 and got_delta[1, 0] == 0


@torch.no_grad()
def test_logits_mixed_prompt(pair):
    ref, ours, _ = pair
    batch = mixed_prompt(seed=1)
    expected = ref(**batch).logits
    got = ours(**batch).logits
    assert got.shape == expected.shape
    assert max_diff(got, expected) <= 1e-4


@torch.no_grad()
def test_greedy_32_tokens_identical(pair):
    ref, ours, _ = pair
    batch = mixed_prompt(seed=2)
    expected = ref.generate(**batch, max_new_tokens=32, do_sample=False, eos_token_id=None, pad_token_id=257)
    expected = expected[0, batch["input_ids"].shape[1] :].tolist()
    got = torch.stack(list(generate_ids(ours, batch, GenerationConfig(max_new_tokens=32)))).view(-1).tolist()
    assert got == expected


@torch.no_grad()
def test_cached_decoding_equals_uncached_forward(pair):
    _, ours, _ = pair
    batch = mixed_prompt(seed=3)
    text = ours.config.text
    cache = KVCache(num_layers=text.num_hidden_layers, batch_size=1, num_kv_heads=text.num_key_value_heads,
                    head_dim=text.head_dim, capacity=8, dtype=torch.float32, device="cpu")
    logits, deltas = prefill(ours, batch, cache)
    tokens, step_logits = [], [logits]
    for _ in range(5):
        tokens.append(int(step_logits[-1].argmax()))
        mask = torch.ones(1, cache.length + 1, dtype=torch.long)
        out = ours(torch.tensor([[tokens[-1]]]), mask, rope_deltas=deltas, cache=cache)
        step_logits.append(out.logits[:, -1])
    full_ids = torch.cat([batch["input_ids"], torch.tensor([tokens])], dim=1)
    types = torch.cat([batch["mm_token_type_ids"], torch.zeros(1, len(tokens), dtype=torch.long)], dim=1)
    uncached = ours(**{**batch, "input_ids": full_ids, "mm_token_type_ids": types,
                       "attention_mask": torch.ones_like(full_ids)}).logits
    prompt_len = batch["input_ids"].shape[1]
    assert cache.length == prompt_len + len(tokens)
    for i, cached in enumerate(step_logits):
        assert max_diff(cached[0], uncached[0, prompt_len - 1 + i]) < 1e-5


@pytest.mark.parametrize("chunk", [1, 7, 16])
@torch.no_grad()
def test_chunked_prefill_equals_one_shot(pair, chunk):
    _, ours, _ = pair
    batch = mixed_prompt(seed=4)
    text = ours.config.text

    def run(chunk_size):
        cache = KVCache(num_layers=text.num_hidden_layers, batch_size=1, num_kv_heads=text.num_key_value_heads,
                        head_dim=text.head_dim, capacity=4, dtype=torch.float32, device="cpu")
        logits, deltas = prefill(ours, batch, cache, chunk_size=chunk_size)
        return logits, deltas, cache

    one_logits, one_deltas, one_cache = run(None)
    got_logits, got_deltas, got_cache = run(chunk)
    assert torch.equal(one_deltas, got_deltas)
    assert max_diff(one_logits, got_logits) < 1e-5
    n = one_cache.length
    for layer in range(text.num_hidden_layers):
        assert max_diff(one_cache.keys[layer][:, :, :n], got_cache.keys[layer][:, :, :n]) < 1e-5
