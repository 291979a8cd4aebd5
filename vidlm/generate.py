"""Generation: chunked prefill into a preallocated KV cache, then token-by-token decoding.

Unusual here: the prompt is prefilled in chunks, and the vision tower's output is streamed
into them: a chunk of frame pairs is encoded when the prefill reaches its first placeholder,
so neither the prompt's embeddings nor its visual and DeepStack features are ever held whole;
peak activation memory depends on the chunks, not on the prompt length. The last decoder layer
runs its queries, output projection and MLP for the prompt's last position alone (the others
only leave their keys and values in the cache). Sampling follows the reference's order:
repetition penalty (over prompt and output, multiplicative), presence penalty (over output
tokens only, additive, as in the OpenAI/vLLM convention), then temperature, top-k and top-p.
Batches are left- or right-padded prompts; finished rows emit the pad token until every row is
done.

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
from .model import VISION_CHUNK_PAIRS, Qwen3VL, padding_mask
from .positions import IMAGE, VIDEO
from .prefix_cache import PrefixCache
from .vision import VisualFeatures
from .visual_cache import VisualCache, features_key

# The processor's visual inputs: (placeholder kind, name, pixels key, grid key).
VISUAL_INPUTS = (
    (IMAGE, "image", "pixel_values", "image_grid_thw"),
    (VIDEO, "video", "pixel_values_videos", "video_grid_thw"),
)


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


def _encode_visuals(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    visual_cache: VisualCache | None,
    chunk_pairs: int | None,
) -> tuple[VisualFeatures | None, VisualFeatures | None]:
    """Image and video features of a prompt (None where it has none), through the cache."""

    def encode(pixels: torch.Tensor, grid: torch.Tensor) -> VisualFeatures:
        if chunk_pairs is None:
            return model.encode_visual(pixels, grid)
        return model.encode_visual(pixels, grid, chunk_pairs=chunk_pairs)

    out: list[VisualFeatures | None] = []
    for _, _, pixels_name, grid_name in VISUAL_INPUTS:
        pixels = batch.get(pixels_name)
        if pixels is None:
            out.append(None)
        elif visual_cache is None:
            out.append(encode(pixels, batch[grid_name]))
        else:
            out.append(visual_cache.get_or_compute(pixels, batch[grid_name], encode))
    return out[0], out[1]


def _prompt_embeds(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    skip: int,
    visual_cache: VisualCache | None,
    chunk_pairs: int | None,
) -> tuple[torch.Tensor, DeepStack | None]:
    """Embeddings [B, L - skip, D] and DeepStack plan of the prompt after its first ``skip`` tokens.

    When those tokens hold no visual placeholder (a follow-up question after a kept video
    prefix), the vision tower does not run at all.
    """
    input_ids, types = batch["input_ids"], batch.get("mm_token_type_ids")
    if skip and (types is None or not bool(types[:, skip:].any())):
        return model.embed(input_ids[:, skip:])
    images, videos = _encode_visuals(model, batch, visual_cache, chunk_pairs)
    embeds, deepstack = model.embed(input_ids, mm_token_type_ids=types, images=images, videos=videos)
    return embeds[:, skip:], _chunk_deepstack(deepstack, skip, input_ids.shape[1])


class _FeatureRows:
    """A vision-tower stream handed out row by row in sequence order; a frame-pair chunk is
    computed only when the prefill reaches its first placeholder, so at most one chunk of
    visual and DeepStack features is held at a time."""

    def __init__(self, parts: Iterator[VisualFeatures], name: str, expected: int) -> None:
        self._parts = parts
        self._held: VisualFeatures | None = None
        self._name = name
        self._expected = expected

    def take(self, n: int) -> VisualFeatures | None:
        """The next ``n`` rows (None for none).

        Raises:
            ValueError: the pixels hold fewer features than the prompt has placeholders.
        """
        if n == 0:
            return None
        pieces: list[VisualFeatures] = []
        need = n
        while need:
            if self._held is None:
                self._held = next(self._parts, None)
                if self._held is None:
                    raise self._mismatch("fewer")
            held = self._held
            k = min(need, held.tokens.shape[0])
            pieces.append(VisualFeatures(held.tokens[:k], [f[:k] for f in held.deepstack]))
            rest = held.tokens.shape[0] - k
            self._held = VisualFeatures(held.tokens[k:], [f[k:] for f in held.deepstack]) if rest else None
            need -= k
        if len(pieces) == 1:
            return pieces[0]
        return VisualFeatures(
            torch.cat([p.tokens for p in pieces]),
            [torch.cat(level) for level in zip(*(p.deepstack for p in pieces), strict=True)],
        )

    def finish(self) -> None:
        """Raises ValueError if the pixels hold more features than the prompt took."""
        if self._held is not None or next(self._parts, None) is not None:
            raise self._mismatch("more")

    def _mismatch(self, how: str) -> ValueError:
        return ValueError(
            f"{self._expected} {self._name} placeholder tokens but {how} {self._name} features"
        )


def _feature_streams(
    model: Qwen3VL, batch: dict[str, torch.Tensor], chunk_pairs: int | None
) -> dict[int, _FeatureRows]:
    """One row stream per visual kind the prompt has (IMAGE / VIDEO -> rows)."""
    types = batch["mm_token_type_ids"]
    streams = {}
    for kind, name, pixels_name, grid_name in VISUAL_INPUTS:
        pixels = batch.get(pixels_name)
        if pixels is None:
            continue
        parts = model.model.visual.stream(
            pixels.to(model.device), batch[grid_name], chunk_pairs=chunk_pairs or VISION_CHUNK_PAIRS
        )
        streams[kind] = _FeatureRows(parts, name, int((types == kind).sum()))
    return streams


@torch.inference_mode()
def prefill(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    cache: KVCache,
    *,
    chunk_size: int | None = None,
    visual_cache: VisualCache | None = None,
    vision_chunk_pairs: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the prompt into ``cache``; return the last position's logits [B, V] and rope deltas [B, 1].

    ``cache`` may already hold the prompt's first ``cache.length`` tokens (a kept prefix of an
    earlier prompt); only the rest is run. A whole one-row prompt without ``visual_cache``
    streams the vision tower's features into the chunks (see the module notes); otherwise the
    features are computed (or loaded) whole first.

    Args:
        batch: the processor's output (input_ids, attention_mask, mm_token_type_ids, pixels, grids).
        chunk_size: tokens per decoder pass; None runs the prompt in one pass.
        visual_cache: reuse vision-tower outputs for pixels seen before.
        vision_chunk_pairs: frame pairs per vision-tower pass; None takes the model's default.
    """
    input_ids = batch["input_ids"]
    attention_mask = batch.get("attention_mask")
    types = batch.get("mm_token_type_ids")
    skip, length = cache.length, input_ids.shape[1]
    assert skip < length, "the cache must leave at least one prompt token to run"
    has_pixels = any(batch.get(pixels) is not None for _, _, pixels, _ in VISUAL_INPUTS)
    # Streaming: one row of a batch, the whole prompt to run, no feature cache to fill.
    stream = has_pixels and types is not None and skip == 0 and input_ids.shape[0] == 1 and visual_cache is None
    streams: dict[int, _FeatureRows] = {}
    if stream:
        streams = _feature_streams(model, batch, vision_chunk_pairs)
    else:
        embeds, deepstack = _prompt_embeds(model, batch, skip, visual_cache, vision_chunk_pairs)
    position_ids, rope_deltas = model.positions(
        input_ids, attention_mask, types, batch.get("image_grid_thw"),
        batch.get("video_grid_thw"), position_ids=None, rope_deltas=None, cache=None,
    )
    position_ids = position_ids[:, :, skip:].to(model.device)
    step = chunk_size or length
    hidden = None
    for start in range(0, length - skip, step):
        end = min(start + step, length - skip)
        keys_mask = None if attention_mask is None else attention_mask[:, : skip + end]
        if stream:
            assert types is not None
            chunk_types = types[:, start:end]
            rows = {kind: s.take(int((chunk_types == kind).sum())) for kind, s in streams.items()}
            chunk_embeds, chunk_deepstack = model.embed(
                input_ids[:, start:end], mm_token_type_ids=chunk_types,
                images=rows.get(IMAGE), videos=rows.get(VIDEO),
            )
        else:
            chunk_embeds, chunk_deepstack = embeds[:, start:end], _chunk_deepstack(deepstack, start, end)
        # Only the prompt's last position is read: earlier chunks just fill the cache.
        hidden = model.model.language_model(
            chunk_embeds, position_ids[:, :, start:end], cache=cache,
            key_padding_mask=padding_mask(keys_mask, model.device), deepstack=chunk_deepstack,
            keep=1 if end == length - skip else 0,
        )
    for s in streams.values():
        s.finish()
    assert hidden is not None, "empty prompt"
    return model.lm_head(hidden[:, -1]), rope_deltas


