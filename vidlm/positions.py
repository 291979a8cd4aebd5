"""3-axis (t, h, w) position ids for the decoder's interleaved MRoPE, and rope deltas.

Unusual here: a video is not one 3D block. Each frame pair is its own "image" of grid
``(1, h, w)`` because the prompt puts a ``<t seconds>`` text before each pair; so the t axis
carries no frame index and time lives in the text. A visual run starting at position ``cur``
gives token (r, c) the ids ``(cur, cur + r, cur + c)`` and advances ``cur`` by
``max(h', w')`` (merged grid), so visual tokens use fewer positions than their count; the
difference is the *rope delta* added to every later (decoded) position.

Shapes: B batch, L tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

TEXT, IMAGE, VIDEO = 0, 1, 2


def text_span(start: int, length: int) -> torch.Tensor:
    """Positions [3, length] of a text run: the same 1D ids on all three axes."""
    return torch.arange(start, start + length).expand(3, -1)


def visual_span(start: int, merged_h: int, merged_w: int) -> torch.Tensor:
    """Positions [3, h'*w'] of one image or frame pair with a merged grid of h' x w' tokens."""
    rows = torch.arange(merged_h).repeat_interleave(merged_w)
    cols = torch.arange(merged_w).repeat(merged_h)
    return torch.stack((torch.zeros_like(rows), rows, cols)) + start


def frame_pair_grids(video_grid_thw: torch.Tensor) -> torch.Tensor:
    """Split each video grid [T, h, w] into T grids [1, h, w], in order."""
    grids = torch.repeat_interleave(video_grid_thw, video_grid_thw[:, 0], dim=0).clone()
    grids[:, 0] = 1
    return grids


def _runs(token_types: list[int]) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) for each run of equal token types."""
    start = 0
    for i in range(1, len(token_types) + 1):
        if i == len(token_types) or token_types[i] != token_types[start]:
            yield token_types[start], start, i
            start = i


def sequence_positions(
    token_types: list[int], grids: dict[int, Iterator[torch.Tensor]], spatial_merge_size: int
) -> torch.Tensor:
    """Positions [3, n] for one unpadded sequence; consumes one grid per visual run."""
    spans, cur = [], 0
    for kind, start, end in _runs(token_types):
        if kind == TEXT:
            spans.append(text_span(cur, end - start))
            cur += end - start
            continue
        try:
            _, h, w = (int(v) for v in next(grids[kind]))
        except StopIteration:
            raise ValueError(f"more {'image' if kind == IMAGE else 'video'} runs in the prompt than grids") from None
        mh, mw = h // spatial_merge_size, w // spatial_merge_size
        if mh * mw != end - start:
            raise ValueError(
                f"a visual run of {end - start} placeholder tokens does not match its grid "
                f"(1, {h}, {w}) = {mh * mw} merged tokens"
            )
        spans.append(visual_span(cur, mh, mw))
        cur += max(mh, mw)
    if not spans:
        return torch.zeros(3, 0, dtype=torch.long)
    return torch.cat(spans, dim=1)


def rope_index(
    input_ids: torch.Tensor,
    mm_token_type_ids: torch.Tensor | None,
    *,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    spatial_merge_size: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids [3, B, L] and rope deltas [B, 1] for a (possibly left/right padded) batch.

    Args:
        input_ids: [B, L] token ids.
        mm_token_type_ids: [B, L], 0 text, 1 image placeholder, 2 video placeholder; None for
            text-only prompts.
        image_grid_thw: [n_images, 3] patch grids, in prompt order over the batch.
        video_grid_thw: [n_videos, 3] patch grids, in prompt order over the batch.
        attention_mask: [B, L], 1 for real tokens; padded positions get position 0.
        spatial_merge_size: patches per merged token along each side.

    Raises:
        ValueError: placeholders and grids disagree.
    """
    batch, length = input_ids.shape
    if mm_token_type_ids is None:
        mm_token_type_ids = torch.zeros_like(input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    grids = {
        IMAGE: iter(image_grid_thw if image_grid_thw is not None else ()),
        VIDEO: iter(frame_pair_grids(video_grid_thw) if video_grid_thw is not None else ()),
    }
    position_ids = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = torch.zeros(batch, 1, dtype=torch.long)
    for b in range(batch):
        valid = attention_mask[b].bool().cpu()
        types = mm_token_type_ids[b].cpu()[valid].tolist()
        positions = sequence_positions(types, grids, spatial_merge_size)
        position_ids[:, b, valid] = positions
        if positions.numel():
            deltas[b, 0] = positions.max() + 1 - len(types)
    return position_ids.to(input_ids.device), deltas.to(input_ids.device)


def continuation_positions(
    attention_mask: torch.Tensor, new_tokens: int, rope_deltas: torch.Tensor
) -> torch.Tensor:
    """Positions [3, B, new_tokens] for tokens appended after a prefix described by its mask.

    ``attention_mask`` [B, L_total] covers the prefix and the new tokens; each new token's
    position is its index among the sequence's real tokens plus the sequence's rope delta.
    """
    index = attention_mask.long().cumsum(-1) - 1
    positions = index[:, -new_tokens:] + rope_deltas
    return positions.unsqueeze(0).expand(3, -1, -1)
