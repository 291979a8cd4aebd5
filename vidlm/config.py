"""Model configuration: vision, text (dense or mixture-of-experts) and the composed model.

Unusual here: released ``config.json`` files come in two rope formats (``rope_theta`` +
``rope_scaling`` from the 4.57 writer, ``rope_parameters`` from 5.x) and both are read.
``from_hf_config`` maps keys explicitly; an unknown key is an error unless it is listed as
ignored, so a new upstream field is noticed instead of silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

# Keys that released or reference-written config.json files carry and that do not change the
# computation (bookkeeping, training-only switches, generation settings kept elsewhere).
_IGNORED_KEYS = frozenset(
    {
        "architectures", "output_hidden_states", "output_attentions", "return_dict", "dtype",
        "torch_dtype", "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id",
        "problem_type", "_name_or_path", "transformers_version", "model_type", "use_cache",
        "initializer_range", "attention_dropout", "output_router_logits", "router_aux_loss_coef",
        "pad_token_id", "bos_token_id", "eos_token_id", "sliding_window", "use_sliding_window",
        "max_window_layers", "tie_word_embeddings", "norm_topk_prob", "layer_types",
        "in_chans", "spatial_patch_size", "tokens_per_second", "fullatt_block_indexes",
        "window_size", "decoder_start_token_id", "keys_to_ignore_at_inference", "vocab_file",
        "rope_theta", "rope_scaling", "rope_parameters", "num_local_experts", "torchscript",
        "tf_legacy_loss", "pruned_heads", "add_cross_attention", "finetuning_task",
        "tokenizer_class", "prefix", "sep_token_id", "task_specific_params", "cross_attention_hidden_size",
        "use_bfloat16", "is_decoder", "temperature", "top_k", "top_p", "do_sample",
    }
)


def _fail(component: str, name: str, value: Any, expected: str) -> None:
    raise ValueError(f"{component}.{name}={value!r}: expected {expected}")


@dataclass
class RopeConfig:
    """Rotary settings of the text decoder (interleaved MRoPE, optional YaRN scaling)."""

    theta: float = 5_000_000.0
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    mrope_interleaved: bool = True
    rope_type: Literal["default", "yarn"] = "default"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None

    def __post_init__(self) -> None:
        self.mrope_section = tuple(int(s) for s in self.mrope_section)  # type: ignore[assignment]
        if len(self.mrope_section) != 3:
            _fail("rope", "mrope_section", self.mrope_section, "three sections (t, h, w)")
        if self.rope_type not in ("default", "yarn"):
            _fail("rope", "rope_type", self.rope_type, "'default' or 'yarn'")
        if self.rope_type == "yarn" and self.factor <= 1.0:
            _fail("rope", "factor", self.factor, "> 1 for yarn scaling")


@dataclass
class TextConfig:
    """Qwen3 decoder. ``num_experts`` > 0 makes the sparse layers mixture-of-experts."""

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 262144
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    rope: RopeConfig = field(default_factory=RopeConfig)
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.mlp_only_layers = tuple(self.mlp_only_layers)
        if isinstance(self.rope, dict):
            self.rope = RopeConfig(**self.rope)
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) <= 0:
                _fail("text_config", name, getattr(self, name), "a positive integer")
        if self.num_attention_heads % self.num_key_value_heads:
            _fail(
                "text_config", "num_key_value_heads", self.num_key_value_heads,
                f"a divisor of num_attention_heads={self.num_attention_heads}",
            )
        if self.head_dim % 2:
            _fail("text_config", "head_dim", self.head_dim, "an even number")
        if sum(self.rope.mrope_section) != self.head_dim // 2:
            _fail(
                "text_config", "mrope_section", list(self.rope.mrope_section),
                f"sections summing to head_dim // 2 = {self.head_dim // 2}",
            )
        if self.hidden_act != "silu":
            _fail("text_config", "hidden_act", self.hidden_act, "'silu'")
        if self.num_experts:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                _fail(
                    "text_config", "num_experts_per_tok", self.num_experts_per_tok,
                    f"between 1 and num_experts={self.num_experts}",
                )
            if self.moe_intermediate_size <= 0:
                _fail("text_config", "moe_intermediate_size", self.moe_intermediate_size, "> 0")
            if self.decoder_sparse_step <= 0:
                _fail("text_config", "decoder_sparse_step", self.decoder_sparse_step, ">= 1")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_sparse_layer(self, layer_idx: int) -> bool:
        """Whether decoder layer ``layer_idx`` uses the mixture-of-experts feed-forward."""
        return (
            self.is_moe
            and layer_idx not in self.mlp_only_layers
            and (layer_idx + 1) % self.decoder_sparse_step == 0
        )


@dataclass
class VisionConfig:
    """ViT with learned, bilinearly resampled position table and DeepStack taps."""

    depth: int = 27
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_heads: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    out_hidden_size: int = 4096
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        self.deepstack_visual_indexes = tuple(int(i) for i in self.deepstack_visual_indexes)
        if self.hidden_size % self.num_heads:
            _fail("vision_config", "num_heads", self.num_heads, f"a divisor of hidden_size={self.hidden_size}")
        if (self.hidden_size // self.num_heads) % 4:
            _fail(
                "vision_config", "hidden_size", self.hidden_size,
                "hidden_size / num_heads divisible by 4 (2D rotary halves)",
            )
        side = math.isqrt(self.num_position_embeddings)
        if side * side != self.num_position_embeddings:
            _fail("vision_config", "num_position_embeddings", self.num_position_embeddings, "a perfect square")
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.depth]
        if bad:
            _fail(
                "vision_config", "deepstack_visual_indexes", list(self.deepstack_visual_indexes),
                f"block indices in [0, depth={self.depth})",
            )
        if self.hidden_act not in ("gelu_pytorch_tanh", "gelu"):
            _fail("vision_config", "hidden_act", self.hidden_act, "'gelu_pytorch_tanh' or 'gelu'")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class Qwen3VLConfig:
    """The whole model: vision tower, text decoder and the placeholder token ids."""

    text: TextConfig = field(default_factory=TextConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if self.vision.out_hidden_size != self.text.hidden_size:
            _fail(
                "vision_config", "out_hidden_size", self.vision.out_hidden_size,
                f"text hidden_size={self.text.hidden_size}",
            )
        if len(self.vision.deepstack_visual_indexes) > self.text.num_hidden_layers:
            _fail(
                "vision_config", "deepstack_visual_indexes", list(self.vision.deepstack_visual_indexes),
                f"at most num_hidden_layers={self.text.num_hidden_layers} levels",
            )
        for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.text.vocab_size:
                _fail("config", name, value, f"a token id below vocab_size={self.text.vocab_size}")

    @property
    def model_type(self) -> Literal["qwen3_vl", "qwen3_vl_moe"]:
        return "qwen3_vl_moe" if self.text.is_moe else "qwen3_vl"

    @classmethod
    def from_hf_config(cls, d: dict[str, Any]) -> Qwen3VLConfig:
        """Build from a checkpoint's ``config.json`` dict (qwen3_vl or qwen3_vl_moe).

        Raises:
            ValueError: an unknown key, an unsupported model type or an invalid value.
        """
        model_type = d.get("model_type", "qwen3_vl")
        if model_type not in ("qwen3_vl", "qwen3_vl_moe"):
            _fail("config", "model_type", model_type, "'qwen3_vl' or 'qwen3_vl_moe'")
        for key in ("text_config", "vision_config"):
            if not isinstance(d.get(key), dict):
                _fail("config", key, d.get(key), "a nested dict")
        top = _take(d, "config", _top_fields(), extra={"text_config", "vision_config"})
        return cls(
            text=_text_from_hf(d["text_config"]), vision=_vision_from_hf(d["vision_config"]), **top
        )

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` dict in the current reference format (rope_parameters)."""
        text = {k: v for k, v in asdict(self.text).items() if k != "rope"}
        rope = self.text.rope
        text["rope_parameters"] = {
            "rope_type": rope.rope_type,
            "rope_theta": rope.theta,
            "mrope_section": list(rope.mrope_section),
            "mrope_interleaved": rope.mrope_interleaved,
        }
        if rope.rope_type == "yarn":
            text["rope_parameters"].update(
                factor=rope.factor,
                original_max_position_embeddings=rope.original_max_position_embeddings,
                beta_fast=rope.beta_fast,
                beta_slow=rope.beta_slow,
            )
        text["mlp_only_layers"] = list(self.text.mlp_only_layers)
        if not self.text.is_moe:
            for k in ("num_experts", "num_experts_per_tok", "moe_intermediate_size",
                      "decoder_sparse_step", "mlp_only_layers"):
                text.pop(k)
        text["model_type"] = f"{self.model_type}_text"
        vision = asdict(self.vision)
        vision["deepstack_visual_indexes"] = list(self.vision.deepstack_visual_indexes)
        vision["rope_parameters"] = {"rope_type": "axial", "rope_theta": vision.pop("rope_theta")}
        vision["model_type"] = f"{self.model_type}_vision"
        arch = "Qwen3VLMoeForConditionalGeneration" if self.text.is_moe else "Qwen3VLForConditionalGeneration"
        return {
            "architectures": [arch],
            "model_type": self.model_type,
            "text_config": text,
            "vision_config": vision,
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("text", "vision")},
        }


