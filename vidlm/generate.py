"""Generation: chunked prefill into a preallocated KV cache, then token-by-token decoding.

Unusual here: the prompt is prefilled in chunks (the vision tower runs once, positions and
DeepStack features are sliced per chunk), so peak activation memory depends on the chunk, not
on the prompt length. Sampling follows the reference's order: repetition penalty (over prompt
and output, multiplicative), presence penalty (over output tokens only, additive, as in the
OpenAI/vLLM convention), then temperature, top-k and top-p. Batches are left- or right-padded
prompts; finished rows emit the pad token until every row is done.

Shapes: B batch, L prompt tokens, V vocab.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from .decoder import DeepStack
from .kv_cache import KVCache
from .model import Qwen3VL, padding_mask
from .visual_cache import VisualCache


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings; ``from_dir`` reads a checkpoint's ``generation_config.json``."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "max_new_tokens": self.max_new_tokens >= 0,
            "temperature": self.temperature > 0,
            "top_k": self.top_k >= 0,
            "top_p": 0 < self.top_p <= 1,
            "repetition_penalty": self.repetition_penalty > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range")

    @classmethod
    def from_dir(cls, folder: Path) -> GenerationConfig:
        """Settings from ``generation_config.json`` (defaults where the file is silent)."""
        path = folder / "generation_config.json"
        raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        eos = raw.get("eos_token_id", ())
        eos = (eos,) if isinstance(eos, int) else tuple(eos or ())
        pad = raw.get("pad_token_id")
        values: dict[str, Any] = {"eos_token_ids": eos, "pad_token_id": pad if pad is not None else (eos[0] if eos else 0)}
        for name in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "presence_penalty", "max_new_tokens"):
            if raw.get(name) is not None:
                values[name] = raw[name]
        return cls(**values)

    def updated(self, **overrides: Any) -> GenerationConfig:
        """A copy with the given (non-None) settings replaced."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown generation settings {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def apply_penalties(
    logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor, config: GenerationConfig
) -> torch.Tensor:
    """Repetition penalty over ``seen`` [B, n] ids, presence penalty over ``generated`` [B, m]."""
    if config.repetition_penalty != 1.0 and seen.numel():
        scores = logits.gather(1, seen)
        scores = torch.where(scores < 0, scores * config.repetition_penalty, scores / config.repetition_penalty)
        logits = logits.scatter(1, seen, scores)
    if config.presence_penalty and generated.numel():
        present = torch.zeros_like(logits, dtype=torch.bool).scatter(1, generated, True)
        logits = logits - config.presence_penalty * present.to(logits.dtype)
    return logits


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits with everything outside the top-k and the top-p nucleus set to -inf."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - top_p
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def next_tokens(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy or sampled next ids [B] from processed logits [B, V]."""
    if not config.do_sample:
        return logits.argmax(-1)
    logits = filter_top_k_top_p(logits / config.temperature, config.top_k, config.top_p)
    probs = logits.float().softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _chunk_deepstack(deepstack: DeepStack | None, start: int, end: int) -> DeepStack | None:
    if deepstack is None:
        return None
    mask = deepstack.mask
    row_of = (mask.flatten().cumsum(0) - 1).view_as(mask)  # feature row of each visual position
    sub = mask[:, start:end]
    rows = row_of[:, start:end][sub]
    return DeepStack(mask=sub, features=[f[rows] for f in deepstack.features])


@torch.inference_mode()
def prefill(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    cache: KVCache,
    *,
    chunk_size: int | None = None,
    visual_cache: VisualCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the prompt into ``cache``; return the last position's logits [B, V] and rope deltas [B, 1].

    Args:
        batch: the processor's output (input_ids, attention_mask, mm_token_type_ids, pixels, grids).
        chunk_size: tokens per decoder pass; None runs the prompt in one pass.
        visual_cache: reuse vision-tower outputs for pixels seen before.
    """
    input_ids = batch["input_ids"]
    attention_mask = batch.get("attention_mask")

    def encode(pixels: torch.Tensor, grid: torch.Tensor):
        if visual_cache is None:
            return model.encode_visual(pixels, grid)
        return visual_cache.get_or_compute(pixels, grid, model.encode_visual)

    images = videos = None
    if batch.get("pixel_values") is not None:
        images = encode(batch["pixel_values"], batch["image_grid_thw"])
    if batch.get("pixel_values_videos") is not None:
        videos = encode(batch["pixel_values_videos"], batch["video_grid_thw"])
    embeds, deepstack = model.embed(
        input_ids, mm_token_type_ids=batch.get("mm_token_type_ids"), images=images, videos=videos
    )
    position_ids, rope_deltas = model.positions(
        input_ids, attention_mask, batch.get("mm_token_type_ids"), batch.get("image_grid_thw"),
        batch.get("video_grid_thw"), position_ids=None, rope_deltas=None, cache=None,
    )
    position_ids = position_ids.to(model.device)
    start_len = cache.length
    length = input_ids.shape[1]
    step = chunk_size or length
    hidden = None
    for start in range(0, length, step):
        end = min(start + step, length)
        keys_mask = None if attention_mask is None else attention_mask[:, : start_len + end]
        hidden = model.model.language_model(
            embeds[:, start:end], position_ids[:, :, start:end], cache=cache,
            key_padding_mask=padding_mask(keys_mask, model.device),
            deepstack=_chunk_deepstack(deepstack, start, end),
        )
    assert hidden is not None, "empty prompt"
    return model.lm_head(hidden[:, -1]), rope_deltas


@torch.inference_mode()
def generate_ids(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    config: GenerationConfig,
    *,
    prefill_chunk_size: int | None = 4096,
    visual_cache: VisualCache | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids [B] at each step until every row hit a stop token or the limit."""
    input_ids = batch["input_ids"].to(model.device)
    bsz, length = input_ids.shape
    attention_mask = batch.get("attention_mask")
    attention_mask = (
        torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(model.device)
    )
    text = model.config.text
    cache = KVCache(
        num_layers=text.num_hidden_layers, batch_size=bsz, num_kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim, capacity=length + max(config.max_new_tokens, 1),
        dtype=model.dtype, device=model.device,
    )
    logits, rope_deltas = prefill(
        model, {**batch, "input_ids": input_ids, "attention_mask": attention_mask}, cache,
        chunk_size=prefill_chunk_size, visual_cache=visual_cache,
    )
    generator = None
    if config.do_sample and config.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(config.seed)
    eos = torch.tensor(config.eos_token_ids or [-1], device=model.device)
    finished = torch.zeros(bsz, dtype=torch.bool, device=model.device)
    # Padding is not part of a prompt: stand a real token of the same row in for it.
    first_real = input_ids.gather(1, attention_mask.argmax(1, keepdim=True))
    seen = torch.where(attention_mask.bool(), input_ids, first_real)
    generated = input_ids.new_empty(bsz, 0)
    for _ in range(config.max_new_tokens):
        processed = apply_penalties(logits.float(), seen, generated, config)
        token = next_tokens(processed, config, generator)
        token = token.masked_fill(finished, config.pad_token_id)
        yield token
        finished |= torch.isin(token, eos)
        if bool(finished.all()):
            return
        generated = torch.cat([generated, token[:, None]], dim=1)
        seen = torch.cat([seen, token[:, None]], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(token[:, None])], dim=1)
        out = model(token[:, None], attention_mask, rope_deltas=rope_deltas, cache=cache)
        logits = out.logits[:, -1]
