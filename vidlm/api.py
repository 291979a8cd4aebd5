"""The public entry point: ``vidlm.load`` -> ``VideoLM`` (model + processor + tokenizer).

Unusual here: the core takes frames, never files. A video part may name a file only when a
``video_reader`` (path -> frames uint8 [T, H, W, 3], seconds [T]) was given to ``load``; the
application wires ingest's decoder in through it, so this package never decodes video.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .attention import AttnImplementation, resolve_attn_implementation
from .generate import GenerationConfig, generate_steps
from .model import Qwen3VL
from .prefix_cache import PrefixCache
from .processor import Processor, ProcessorConfig
from .tokenizer import Tokenizer
from .visual_cache import VisualCache, VisualDiskCache
from .weights import DTYPES, CheckpointError, DType, build_model, resolve_checkpoint

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "builtin"
VideoReader = Callable[[str | Path], tuple[np.ndarray, np.ndarray]]
Conversation = Sequence[Mapping[str, Any]]
Messages = Conversation | Sequence[Conversation]


@dataclass(frozen=True)
class Answer:
    """One conversation's answer with what the model thought of each token it wrote.

    ``token_ids`` are every generated token, the stop token included when it came (``text``
    leaves it out); ``logprobs`` their log-probabilities under the model's own next-token
    distribution (see ``vidlm.generate.Step``).
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]

    @property
    def confidence(self) -> float:
        """The probability of the least likely token written (1.0 for no tokens): low when the
        model had to guess somewhere, e.g. at the times of a span it cannot place."""
        return math.exp(min(self.logprobs, default=0.0))


class AnswerStream(Iterator[str]):
    """``VideoLM.stream``'s text pieces, in order; ``answer`` is None until the last is read."""

    def __init__(self, pieces: Generator[str, None, Answer | None]) -> None:
        self._pieces = pieces
        self.answer: Answer | None = None

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as done:
            if self.answer is None:  # a spent generator stops again with no value
                self.answer = done.value
            raise


