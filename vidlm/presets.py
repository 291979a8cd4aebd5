"""Configurations of the released checkpoints, keyed by hub repo id, plus tiny ones for tests.

Values are from the reference doc §1.4 (public copies of each repo's ``config.json``; the URL
is kept beside each entry). A preset builds the model skeleton without downloading anything,
e.g. to count parameters or to plan memory; loading a checkpoint always reads its own
``config.json``.
"""

from __future__ import annotations

from typing import Any

from .config import Qwen3VLConfig, RopeConfig, TextConfig, VisionConfig

_HUB = "https://huggingface.co/{}/blob/main/config.json"

_SMALL_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                     deepstack_visual_indexes=(5, 11, 17))
_LARGE_VISION = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
                     deepstack_visual_indexes=(8, 16, 24))

_RELEASED: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-VL-2B-Instruct": dict(
        text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128),
        vision=_SMALL_VISION, tie=True),
    "Qwen/Qwen3-VL-4B-Instruct": dict(
        text=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128),
        vision=_SMALL_VISION, tie=True),
    "Qwen/Qwen3-VL-8B-Instruct": dict(
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                  num_attention_heads=32, num_key_value_heads=8, head_dim=128),
        vision=_LARGE_VISION, tie=False),
    "Qwen/Qwen3-VL-32B-Instruct": dict(
        text=dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64,
                  num_attention_heads=64, num_key_value_heads=8, head_dim=128),
        vision=_LARGE_VISION, tie=False),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": dict(
        text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                  num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                  num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768),
        vision=_LARGE_VISION, tie=False),
    # Third-party copies only (reference doc §13): re-check against the hub file before relying
    # on it for anything but sizing.
    "Qwen/Qwen3-VL-235B-A22B-Instruct": dict(
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=94,
                  num_attention_heads=64, num_key_value_heads=4, head_dim=128,
                  num_experts=128, num_experts_per_tok=8, moe_intermediate_size=1536),
        vision=_LARGE_VISION, tie=False),
}

# Same shapes as the tiny reference test models (reference doc §12), vocab of the tiny tokenizer.
_TINY_TEXT = dict(vocab_size=264, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=4096)
_TINY_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2,
                    out_hidden_size=64, num_position_embeddings=64, deepstack_visual_indexes=(0, 1))
_TINY_IDS = dict(image_token_id=262, video_token_id=263, vision_start_token_id=259,
                 vision_end_token_id=260)


def _released(repo_id: str) -> Qwen3VLConfig:
    spec = _RELEASED[repo_id]
    text = TextConfig(vocab_size=151936, max_position_embeddings=262144, rope=RopeConfig(), **spec["text"])
    vision = VisionConfig(out_hidden_size=text.hidden_size, **spec["vision"])
    return Qwen3VLConfig(text=text, vision=vision, tie_word_embeddings=spec["tie"])


def _tiny(moe: bool) -> Qwen3VLConfig:
    extra = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24) if moe else {}
    text = TextConfig(rope=RopeConfig(mrope_section=(4, 2, 2)), **_TINY_TEXT, **extra)
    return Qwen3VLConfig(text=text, vision=VisionConfig(**_TINY_VISION), **_TINY_IDS)


PRESETS: dict[str, str] = {repo: _HUB.format(repo) for repo in _RELEASED} | {
    "tiny": "tests: dense, reference doc §12",
    "tiny-moe": "tests: mixture-of-experts, reference doc §12",
}


def preset(name: str) -> Qwen3VLConfig:
    """The configuration of a released checkpoint (hub repo id) or a tiny test model.

    Raises:
        KeyError: ``name`` is not a known preset (the message lists them).
    """
    if name in _RELEASED:
        return _released(name)
    if name in ("tiny", "tiny-moe"):
        return _tiny(moe=name == "tiny-moe")
    raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
