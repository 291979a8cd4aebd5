"""Embedding surgery (recipe.spread): untying keeps the logits, spreading moves only the named
rows and pulls a collapsed group apart, and a stage that spreads saves an untied checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from recipe.data import make_sample
from recipe.spread import Spread, spread, token_rows, word_cosine, world_identity_groups
from recipe.train import finished_losses, train
from tests.recipe.conftest import logits, small

SPEC = small(0).sample
COLOURS = (" red", " green", " blue", " yellow")


def test_untying_keeps_the_logits(base):
    import vidlm

    lm = vidlm.load(base)
    assert lm.model.config.tie_word_embeddings
    batch = lm.processor(make_sample(7, SPEC).messages())
    untied = spread(lm.model, lm.tokenizer, Spread())
    assert not untied.config.tie_word_embeddings
    head, embed = untied.lm_head.weight, untied.model.language_model.embed_tokens.weight
    assert head.data_ptr() != embed.data_ptr() and torch.equal(head, embed)
    before = logits(lm.model, batch)
    assert before.abs().max() > 0.5 and torch.equal(before, logits(untied, batch))
    assert lm.model.config.tie_word_embeddings  # the model it came from is untouched


def test_spreading_pulls_a_collapsed_group_apart_and_moves_nothing_else(base):
    import vidlm

    lm = vidlm.load(base)
    rows = token_rows(lm.tokenizer, COLOURS)
    embed = lm.model.model.language_model.embed_tokens.weight
    with torch.no_grad():  # collapse the group as training did the built-in's colours
        embed[rows] = 0.2 * torch.randn(embed.shape[1]) + 0.01 * torch.randn(len(rows), embed.shape[1])
    collapsed = word_cosine(lm.model, lm.tokenizer, COLOURS)
    spread_model = spread(lm.model, lm.tokenizer, Spread(groups=(COLOURS,), noise=0.7, seed=1))
    assert collapsed > 0.99 and word_cosine(spread_model, lm.tokenizer, COLOURS) < 0.9
    new_embed, new_head = spread_model.model.language_model.embed_tokens.weight, spread_model.lm_head.weight
    others = torch.ones(len(embed), dtype=torch.bool)
    others[rows] = False
    assert torch.equal(new_embed[others], embed[others]) and torch.equal(new_head[others], embed[others])
    assert (new_embed[rows] - embed[rows]).norm(dim=1).min() > 0.3 * embed[rows].norm(dim=1).mean()
    moved = (new_head[rows] - embed[rows]).norm(dim=1)
    assert moved.min() > 0.3 * embed[rows].norm(dim=1).mean() and not torch.equal(new_head[rows], new_embed[rows])
    again = spread(lm.model, lm.tokenizer, Spread(groups=(COLOURS,), noise=0.7, seed=1))
    assert torch.equal(again.model.language_model.embed_tokens.weight, new_embed)  # a pure function of its seed


def test_what_spread_cannot_do_is_refused(base):
    import vidlm

    lm = vidlm.load(base)
    with pytest.raises(ValueError, match="untie=True"):
        spread(lm.model, lm.tokenizer, Spread(groups=(COLOURS,), untie=False))
    with pytest.raises(ValueError, match="'When does the' is [0-9]+ tokens"):
        spread(lm.model, lm.tokenizer, Spread(groups=(("When does the",),)))
    with pytest.raises(ValueError, match="noise"):
        Spread(noise=-1.0)


def test_a_stage_that_spreads_saves_an_untied_checkpoint_for_transformers(base, tmp_path):
    transformers = pytest.importorskip("transformers")
    import vidlm

    out = tmp_path / "spread"
    cfg = small(2, seed=3, spread=Spread(groups=(COLOURS,)))
    losses = train(out, init=base, cfg=cfg)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    state = load_file(str(out / "model.safetensors"))
    assert not torch.equal(state["lm_head.weight"], state["model.language_model.embed_tokens.weight"])  # trained apart
    assert finished_losses(out, cfg) == losses and finished_losses(out, small(2, seed=3)) is None

    lm = vidlm.load(out)
    assert not lm.model.config.tie_word_embeddings
    batch = lm.processor(make_sample(8, SPEC).messages())
    ref = transformers.AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    assert (logits(lm.model, batch) - logits(ref, batch)).abs().max() <= 1e-4


def test_the_world_s_identity_words_are_one_token_each_in_the_builtin_tokenizer():
    from vidlm.api import BUILTIN_DIR
    from vidlm.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_dir(BUILTIN_DIR)
    groups = world_identity_groups()
    assert [len(g) for g in groups] == [15, 15, 7] and "Red" in groups[0] and " navy" in groups[1]
    for words in groups:
        assert len(set(token_rows(tokenizer, words))) == len(words)
