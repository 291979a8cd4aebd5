"""Builders for tiny reference checkpoints, made with the pinned transformers (test oracle only).

Everything here follows reference doc §12: a 264-token byte-level tokenizer with the Qwen special
tokens, a chat template implementing §8's rules, and tiny Qwen3-VL configs (dense and MoE) saved
with ``save_pretrained`` so that our loader reads exactly what the reference writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipe.tokenizer import CHAT_TEMPLATE_PATH

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# §8's rendering rules as a Jinja template; the built-in model's recipe ships the same file.
CHAT_TEMPLATE = CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")


def build_tokenizer(out_dir: Path) -> Any:
    """Save the tiny byte-level tokenizer (+ chat template) into ``out_dir`` and return it."""
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS
            ]
        }
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(out_dir)
    return tok


def tiny_config_dicts(
    tok: Any,
    *,
    moe: bool = False,
    tie: bool = False,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 3,
    deepstack: tuple[int, ...] = (0, 1),
    vision_depth: int = 3,
) -> dict[str, Any]:
    """Keyword arguments for ``Qwen3VLConfig`` / ``Qwen3VLMoeConfig`` (reference doc §12)."""
    text = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=16,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
    )
    if moe:
        # moe_intermediate_size 24, not 32: H == 2I would make the expert layouts ambiguous.
        text.update(
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=24,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        )
    vision = dict(
        depth=vision_depth,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=16,
        temporal_patch_size=2,
        spatial_merge_size=2,
        in_channels=3,
        out_hidden_size=64,
        num_position_embeddings=64,
        deepstack_visual_indexes=list(deepstack),
        hidden_act="gelu_pytorch_tanh",
    )
    ids = {
        name: tok.convert_tokens_to_ids(token)
        for name, token in (
            ("image_token_id", "<|image_pad|>"),
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        )
    }
    return dict(text_config=text, vision_config=vision, tie_word_embeddings=tie, **ids)


def build_reference_checkpoint(out_dir: Path, *, seed: int = 0, moe: bool = False, **kw: Any) -> Any:
    """Build a random tiny reference model, save it like a released checkpoint, return it (eval)."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLMoeConfig,
        Qwen3VLMoeForConditionalGeneration,
    )

    tok = build_tokenizer(out_dir)
    cfg_cls, model_cls = (
        (Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration)
        if moe
        else (Qwen3VLConfig, Qwen3VLForConditionalGeneration)
    )
    config = cfg_cls(**tiny_config_dicts(tok, moe=moe, **kw))
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # Random init leaves norms at 1 and biases at 0; perturb them so a bug there shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "layernorm.weight", "norm1.weight", "norm2.weight")):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(out_dir)
    GenerationConfig(
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.0,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
    ).save_pretrained(out_dir)
    return model
