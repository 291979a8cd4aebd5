"""Multimodal embeddings from a Qwen3-VL-Embedding checkpoint (reference doc §11).

    emb = vidlm.load_embedder("Qwen/Qwen3-VL-Embedding-2B")
    docs = emb.embed([{"video": frames, "timestamps": seconds}, {"text": "a caption"}])
    query = emb.embed([{"text": "when does the dog jump", "instruction": emb.query_instruction}])
    scores = query @ docs.T                               # cosine: rows are unit vectors

What is unusual here:
- The checkpoint is an ordinary Qwen3-VL folder (``Qwen3VLForConditionalGeneration``); only the
  prompt and the pooling differ from generation. Each input becomes one conversation: a system
  turn holding the instruction (a final "." added when it ends without punctuation), a user
  turn with its videos, then images, then text ("NULL" when it has none), and the assistant
  prefix. The vector is the final layer's normed hidden state at the last token, L2-normalised.
- A checkpoint without an LM head loads (embedding exports may drop it); the head is never used.
- Inputs are batched with left padding, so the last token is the last position of every row.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .api import Runtime, load_network
from .attention import AttnImplementation
from .model import Qwen3VL
from .processor import Processor
from .weights import DType, resolve_checkpoint

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = "Represent the user's input."
# For text queries against video documents (the reference lets the caller choose the wording).
QUERY_INSTRUCTION = "Retrieve videos relevant to the user's query."
EMPTY_INPUT_TEXT = "NULL"
_INPUT_KEYS = frozenset({"text", "image", "video", "timestamps", "instruction"})


@dataclass
class VideoEmbedder:
    """A loaded Qwen3-VL-Embedding model; ``embed`` maps inputs to unit vectors.

    An input is a mapping with any of ``text`` (str), ``image`` (PIL image or uint8
    ``[H, W, 3]``), ``video`` (uint8 ``[T, H, W, 3]`` or ``[T, 3, H, W]``) with ``timestamps``
    (seconds ``[T]``), and ``instruction`` (str; ``DEFAULT_INSTRUCTION`` when absent).
    """

    model: Qwen3VL
    processor: Processor
    path: Path
    query_instruction: str = QUERY_INSTRUCTION
    batch_size: int = 8

    @property
    def model_id(self) -> str:
        """A stable name: the checkpoint's folder name."""
        return self.path.name

    @property
    def dim(self) -> int:
        """The full embedding width (the decoder's hidden size)."""
        return int(self.model.config.text.hidden_size)

    @torch.no_grad()
    def embed(self, inputs: Sequence[Mapping[str, Any]], *, dim: int | None = None) -> torch.Tensor:
        """Unit vectors ``[N, dim]`` (float32, on CPU) for the inputs, in order.

        Args:
            inputs: mappings as the class docstring describes.
            dim: keep the first ``dim`` dimensions and re-normalise (Matryoshka); None: all.

        Raises:
            ValueError: an unknown key, a video without timestamps, or a bad ``dim``.
        """
        if dim is not None and not 1 <= dim <= self.dim:
            raise ValueError(f"dim={dim}: expected 1..{self.dim}")
        items = list(inputs)
        rows = [last_token_states(self.model, self.processor, items[i : i + self.batch_size]).cpu()
                for i in range(0, len(items), self.batch_size)]
        if not rows:
            return torch.zeros(0, dim or self.dim)
        pooled = torch.cat(rows)
        if dim is not None:
            pooled = pooled[:, :dim]
        return torch.nn.functional.normalize(pooled, dim=-1)

    def embed_queries(self, texts: Sequence[str], *, dim: int | None = None) -> torch.Tensor:
        """``embed`` of search queries: each text under ``query_instruction``."""
        return self.embed([query_input(t, self.query_instruction) for t in texts], dim=dim)


def last_token_states(model: Qwen3VL, processor: Processor, inputs: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Final normed hidden states ``[N, D]`` (float32, on the model's device, not normalised) at
    the last token of each input's embedding prompt, in one left-padded batch; differentiable.

    Raises:
        ValueError: as ``embedding_messages``.
    """
    conversations = [embedding_messages(item) for item in inputs]
    uint8_rows = processor.with_config(video_pixel_dtype="uint8")  # the tower normalises them
    batch = uint8_rows(conversations, add_generation_prompt=True, padding_side="left")
    out = model(**{k: v.to(model.device) for k, v in batch.items()}, logits_to_keep=1)
    return out.hidden_states[:, -1].float()


def query_input(text: str, instruction: str = QUERY_INSTRUCTION) -> dict[str, str]:
    """A search query as an embedding input: the text under the query instruction."""
    return {"text": text, "instruction": instruction}


def embedding_messages(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conversation one input is embedded as (instruction, then videos, images, text).

    Raises:
        ValueError: an unknown key, or a video without its timestamps.
    """
    unknown = set(item) - _INPUT_KEYS
    if unknown:
        raise ValueError(f"embedding input has unknown keys {sorted(unknown)}; allowed: {sorted(_INPUT_KEYS)}")
    if ("video" in item) != ("timestamps" in item):
        raise ValueError("an embedding input's 'video' needs its 'timestamps' (seconds per frame)")
    content: list[dict[str, Any]] = []
    if item.get("video") is not None:
        content.append({"type": "video", "video": item["video"], "timestamps": item["timestamps"]})
    if item.get("image") is not None:
        content.append({"type": "image", "image": item["image"]})
    text = item.get("text")
    if text or not content:
        content.append({"type": "text", "text": text or EMPTY_INPUT_TEXT})
    instruction = with_final_punctuation(item.get("instruction") or DEFAULT_INSTRUCTION)
    return [
        {"role": "system", "content": [{"type": "text", "text": instruction}]},
        {"role": "user", "content": content},
    ]


def with_final_punctuation(instruction: str) -> str:
    """The instruction, stripped, ending in punctuation (a "." added when it does not)."""
    text = instruction.strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text


def load_embedder(
    model: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: DType | Literal["auto"] = "float32",
    attn_implementation: AttnImplementation = "auto",
    revision: str | None = None,
    batch_size: int = 8,
) -> VideoEmbedder:
    """Load a Qwen3-VL-Embedding checkpoint: a folder in the released format or a hub repo id.

    Args:
        model: the folder or hub id (e.g. "Qwen/Qwen3-VL-Embedding-2B").
        device, dtype, attn_implementation, revision: as for ``vidlm.load``.
        batch_size: inputs per forward pass.

    Raises:
        CheckpointError: the checkpoint cannot be found, downloaded or loaded.
        ValueError: a bad device, dtype, attention choice or batch size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    runtime = Runtime.resolve(device, dtype, attn_implementation)
    folder = resolve_checkpoint(model, revision=revision)
    network, processor = load_network(folder, runtime, head_optional=True)
    return VideoEmbedder(network, processor, folder, batch_size=batch_size)
