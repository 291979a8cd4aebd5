"""Configs, presets and rope tables against the reference doc and the pinned transformers."""

from __future__ import annotations

import copy

import pytest
import torch

from vidlm.config import Qwen3VLConfig, RopeConfig, TextConfig, VisionConfig
from vidlm.model import Qwen3VL
from vidlm.presets import PRESETS, preset
from vidlm.rope import mrope_axis_of_frequency, text_inv_freq

# Parameter counts computed by building each config in transformers 5.24 (reference doc §1.4).
REFERENCE_PARAMS_BILLIONS = {
    "Qwen/Qwen3-VL-2B-Instruct": 2.128,
    "Qwen/Qwen3-VL-4B-Instruct": 4.438,
    "Qwen/Qwen3-VL-8B-Instruct": 8.767,
    "Qwen/Qwen3-VL-32B-Instruct": 33.36,
    "Qwen/Qwen3-VL-30B-A3B-Instruct": 31.07,
}

# A released config.json as the 4.57 writer laid it out (old rope format), trimmed to the keys.
HUB_8B = {
    "architectures": ["Qwen3VLForConditionalGeneration"],
    "model_type": "qwen3_vl",
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "tie_word_embeddings": False, "transformers_version": "4.57.0.dev0",
    "text_config": {
        "model_type": "qwen3_vl_text", "vocab_size": 151936, "hidden_size": 4096,
        "intermediate_size": 12288, "num_hidden_layers": 36, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
        "max_position_embeddings": 262144, "rms_norm_eps": 1e-6, "rope_theta": 5000000,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151645, "dtype": "bfloat16", "initializer_range": 0.02, "use_cache": True,
    },
    "vision_config": {
        "model_type": "qwen3_vl", "depth": 27, "hidden_size": 1152, "intermediate_size": 4304,
        "num_heads": 16, "hidden_act": "gelu_pytorch_tanh", "in_channels": 3, "patch_size": 16,
        "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 4096,
        "num_position_embeddings": 2304, "deepstack_visual_indexes": [8, 16, 24],
        "initializer_range": 0.02,
    },
}


def test_hub_config_old_rope_format_reads_like_the_preset():
    cfg = Qwen3VLConfig.from_hf_config(HUB_8B)
    assert cfg.text.rope.theta == 5e6 and cfg.text.rope.mrope_section == (24, 20, 20)
    assert cfg.text == preset("Qwen/Qwen3-VL-8B-Instruct").text
    assert cfg.vision == preset("Qwen/Qwen3-VL-8B-Instruct").vision


def test_round_trip_through_the_reference_config():
    transformers = pytest.importorskip("transformers")
    for name in ("tiny", "tiny-moe", "Qwen/Qwen3-VL-30B-A3B-Instruct"):
        ours = preset(name)
        raw = ours.to_hf_config()
        cls = transformers.Qwen3VLMoeConfig if ours.text.is_moe else transformers.Qwen3VLConfig
        theirs = cls(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
        assert Qwen3VLConfig.from_hf_config(theirs.to_dict()) == ours


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_BILLIONS))
def test_preset_parameter_counts_match_the_reference(name):
    with torch.device("meta"):
        model = Qwen3VL(preset(name))
    if preset(name).tie_word_embeddings:
        model.tie_weights()
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert count == pytest.approx(REFERENCE_PARAMS_BILLIONS[name], abs=0.006)


def test_every_preset_builds():
    assert len(PRESETS) == 8
    for name in PRESETS:
        assert preset(name).text.hidden_size == preset(name).vision.out_hidden_size
    with pytest.raises(KeyError, match="unknown preset 'Qwen/Qwen3-VL-1B'"):
        preset("Qwen/Qwen3-VL-1B")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["text_config"].update(num_key_value_heads=5), r"text_config\.num_key_value_heads=5: expected a divisor"),
        (lambda d: d["text_config"]["rope_scaling"].update(mrope_section=[24, 20, 21]), r"text_config\.mrope_section=\[24, 20, 21\]: expected sections summing to head_dim // 2 = 64"),
        (lambda d: d["vision_config"].update(deepstack_visual_indexes=[8, 27]), r"vision_config\.deepstack_visual_indexes=\[8, 27\]: expected block indices in \[0, depth=27\)"),
        (lambda d: d["vision_config"].update(num_position_embeddings=2300), r"vision_config\.num_position_embeddings=2300: expected a perfect square"),
        (lambda d: d["vision_config"].update(out_hidden_size=2048), r"vision_config\.out_hidden_size=2048: expected text hidden_size=4096"),
        (lambda d: d.update(video_token_id=999999), r"config\.video_token_id=999999"),
        (lambda d: d.update(model_type="qwen2_vl"), r"config\.model_type='qwen2_vl'"),
        (lambda d: d["text_config"].update(sliding_windows=4), r"text_config: unknown keys \['sliding_windows'\]"),
    ],
)
def test_invalid_configs_name_the_field(edit, message):
    raw = copy.deepcopy(HUB_8B)
    edit(raw)
    with pytest.raises(ValueError, match=message):
        Qwen3VLConfig.from_hf_config(raw)


def test_moe_fields_are_validated():
    with pytest.raises(ValueError, match=r"num_experts_per_tok=9: expected between 1 and num_experts=8"):
        TextConfig(hidden_size=64, num_attention_heads=4, head_dim=16, num_experts=8,
                   num_experts_per_tok=9, moe_intermediate_size=8, rope=RopeConfig(mrope_section=(4, 2, 2)))
    sparse = TextConfig(hidden_size=64, num_attention_heads=4, head_dim=16, num_hidden_layers=4,
                        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8, decoder_sparse_step=2,
                        mlp_only_layers=(3,), rope=RopeConfig(mrope_section=(4, 2, 2)))
    assert [sparse.is_sparse_layer(i) for i in range(4)] == [False, True, False, False]


def test_vision_head_dim_must_split_in_quarters():
    with pytest.raises(ValueError, match="divisible by 4"):
        VisionConfig(hidden_size=36, num_heads=2)


def test_interleaved_mrope_channel_assignment():
    axis = mrope_axis_of_frequency(64, (24, 20, 20))
    assert axis[:6].tolist() == [0, 1, 2, 0, 1, 2]
    assert axis[60:].tolist() == [0, 0, 0, 0]
    assert torch.bincount(axis).tolist() == [24, 20, 20]


def test_yarn_frequencies_match_the_reference():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = RopeConfig(rope_type="yarn", factor=3.0, original_max_position_embeddings=262144)
    ref_cfg = transformers.Qwen3VLTextConfig(
        head_dim=128, hidden_size=4096, num_attention_heads=32, max_position_embeddings=786432,
        rope_parameters={"rope_type": "yarn", "rope_theta": 5e6, "factor": 3.0,
                         "original_max_position_embeddings": 262144, "mrope_section": [24, 20, 20]},
    )
    expected, expected_scale = ROPE_INIT_FUNCTIONS["yarn"](ref_cfg)
    got, scale = text_inv_freq(rope, 128, 786432)
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    assert scale == pytest.approx(expected_scale)
    default, one = text_inv_freq(RopeConfig(), 128, 262144)
    assert one == 1.0 and not torch.allclose(default, got)