def _top_fields() -> set[str]:
    return {f.name for f in fields(Qwen3VLConfig)} - {"text", "vision"}


def _take(d: dict[str, Any], component: str, known: set[str], extra: set[str] = frozenset()) -> dict[str, Any]:
    unknown = sorted(set(d) - known - set(extra) - _IGNORED_KEYS)
    if unknown:
        raise ValueError(
            f"{component}: unknown keys {unknown}; add them to the mapping in vidlm/config.py "
            "or to its ignored list after checking they do not change the computation"
        )
    out = {k: d[k] for k in known if k in d}
    if component == "config" and "tie_word_embeddings" in d:
        out["tie_word_embeddings"] = bool(d["tie_word_embeddings"])
    return out


def _rope_from_hf(d: dict[str, Any]) -> RopeConfig:
    """Merge the 4.57 (``rope_theta`` + ``rope_scaling``) and 5.x (``rope_parameters``) forms."""
    params: dict[str, Any] = {}
    for source in (d.get("rope_scaling"), d.get("rope_parameters")):
        if isinstance(source, dict):
            params.update(source)
    theta = params.get("rope_theta", d.get("rope_theta", 5_000_000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if "mrope_section" not in params:
        # The reference silently falls back to [24, 20, 20]; we do the same but only where
        # that fallback is valid, so a small head_dim fails validation loudly.
        params["mrope_section"] = [24, 20, 20]
    return RopeConfig(
        theta=float(theta),
        mrope_section=tuple(params["mrope_section"]),
        mrope_interleaved=bool(params.get("mrope_interleaved", True)),
        rope_type=rope_type,
        factor=float(params.get("factor", 1.0)),
        original_max_position_embeddings=params.get("original_max_position_embeddings"),
        beta_fast=float(params.get("beta_fast", 32.0)),
        beta_slow=float(params.get("beta_slow", 1.0)),
        attention_factor=params.get("attention_factor"),
    )


def _text_from_hf(d: dict[str, Any]) -> TextConfig:
    known = {f.name for f in fields(TextConfig)} - {"rope"}
    kwargs = _take(d, "text_config", known)
    if "num_local_experts" in d and "num_experts" not in d:
        kwargs["num_experts"] = d["num_local_experts"]
    moe = d.get("model_type", "").endswith("moe_text") or kwargs.get("num_experts", 0) > 0
    if not moe:
        for k in ("num_experts", "num_experts_per_tok", "moe_intermediate_size"):
            kwargs.pop(k, None)
    return TextConfig(rope=_rope_from_hf(d), **kwargs)


def _vision_from_hf(d: dict[str, Any]) -> VisionConfig:
    known = {f.name for f in fields(VisionConfig)}
    kwargs = _take(d, "vision_config", known)
    rope = d.get("rope_parameters") or {}
    if "rope_theta" in rope:
        kwargs["rope_theta"] = float(rope["rope_theta"])
    return VisionConfig(**kwargs)
