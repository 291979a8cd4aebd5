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

from collections.abc import Iterator, Sequence

import torch

TEXT, IMAGE, VIDEO = 0, 1, 2


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
    token_types: list[int], grids: dict[int, Iterator[Sequence[int]]], spatial_merge_size: int
) -> torch.Tensor:
    """Positions [3, n] for one unpadded sequence; consumes one grid per visual run.

    A text run from position ``cur`` gets ``cur, cur + 1, ...`` on all three axes; a visual
    run with a merged grid of h' x w' tokens gives token (r, c) ``(cur, cur + r, cur + c)``.
    The runs' starting positions are plain integers; the tokens are then placed with a few
    whole-sequence tensor ops, not several per run (a video prompt has two runs per frame pair).
    """
    starts, bases, widths = [], [], []  # per run: first token, position at its start, merged width (0: text)
    cur = 0
    for kind, start, end in _runs(token_types):
        starts.append(start)
        bases.append(cur)
        if kind == TEXT:
            widths.append(0)
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
        widths.append(mw)
        cur += max(mh, mw)
    if not starts:
        return torch.zeros(3, 0, dtype=torch.long)
    first = torch.tensor(starts)
    run = torch.repeat_interleave(torch.arange(len(starts)), torch.diff(first, append=torch.tensor([len(token_types)])))
    within = torch.arange(len(token_types)) - first[run]
    base, width = torch.tensor(bases)[run], torch.tensor(widths)[run]
    visual = width > 0
    rows = torch.where(visual, within // width.clamp(min=1), within)
    cols = torch.where(visual, within % width.clamp(min=1), within)
    return torch.stack((torch.where(visual, base, base + within), base + rows, base + cols))


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
        IMAGE: iter(image_grid_thw.tolist() if image_grid_thw is not None else ()),
        VIDEO: iter(frame_pair_grids(video_grid_thw).tolist() if video_grid_thw is not None else ()),
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