def visual_content_key(batch: dict[str, torch.Tensor]) -> str:
    """A hash of a prompt's image and video patches and grids ("" for a text-only prompt)."""
    parts = [
        features_key(batch[pixels], batch[grid])
        for _, _, pixels, grid in VISUAL_INPUTS
        if batch.get(pixels) is not None
    ]
    return "+".join(parts)


def _start_cache(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    max_new_tokens: int,
    prefix_cache: PrefixCache | None,
) -> tuple[KVCache, str | None]:
    """A cache for the prompt: a kept prefix's copy when one matches, else an empty one."""
    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    bsz, length = input_ids.shape
    extra = max(max_new_tokens, 1)
    usable = prefix_cache is not None and bsz == 1 and bool(attention_mask.all())
    key = visual_content_key(batch) if usable else None
    if key is not None and prefix_cache is not None:
        hit = prefix_cache.lookup(key, input_ids[0], extra_capacity=extra)
        if hit is not None:
            return hit, key
    text = model.config.text
    cache = KVCache(
        num_layers=text.num_hidden_layers, batch_size=bsz, num_kv_heads=text.num_key_value_heads,
        head_dim=text.head_dim, capacity=length + extra, dtype=model.dtype, device=model.device,
    )
    return cache, key


@dataclass(frozen=True)
class Step:
    """One decoding step: the chosen ids [B] and, when asked for, their log-probabilities [B]
    (float32) under the model's next-token distribution, the raw logits' log-softmax (before
    penalties, temperature and top-k/top-p: what the model believes, not how it was sampled)."""

    token: torch.Tensor
    logprob: torch.Tensor | None = None


