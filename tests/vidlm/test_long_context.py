"""Long prompts in bounded memory: chunked vision tower and chunked prefill equal one pass.

A tiny random model (our own ``tiny`` preset, no reference needed) runs the same prompt
chunked and unchunked; the mask-free chunk attention equals the masked one; the 64K-token
check is marked slow.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vidlm.attention import causal_attention, prefix_causal_attention
from vidlm.generate import prefill
from vidlm.kv_cache import KVCache
from vidlm.model import Qwen3VL
from vidlm.presets import preset
from vidlm.vision import frame_pair_chunks


@pytest.fixture(scope="module")
def model() -> Qwen3VL:
    torch.manual_seed(0)
    return Qwen3VL(preset("tiny")).eval()


def empty_cache(model: Qwen3VL, length: int) -> KVCache:
    text = model.config.text
    return KVCache(num_layers=text.num_hidden_layers, batch_size=1, num_kv_heads=text.num_key_value_heads,
                   head_dim=text.head_dim, capacity=length, dtype=torch.float32, device="cpu")


def last_logits(model: Qwen3VL, input_ids: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    logits, _ = prefill(model, batch, empty_cache(model, input_ids.shape[1]), chunk_size=chunk_size)
    return logits


def test_frame_pair_chunks_split_videos_between_chunks():
    chunks = frame_pair_chunks(torch.tensor([[1, 4, 6], [5, 4, 4], [1, 4, 4]]), 3)
    assert [c[2].tolist() for c in chunks] == [[[1, 4, 6], [2, 4, 4]], [[3, 4, 4]], [[1, 4, 4]]]
    assert [(c[0], c[1]) for c in chunks] == [(0, 56), (56, 104), (104, 120)]
    with pytest.raises(ValueError, match="chunk_pairs=0"):
        frame_pair_chunks(torch.tensor([[1, 4, 4]]), 0)


@torch.no_grad()
def test_chunked_vision_tower_equals_one_pass(model):
    grid = torch.tensor([[1, 4, 6], [7, 4, 4], [1, 6, 4]])
    pixels = torch.randn(int(grid.prod(-1).sum()), 1536, generator=torch.Generator().manual_seed(1))
    whole = model.model.visual(pixels, grid)
    for chunk_pairs in (1, 2, 5):
        parts = model.model.visual(pixels, grid, chunk_pairs=chunk_pairs)
        torch.testing.assert_close(parts.tokens, whole.tokens, atol=1e-5, rtol=1e-5)
        for a, b in zip(parts.deepstack, whole.deepstack, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads", "lq", "lk"), [(4, 2, 7, 40), (4, 1, 16, 17), (4, 4, 3, 300)])
def test_mask_free_chunk_attention_equals_masked(heads, kv_heads, lq, lk):
    g = torch.Generator().manual_seed(lk)
    q = torch.randn(2, heads, lq, 16, generator=g)
    k, v = (torch.randn(2, kv_heads, lk, 16, generator=g) for _ in range(2))
    mask = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(prefix_causal_attention(q, k, v), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(causal_attention(q, k, v), expected, atol=1e-5, rtol=1e-5)
    # The same queries laid out with the token dim innermost (as elementwise rope ops can leave them).
    q_odd = q.transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(prefix_causal_attention(q_odd, k, v), expected, atol=1e-5, rtol=1e-5)
    one = causal_attention(q[:, :, -1:], k, v)
    torch.testing.assert_close(one, expected[:, :, -1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split", [1, 2, 3])
@torch.no_grad()
def test_tokens_continuing_a_cache_equal_one_pass(split):
    """New tokens run as one pass after a cached prompt and ``split`` single-token steps (a
    follow-up, or scoring candidate answers) give the one-pass logits. Head dim 64, as the
    built-in model's: the CPU flash kernel went wrong there on continuation-shaped queries."""
    base = preset("tiny")
    text = dataclasses.replace(base.text, head_dim=64, rope=dataclasses.replace(base.text.rope, mrope_section=(12, 10, 10)))
    torch.manual_seed(0)
    model = Qwen3VL(dataclasses.replace(base, text=text)).eval()
    ids = torch.randint(0, 256, (1, 300), generator=torch.Generator().manual_seed(3))
    whole = model(ids, torch.ones_like(ids)).logits
    prompt = 300 - 6
    cache = empty_cache(model, 300)
    _, deltas = prefill(model, {"input_ids": ids[:, :prompt], "attention_mask": torch.ones(1, prompt, dtype=torch.long)}, cache)
    for i in range(prompt, prompt + split):
        model(ids[:, i : i + 1], torch.ones(1, i + 1, dtype=torch.long), rope_deltas=deltas, cache=cache)
    rest = model(ids[:, prompt + split :], torch.ones(1, 300, dtype=torch.long), rope_deltas=deltas, cache=cache)
    torch.testing.assert_close(rest.logits[0], whole[0, prompt + split :], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_chunked_prefill_at_8k_tokens_equals_one_pass(model):
    ids = torch.randint(0, 256, (1, 8192), generator=torch.Generator().manual_seed(2))
    whole = last_logits(model, ids, None)
    chunked = last_logits(model, ids, 1000)
    assert (chunked - whole).abs().max().item() <= 1e-4


@pytest.mark.slow
@torch.no_grad()
def test_chunked_prefill_at_64k_tokens_equals_one_pass(model):
    ids = torch.randint(0, 256, (1, 65536), generator=torch.Generator().manual_seed(3))
    whole = last_logits(model, ids, None)
    chunked = last_logits(model, ids, 4096)
    assert (chunked - whole).abs().max().item() <= 1e-4


@torch.no_grad()
def test_streamed_visual_features_equal_the_whole_prompt_pass(model):
    """Prefill encodes frame pairs chunk by chunk as it reaches them; equal to one full forward."""
    from vidlm.positions import VIDEO

    grid = torch.tensor([[5, 4, 4]])  # 5 frame pairs of 4 merged tokens each
    pairs, per_pair = 5, 4
    ids = [1, 2, 3]
    for k in range(pairs):
        ids += [10 + k, 11, 5] + [model.config.video_token_id] * per_pair + [6]
    ids += [7, 8]
    input_ids = torch.tensor([ids])
    pixels = torch.randn(int(grid.prod()), 1536, generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
             "mm_token_type_ids": (input_ids == model.config.video_token_id).long() * VIDEO,
             "pixel_values_videos": pixels, "video_grid_thw": grid}
    whole = model(**batch).logits[:, -1]
    # Chunks of 5 tokens and 2-pair vision chunks: pairs straddle prefill chunks.
    for chunk, pairs_per_pass in ((5, 2), (3, 1), (None, 32)):
        got, _ = prefill(model, batch, empty_cache(model, input_ids.shape[1]), chunk_size=chunk,
                         vision_chunk_pairs=pairs_per_pass)
        torch.testing.assert_close(got, whole, atol=1e-5, rtol=1e-5)
    # Streamed, not encoded whole up front: the tower's passes interleave with the decoder's.
    events: list[str] = []
    hooks = [model.model.visual.merger.register_forward_hook(lambda *_: events.append("vision")),
             model.model.language_model.register_forward_hook(lambda *_: events.append("decoder"))]
    try:
        prefill(model, batch, empty_cache(model, input_ids.shape[1]), chunk_size=5, vision_chunk_pairs=1)
    finally:
        for hook in hooks:
            hook.remove()
    assert events.count("vision") == pairs
    assert events.index("vision") > 0 and "".join(e[0] for e in events).count("dv") >= 2
    # A grid with one frame pair more than the prompt has runs for: caught, not silently dropped.
    fewer_runs = torch.tensor([ids[: ids.index(7) - (3 + per_pair + 1)] + [7, 8]])
    extra = {**batch, "input_ids": fewer_runs, "attention_mask": torch.ones_like(fewer_runs),
             "mm_token_type_ids": (fewer_runs == model.config.video_token_id).long() * VIDEO}
    with pytest.raises(ValueError, match="16 video placeholder tokens but more video features"):
        prefill(model, extra, empty_cache(model, fewer_runs.shape[1]), chunk_size=5)


@torch.no_grad()
def test_a_prompt_s_last_layer_runs_only_the_positions_that_are_read(model):
    """``keep`` returns the last positions' states of a full pass and fills the same cache; the
    prefill runs its last layer's MLP for the prompt's last token alone (earlier chunks only
    write the cache), with the same logits as a pass that keeps every position."""
    text = model.model.language_model
    ids = torch.randint(0, 256, (2, 40), generator=torch.Generator().manual_seed(4))
    embeds = text.embed_tokens(ids)
    positions = torch.arange(40).expand(3, 2, 40)
    full_cache, kept_cache, none_cache = (KVCache(num_layers=len(text.layers), batch_size=2,
                                                  num_kv_heads=text.config.num_key_value_heads,
                                                  head_dim=text.config.head_dim, capacity=40,
                                                  dtype=torch.float32, device="cpu") for _ in range(3))
    whole = text(embeds, positions, cache=full_cache)
    last3 = text(embeds, positions, cache=kept_cache, keep=3)
    assert last3.shape == (2, 3, whole.shape[-1])
    torch.testing.assert_close(last3, whole[:, -3:], atol=1e-5, rtol=1e-5)
    assert text(embeds, positions, cache=none_cache, keep=0).shape == (2, 0, whole.shape[-1])
    for cache in (kept_cache, none_cache):
        assert cache.length == full_cache.length == 40
        for layer in range(len(text.layers)):
            torch.testing.assert_close(cache.keys[layer], full_cache.keys[layer], atol=0, rtol=0)
            torch.testing.assert_close(cache.values[layer], full_cache.values[layer], atol=0, rtol=0)
    # Through the prefill: 3 chunks, the last layer's MLP sees one row in all.
    rows: list[int] = []
    hook = text.layers[-1].mlp.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[1]))
    try:
        got = last_logits(model, ids[:1], 16)
    finally:
        hook.remove()
    assert rows == [1]
    expected = model(ids[:1], torch.ones_like(ids[:1])).logits[:, -1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
