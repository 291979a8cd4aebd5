"""Growing a checkpoint (recipe.grow): the same logits before and after, then it trains."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from recipe.data import make_sample
from recipe.grow import Growth, grow
from recipe.train import finished_losses, train
from tests.recipe.conftest import logits, small

SPEC = small(0).sample


def test_a_grown_model_gives_the_logits_it_grew_from(base):
    import vidlm

    lm = vidlm.load(base)
    batch = lm.processor(make_sample(7, SPEC).messages())
    grown = grow(lm.model, Growth(kv_heads=4, new_layers_before=(4, 3)))
    text = grown.config.text
    assert (text.num_hidden_layers, text.num_key_value_heads) == (6, 4)
    assert grown.model.language_model.layers[3].self_attn.o_proj.weight.abs().max() == 0  # the new layer adds nothing yet
    before, after = logits(lm.model, batch), logits(grown, batch)
    assert before.abs().max() > 0.5 and (before - after).abs().max() <= 1e-6
    assert lm.model.config.text.num_hidden_layers == 4  # the model it grew from is untouched


def test_a_stage_that_grows_trains_its_new_layers_and_saves_them_for_transformers(base, tmp_path):
    transformers = pytest.importorskip("transformers")
    import vidlm

    out = tmp_path / "grown"
    cfg = small(2, seed=3, grow=Growth(kv_heads=4, new_layers_before=(3,)))
    losses = train(out, init=base, cfg=cfg)
    config = json.loads((out / "config.json").read_text())["text_config"]
    assert (config["num_hidden_layers"], config["num_key_value_heads"]) == (5, 4)
    state = load_file(str(out / "model.safetensors"))
    assert state["model.language_model.layers.3.self_attn.o_proj.weight"].abs().max() > 0  # zero at first; trained
    assert state["model.language_model.layers.3.mlp.down_proj.weight"].abs().max() > 0
    assert finished_losses(out, cfg) == losses

    lm = vidlm.load(out)
    batch = lm.processor(make_sample(8, SPEC).messages())
    ref = transformers.AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    assert (logits(lm.model, batch) - logits(ref, batch)).abs().max() <= 1e-4


def test_a_new_layer_adds_nothing_with_attention_biases_too(base):
    import dataclasses

    import vidlm
    from vidlm.model import Qwen3VL

    config = vidlm.load(base).model.config
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, attention_bias=True))
    torch.manual_seed(0)
    model = Qwen3VL(config).eval()
    model.tie_weights()  # as the checkpoint says (build_model ties them too)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # biases too: a copied o_proj bias would show in the logits
    ids = torch.randint(0, config.text.vocab_size - 8, (1, 24))
    grown = grow(model, Growth(kv_heads=4, new_layers_before=(3,)))
    assert grown.model.language_model.layers[3].self_attn.o_proj.bias.abs().max() == 0
    assert (logits(model, {"input_ids": ids}) - logits(grown, {"input_ids": ids})).abs().max() <= 1e-5


@pytest.mark.parametrize(
    ("growth", "message"),
    [
        (Growth(kv_heads=3), "multiple of the model's 2 key/value heads"),
        (Growth(kv_heads=8), "divides its 4 query heads"),
        (Growth(new_layers_before=(2,)), "DeepStack"),
        (Growth(new_layers_before=(5,)), "3..4"),
    ],
)
def test_a_growth_the_model_cannot_take_is_refused(base, growth, message):
    import vidlm

    with pytest.raises(ValueError, match=message):
        grow(vidlm.load(base).model, growth)