def generate_ids(
    model: Qwen3VL, batch: dict[str, torch.Tensor], config: GenerationConfig, **options: Any
) -> Iterator[torch.Tensor]:
    """``generate_steps``' token ids [B] alone (the same keyword options)."""
    for step in generate_steps(model, batch, config, **options):
        yield step.token


@torch.inference_mode()
def generate_steps(
    model: Qwen3VL,
    batch: dict[str, torch.Tensor],
    config: GenerationConfig,
    *,
    prefill_chunk_size: int | None = 4096,
    visual_cache: VisualCache | None = None,
    prefix_cache: PrefixCache | None = None,
    vision_chunk_pairs: int | None = None,
    logprobs: bool = False,
) -> Iterator[Step]:
    """Yield each step's token ids [B] (with ``logprobs``, their log-probabilities: see
    ``Step``) until every row hit a stop token or the limit; finished rows get the pad token,
    log-probability 0.

    With ``prefix_cache``, a single unpadded prompt starts from the longest kept prefix of an
    earlier prompt with the same pixels and is kept in turn for later ones.
    """
    input_ids = batch["input_ids"].to(model.device)
    bsz = input_ids.shape[0]
    attention_mask = batch.get("attention_mask")
    attention_mask = (
        torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(model.device)
    )
    batch = {**batch, "input_ids": input_ids, "attention_mask": attention_mask}
    cache, prefix_key = _start_cache(model, batch, config.max_new_tokens, prefix_cache)
    logits, rope_deltas = prefill(
        model, batch, cache, chunk_size=prefill_chunk_size, visual_cache=visual_cache,
        vision_chunk_pairs=vision_chunk_pairs,
    )
    if prefix_cache is not None and prefix_key is not None:
        # Decoding writes only after the prompt, so the entry's first L tokens stay valid.
        prefix_cache.store(prefix_key, input_ids[0], cache)
    generator = None
    if config.do_sample and config.seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(config.seed)
    eos = torch.tensor(config.eos_token_ids or [-1], device=model.device)
    finished = torch.zeros(bsz, dtype=torch.bool, device=model.device)
    # Padding is not part of a prompt: stand a real token of the same row in for it.
    first_real = input_ids.gather(1, attention_mask.argmax(1, keepdim=True))
    seen = torch.where(attention_mask.bool(), input_ids, first_real)
    generated = input_ids.new_empty(bsz, 0)
    for step in range(config.max_new_tokens):
        raw = logits.float()
        token = next_tokens(apply_penalties(raw, seen, generated, config), config, generator)
        token = token.masked_fill(finished, config.pad_token_id)
        logprob = None
        if logprobs:
            logprob = (raw.gather(1, token[:, None])[:, 0] - torch.logsumexp(raw, -1)).masked_fill(finished, 0.0)
        yield Step(token, logprob)
        finished |= torch.isin(token, eos)
        if bool(finished.all()) or step == config.max_new_tokens - 1:
            return  # no forward pass for a token nobody will read
        generated = torch.cat([generated, token[:, None]], dim=1)
        seen = torch.cat([seen, token[:, None]], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(token[:, None])], dim=1)
        out = model(token[:, None], attention_mask, rope_deltas=rope_deltas, cache=cache)
        logits = out.logits[:, -1]