@dataclass
class VideoLM:
    """A loaded model with its processor; ``generate``, ``answer`` and ``stream`` answer chat messages."""

    model: Qwen3VL
    processor: Processor
    tokenizer: Tokenizer
    generation_config: GenerationConfig
    path: Path
    video_reader: VideoReader | None = None
    prefill_chunk_size: int | None = 4096
    visual_cache: VisualCache = field(default_factory=VisualCache)
    prefix_cache: PrefixCache | None = None
    vision_chunk_pairs: int | None = None

    @property
    def model_id(self) -> str:
        """A stable name for caches: the folder name of the checkpoint."""
        return self.path.name

    def prepare(self, messages: Messages, *, add_generation_prompt: bool = True) -> dict[str, torch.Tensor]:
        """Processor tensors for the messages, on the model's device, as this model takes them.

        Video rows stay uint8 (a quarter of the float32 rows' memory, which for a long video is
        most of the prompt's); the vision tower normalises them chunk by chunk with its
        checkpoint's pixel settings, to the same float rows. ``processor`` itself keeps the
        reference's float32 output, for batches handed to other stacks.
        """
        processor = self.processor.with_config(video_pixel_dtype="uint8")
        batch = processor(self._read_videos(messages), add_generation_prompt=add_generation_prompt)
        return {k: v.to(self.model.device) for k, v in batch.items()}

    def generate(
        self, messages: Messages, *, max_new_tokens: int | None = None, **sampling: Any
    ) -> str | list[str]:
        """Answer one conversation (-> str) or a batch of them (-> list[str]).

        ``sampling`` overrides the checkpoint's generation settings (do_sample, temperature,
        top_k, top_p, repetition_penalty, presence_penalty, seed, eos_token_ids).
        """
        texts = [a.text for a in self._answers(messages, max_new_tokens, sampling)]
        return texts[0] if _is_single(messages) else texts

    def answer(self, messages: Conversation, *, max_new_tokens: int | None = None, **sampling: Any) -> Answer:
        """``generate`` for one conversation, with each written token's log-probability."""
        if not _is_single(messages):
            raise ValueError("answer() takes one conversation; use generate() for a batch")
        return self._answers(messages, max_new_tokens, sampling)[0]

    def _answers(self, messages: Messages, max_new_tokens: int | None, sampling: dict[str, Any]) -> list[Answer]:
        batch = self.prepare(messages)
        config = self.generation_config.updated(max_new_tokens=max_new_tokens, **sampling)
        steps = list(generate_steps(self.model, batch, config, logprobs=True, **self._generation_caches()))
        if not steps:
            return [Answer("", (), ()) for _ in range(batch["input_ids"].shape[0])]
        rows = torch.stack([s.token for s in steps], dim=1).tolist()
        logprobs = torch.stack([s.logprob for s in steps if s.logprob is not None], dim=1).tolist()
        return [self._answer_of(row, lps, config.eos_token_ids) for row, lps in zip(rows, logprobs, strict=True)]

    def _answer_of(self, ids: list[int], logprobs: list[float], stop: tuple[int, ...]) -> Answer:
        """The Answer for generated ``ids``: its text up to the first stop token, its tokens
        through it (the padding of a finished batch row after it was not written)."""
        text_ids = _until_stop(ids, stop)
        n = min(len(text_ids) + 1, len(ids))
        return Answer(self.tokenizer.decode(text_ids, skip_special_tokens=True), tuple(ids[:n]), tuple(logprobs[:n]))

    def stream(self, messages: Conversation, *, max_new_tokens: int | None = None, **sampling: Any) -> AnswerStream:
        """The answer to one conversation in text pieces as tokens are generated (iterate the
        result); once every piece is read, its ``answer`` is what ``answer()`` returns."""
        if not _is_single(messages):
            raise ValueError("stream() takes one conversation; use generate() for a batch")
        return AnswerStream(self._stream(messages, max_new_tokens, sampling))

    def _stream(
        self, messages: Conversation, max_new_tokens: int | None, sampling: dict[str, Any]
    ) -> Generator[str, None, Answer]:
        batch = self.prepare(messages)
        config = self.generation_config.updated(max_new_tokens=max_new_tokens, **sampling)
        decoder = self.tokenizer.stream_decoder(skip_special_tokens=True)
        ids: list[int] = []
        logprobs: list[float] = []
        for step in generate_steps(self.model, batch, config, logprobs=True, **self._generation_caches()):
            ids.append(int(step.token[0]))
            logprobs.append(float(step.logprob[0]) if step.logprob is not None else 0.0)
            if ids[-1] in config.eos_token_ids:
                break
            piece = decoder.push(ids[-1])
            if piece:
                yield piece
        tail = decoder.finish()
        if tail:
            yield tail
        return self._answer_of(ids, logprobs, config.eos_token_ids)

    def _generation_caches(self) -> dict[str, Any]:
        """The chunking and cache settings ``generate_steps`` takes from this object."""
        return dict(
            prefill_chunk_size=self.prefill_chunk_size, visual_cache=self.visual_cache,
            prefix_cache=self.prefix_cache, vision_chunk_pairs=self.vision_chunk_pairs,
        )

    def _read_videos(self, messages: Messages) -> Messages:
        """Replace video parts that name a file by their frames and seconds."""
        conversations = [messages] if _is_single(messages) else list(messages)
        out = [[_with_frames(m, self.video_reader) for m in conv] for conv in conversations]
        return out[0] if _is_single(messages) else out


def _is_single(messages: Messages) -> bool:
    return len(messages) > 0 and isinstance(messages[0], Mapping)


def _until_stop(ids: list[int], stop: tuple[int, ...]) -> list[int]:
    for i, token in enumerate(ids):
        if token in stop:
            return ids[:i]
    return ids


def _with_frames(message: Mapping[str, Any], reader: VideoReader | None) -> Mapping[str, Any]:
    content = message.get("content")
    if isinstance(content, str) or content is None:
        return message
    parts = []
    for part in content:
        video = part.get("video") if isinstance(part, Mapping) else None
        if isinstance(video, (str, Path)):
            if reader is None:
                raise ValueError(
                    f"video part names a file ({video}); vidlm takes frames. Pass frames and "
                    "'timestamps', or give vidlm.load(..., video_reader=...) a reader"
                )
            frames, seconds = reader(video)
            part = {**part, "video": frames, "timestamps": seconds}
        parts.append(part)
    return {**message, "content": parts}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: CUDA is not available here; use 'cpu' or 'auto'")
    return resolved


