"""The whole Qwen3-VL: vision tower + text decoder + LM head, with attribute names equal to
checkpoint keys (``model.visual.*``, ``model.language_model.*``, ``lm_head.weight``).

Unusual here: positions and rope deltas are arguments and return values, never state kept on
the module. A pass with an empty cache computes MRoPE positions from the prompt's placeholder
runs; a pass that continues a cache needs the ``rope_deltas`` its prefill returned.

Shapes: B batch, L tokens, D hidden, V vocab, N patches, M merged visual tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from .config import Qwen3VLConfig
from .decoder import DeepStack, Linear, TextModel
from .kv_cache import KVCache
from .positions import IMAGE, VIDEO, continuation_positions, rope_index
from .vision import VisionModel, VisualFeatures

log = logging.getLogger(__name__)

# Frame pairs per vision-tower pass: bounds its activations on hour-long videos.
VISION_CHUNK_PAIRS = 32


@dataclass
class ModelOutput:
    """``logits`` [B, L, V] (or only the last ``logits_to_keep``), ``rope_deltas`` [B, 1]."""

    logits: torch.Tensor
    rope_deltas: torch.Tensor
    hidden_states: torch.Tensor | None = None


class Qwen3VLModel(nn.Module):
    """``model``: the vision tower and the text decoder."""

    def __init__(self, config: Qwen3VLConfig) -> None:
        super().__init__()
        self.visual = VisionModel(config.vision)
        self.language_model = TextModel(config.text)


class Qwen3VL(nn.Module):
    """Qwen3-VL for conditional generation (dense or mixture-of-experts decoder)."""

    def __init__(self, config: Qwen3VLConfig) -> None:
        super().__init__()
        self.config = config
        self.model = Qwen3VLModel(config)
        self.lm_head = Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        # A plain attribute, not a submodule: the compiled step must not add state-dict keys.
        self._compiled_step: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None

    def tie_weights(self) -> None:
        """Share the LM head with the input embeddings (2B/4B checkpoints)."""
        self.lm_head.weight = self.model.language_model.embed_tokens.weight

    def set_attn_implementation(self, implementation: Literal["sdpa", "flash"]) -> None:
        self.model.visual.attn_implementation = implementation
        self.model.language_model.attn_implementation = implementation

    def compile_decoding(self, enabled: bool = True) -> None:
        """Run single-token decoding steps (the text decoder and the LM head) through
        ``torch.compile`` with dynamic shapes; prompts, chunks and training stay eager.

        The first step compiles (20-40 s cold, under 15 s with inductor's on-disk cache),
        then each step runs fused kernels instead of hundreds of small ops: worth it for long
        generations and servers, not for one short answer. If compiling fails (no C++ compiler,
        an unsupported backend), a warning is logged and decoding stays eager.
        """
        self._compiled_step = torch.compile(self._decode_step, dynamic=True) if enabled else None

    def _decode_step(
        self, embeds: torch.Tensor, position_ids: torch.Tensor, cache: KVCache, key_padding_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model.language_model(embeds, position_ids, cache=cache, key_padding_mask=key_padding_mask)
        return self.lm_head(hidden), hidden

    def _text_and_head(
        self, embeds: torch.Tensor, position_ids: torch.Tensor, cache: KVCache | None,
        key_padding_mask: torch.Tensor | None, deepstack: DeepStack | None, logits_to_keep: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        step = self._compiled_step
        if step is not None and cache is not None and cache.length > 0 and embeds.shape[1] == 1 and deepstack is None:
            length = cache.length
            cache.reserve(length + 1)  # any regrowth of the buffers happens here, outside the graph
            try:
                return step(embeds, position_ids, cache, key_padding_mask)
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
                log.warning("torch.compile of the decoding step failed (%s: %s); decoding runs eagerly",
                            type(exc).__name__, exc)
                self._compiled_step = None
                cache.truncate(length)  # a failed pass may have advanced the cache
        hidden = self.model.language_model(
            embeds, position_ids, cache=cache, key_padding_mask=key_padding_mask, deepstack=deepstack,
            keep=logits_to_keep or None,
        )
        return self.lm_head(hidden), hidden

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def encode_visual(
        self, pixels: torch.Tensor, grid_thw: torch.Tensor, *, chunk_pairs: int | None = VISION_CHUNK_PAIRS
    ) -> VisualFeatures:
        """Vision tower on processor patches [N, P] -> merged tokens and DeepStack features.

        ``chunk_pairs`` bounds the tower's activations to that many frame pairs per pass (the
        result is the same: attention never crosses a frame pair); None runs all at once.
        """
        return self.model.visual(pixels.to(self.device), grid_thw, chunk_pairs=chunk_pairs)

    def embed(
        self,
        input_ids: torch.Tensor,
        *,
        mm_token_type_ids: torch.Tensor | None = None,
        images: VisualFeatures | None = None,
        videos: VisualFeatures | None = None,
    ) -> tuple[torch.Tensor, DeepStack | None]:
        """Token embeddings [B, L, D] with visual tokens scattered in, and the DeepStack plan."""
        embeds = self.model.language_model.embed_tokens(input_ids.to(self.device))
        if images is None and videos is None:
            return embeds, None
        if mm_token_type_ids is None:
            raise ValueError("mm_token_type_ids is required when pixels are passed (the processor returns it)")
        types = mm_token_type_ids.to(self.device)
        visual_mask = torch.zeros_like(types, dtype=torch.bool)
        levels = len(self.config.vision.deepstack_visual_indexes)
        # Per visual position (in sequence order), which feature row to take.
        deepstack = None
        for kind, feats in ((IMAGE, images), (VIDEO, videos)):
            if feats is None:
                continue
            mask = types == kind
            if int(mask.sum()) != feats.tokens.shape[0]:
                name = "image" if kind == IMAGE else "video"
                raise ValueError(
                    f"{int(mask.sum())} {name} placeholder tokens but {feats.tokens.shape[0]} {name} features"
                )
            embeds = embeds.masked_scatter(mask[..., None], feats.tokens.to(embeds.dtype))
            visual_mask |= mask
        present = [feats for feats in (images, videos) if feats is not None]
        if len(present) == 1:
            # One kind only: its features are already in sequence order; no [M, D] copies.
            features = [f.to(embeds.dtype) for f in present[0].deepstack]
            return embeds, DeepStack(mask=visual_mask, features=features)
        joint = [embeds.new_zeros(int(visual_mask.sum()), embeds.shape[-1]) for _ in range(levels)]
        for kind, feats in ((IMAGE, images), (VIDEO, videos)):
            if feats is None:
                continue
            rows = (types == kind)[visual_mask]
            for level in range(levels):
                joint[level][rows] = feats.deepstack[level].to(embeds.dtype)
        deepstack = DeepStack(mask=visual_mask, features=joint)
        return embeds, deepstack

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        rope_deltas: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        vision_chunk_pairs: int | None = VISION_CHUNK_PAIRS,
    ) -> ModelOutput:
        """Logits for a prompt, or for new tokens continuing ``cache``.

        Args:
            input_ids: [B, L].
            attention_mask: [B, L_total] (cache + new tokens), 1 for real tokens.
            mm_token_type_ids: [B, L], 0 text / 1 image / 2 video placeholder.
            pixel_values, image_grid_thw: image patches [N, P] and grids [n, 3].
            pixel_values_videos, video_grid_thw: video patches and grids.
            position_ids: [3, B, L] to override the computed MRoPE positions.
            rope_deltas: [B, 1] from the prefill, required to continue a non-empty cache.
            cache: a KV cache, written and advanced by L.
            logits_to_keep: if > 0, compute logits only for the last that many tokens.
            vision_chunk_pairs: frame pairs per vision-tower pass (``encode_visual``); None runs
                them all at once (training batches: fewer, larger kernels).
        """
        chunk = vision_chunk_pairs
        images = self.encode_visual(pixel_values, image_grid_thw, chunk_pairs=chunk) if pixel_values is not None else None
        videos = (
            self.encode_visual(pixel_values_videos, video_grid_thw, chunk_pairs=chunk)
            if pixel_values_videos is not None else None
        )
        embeds, deepstack = self.embed(
            input_ids, mm_token_type_ids=mm_token_type_ids, images=images, videos=videos
        )
        position_ids, rope_deltas = self.positions(
            input_ids, attention_mask, mm_token_type_ids, image_grid_thw, video_grid_thw,
            position_ids=position_ids, rope_deltas=rope_deltas, cache=cache,
        )
        logits, hidden = self._text_and_head(
            embeds, position_ids.to(self.device), cache, padding_mask(attention_mask, self.device), deepstack,
            logits_to_keep,
        )
        return ModelOutput(logits=logits, rope_deltas=rope_deltas, hidden_states=hidden)

    def positions(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        mm_token_type_ids: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
        *,
        position_ids: torch.Tensor | None,
        rope_deltas: torch.Tensor | None,
        cache: KVCache | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MRoPE positions [3, B, L] for this pass and the rope deltas [B, 1]."""
        batch, length = input_ids.shape
        past = cache.length if cache is not None else 0
        if position_ids is not None:
            deltas = rope_deltas if rope_deltas is not None else torch.zeros(batch, 1, dtype=torch.long)
            return position_ids, deltas
        if past == 0:
            mask = attention_mask[:, -length:] if attention_mask is not None else None
            return rope_index(
                input_ids.cpu(),
                mm_token_type_ids.cpu() if mm_token_type_ids is not None else None,
                image_grid_thw=image_grid_thw.cpu() if image_grid_thw is not None else None,
                video_grid_thw=video_grid_thw.cpu() if video_grid_thw is not None else None,
                attention_mask=mask.cpu() if mask is not None else None,
                spatial_merge_size=self.config.vision.spatial_merge_size,
            )
        if rope_deltas is None:
            raise ValueError("rope_deltas (returned by the prefill) is required to continue a cache")
        if attention_mask is None:
            attention_mask = torch.ones(batch, past + length, dtype=torch.long)
        return continuation_positions(attention_mask.cpu(), length, rope_deltas.cpu()), rope_deltas


def padding_mask(attention_mask: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """The bool key-padding mask, or None when nothing is padded (lets attention skip masks)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.to(device=device, dtype=torch.bool)
