"""vidlm: our PyTorch implementation of Qwen3-VL (dense and mixture-of-experts).

    import vidlm
    lm = vidlm.load("path/or/hub-id", device="cpu", dtype="float32")
    batch = lm.processor(messages)            # input_ids, attention_mask, pixel_values, ...
    logits = lm.model(**batch).logits         # [B, T, vocab]
    text = lm.generate(messages, max_new_tokens=64)
    vectors = vidlm.load_embedder("Qwen/Qwen3-VL-Embedding-2B").embed([{"text": "a dog jumps"}])
"""

from .api import Answer, AnswerStream, VideoLM, load
from .config import Qwen3VLConfig, RopeConfig, TextConfig, VisionConfig
from .embedding import VideoEmbedder, load_embedder
from .generate import GenerationConfig
from .kv_cache import KVCache
from .model import Qwen3VL
from .presets import PRESETS, preset
from .processor import Processor, ProcessorConfig
from .tokenizer import Tokenizer
from .weights import CheckpointError

__all__ = [
    "Answer",
    "AnswerStream",
    "PRESETS",
    "CheckpointError",
    "GenerationConfig",
    "KVCache",
    "Processor",
    "ProcessorConfig",
    "Qwen3VL",
    "Qwen3VLConfig",
    "RopeConfig",
    "TextConfig",
    "Tokenizer",
    "VideoEmbedder",
    "VideoLM",
    "VisionConfig",
    "load",
    "load_embedder",
    "preset",
]
