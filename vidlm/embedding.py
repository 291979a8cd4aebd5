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

from .attention import AttnImplementation, resolve_attn_implementation
from .model import Qwen3VL
from .processor import Processor, ProcessorConfig
from .tokenizer import Tokenizer
from .weights import DTYPES, DType, build_model, resolve_checkpoint

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
        conversations = [embedding_messages(item) for item in inputs]
        rows = [self._pooled(conversations[i : i + self.batch_size])
                for i in range(0, len(conversations), self.batch_size)]
        if not rows:
            return torch.zeros(0, dim or self.dim)
        pooled = torch.cat(rows)
        if dim is not None:
            pooled = pooled[:, :dim]
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _pooled(self, conversations: list[list[dict[str, Any]]]) -> torch.Tensor:
        """Last-token final hidden states ``[b, D]`` (float32) of one left-padded batch."""
        processor = self.processor.with_config(video_pixel_dtype="uint8")
        batch = processor(conversations, add_generation_prompt=True, padding_side="left")
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        out = self.model(**batch, logits_to_keep=1)
        return out.hidden_states[:, -1].float().cpu()


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
    from .api import resolve_device

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    torch_device = resolve_device(device)
    if dtype == "auto":
        dtype = "bfloat16" if torch_device.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)} or 'auto'")
    torch_dtype = DTYPES[dtype]
    implementation = resolve_attn_implementation(attn_implementation, torch_device, torch_dtype)
    folder = resolve_checkpoint(model, revision=revision)
    network = build_model(folder, dtype=torch_dtype, device=torch_device, head_optional=True)
    network.set_attn_implementation(implementation)
    processor = Processor(Tokenizer.from_dir(folder), ProcessorConfig.from_dir(folder))
    network.model.visual.pixel_norm = processor.config.pixel_norm
    log.info("embedder %s on %s (%s, dim %d)", folder, torch_device, dtype, network.config.text.hidden_size)
    return VideoEmbedder(network, processor, folder, batch_size=batch_size)
