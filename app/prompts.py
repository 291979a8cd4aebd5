"""Chat messages the pipeline sends to the model.

Unusual here: ``CAPTION_PROMPT`` must stay one of the prompts the built-in model was trained on
(``recipe.tasks.CAPTION_TEMPLATES``; a test checks it), or the model's dense captions degrade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ingest

CAPTION_PROMPT = "Describe every event in the video with its start and end time."
EMPTY_CAPTION = "(no events described)"


def video_part(batch: ingest.FrameBatch) -> dict[str, Any]:
    """A chat video part from decoded frames (uint8 [T, 3, H, W], absolute seconds)."""
    return {"type": "video", "video": batch.frames, "timestamps": batch.seconds}


def question_messages(batches: Sequence[ingest.FrameBatch], question: str) -> list[dict[str, Any]]:
    """One user turn: every non-empty video part in order, then the question."""
    parts = [video_part(b) for b in batches if len(b)] + [{"type": "text", "text": question}]
    return [{"role": "user", "content": parts}]