@dataclass(frozen=True)
class Runtime:
    """Where and how a checkpoint runs: its device, dtype and attention implementation."""

    device: torch.device
    dtype: torch.dtype
    attn_implementation: Literal["sdpa", "flash"]

    @classmethod
    def resolve(
        cls, device: str | torch.device, dtype: DType | Literal["auto"], attn_implementation: AttnImplementation
    ) -> Runtime:
        """``load``'s device, dtype and attention arguments, checked ("auto" resolved).

        Raises:
            ValueError: a bad device, dtype or attention choice.
        """
        torch_device = resolve_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if torch_device.type == "cuda" else "float32"
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)} or 'auto'")
        implementation = resolve_attn_implementation(attn_implementation, torch_device, DTYPES[dtype])
        return cls(torch_device, DTYPES[dtype], implementation)


def load_network(
    folder: Path, runtime: Runtime, *, head_optional: bool = False, **processor_overrides: Any
) -> tuple[Qwen3VL, Processor]:
    """A checkpoint folder's model (on ``runtime``) and processor; the vision tower normalises
    uint8 video rows with the processor's own pixel settings.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
    """
    network = build_model(folder, dtype=runtime.dtype, device=runtime.device, head_optional=head_optional)
    network.set_attn_implementation(runtime.attn_implementation)
    processor = Processor(Tokenizer.from_dir(folder), ProcessorConfig.from_dir(folder, **processor_overrides))
    network.model.visual.pixel_norm = processor.config.pixel_norm
    log.info("model %s on %s (%s, attention %s)", folder, runtime.device, runtime.dtype, runtime.attn_implementation)
    return network, processor


def load(
    model: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: DType | Literal["auto"] = "float32",
    attn_implementation: AttnImplementation = "auto",
    video_reader: VideoReader | None = None,
    revision: str | None = None,
    video_prompt_layout: Literal["qwen", "transformers"] | None = None,
    cache_dir: str | Path | None = None,
    prefix_cache_bytes: int = 0,
    compile_decoding: bool = False,
) -> VideoLM:
    """Load a checkpoint folder, a hub repo id, or (None) the built-in tiny model.

    Args:
        model: a folder in the released format, a hub repo id, or None for the built-in model.
        device: "cpu", "cuda", "cuda:N" or "auto".
        dtype: "float32", "bfloat16", "float16", or "auto" (bfloat16 on CUDA, else float32).
        attn_implementation: "auto" (flash-attn on CUDA when installed), "sdpa" or "flash".
        video_reader: path -> (frames uint8 [T, H, W, 3], seconds [T]) for video parts naming files.
        revision: hub revision when downloading.
        video_prompt_layout: override the processor's layout ("qwen" default).
        cache_dir: keep vision-tower outputs on disk here, keyed by model and patch content.
        prefix_cache_bytes: keep prompt KV caches up to this many bytes (LRU) so follow-up
            questions about the same video prefill only their own tokens; 0 disables it.
        compile_decoding: run decoding steps through ``torch.compile``
            (``Qwen3VL.compile_decoding``): the first answer waits for the compiler, later
            tokens come faster. For long generations and servers.

    Raises:
        CheckpointError: the checkpoint cannot be found, downloaded or loaded.
        ValueError: a bad device, dtype or attention choice.
    """
    runtime = Runtime.resolve(device, dtype, attn_implementation)
    folder = builtin_checkpoint() if model is None else resolve_checkpoint(model, revision=revision)
    overrides = {"video_prompt_layout": video_prompt_layout} if video_prompt_layout else {}
    network, processor = load_network(folder, runtime, **overrides)
    network.compile_decoding(compile_decoding)
    tokenizer = processor.tokenizer
    generation = GenerationConfig.from_dir(folder)
    if not generation.eos_token_ids and tokenizer.eos_token_id is not None:
        generation = generation.updated(eos_token_ids=(tokenizer.eos_token_id,))
    disk = VisualDiskCache(Path(cache_dir)) if cache_dir is not None else None
    visual_cache = VisualCache(disk=disk, namespace=folder.name)
    prefixes = PrefixCache(max_bytes=prefix_cache_bytes) if prefix_cache_bytes > 0 else None
    return VideoLM(
        network, processor, tokenizer, generation, folder, video_reader,
        visual_cache=visual_cache, prefix_cache=prefixes,
    )


def builtin_checkpoint() -> Path:
    """The folder of the built-in tiny checkpoint shipped inside the package."""
    if not (BUILTIN_DIR / "config.json").is_file():
        raise CheckpointError(
            f"the built-in checkpoint is not installed at {BUILTIN_DIR}; pass a model folder or hub id"
        )
    return BUILTIN_DIR
