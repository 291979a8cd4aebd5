"""Embedding surgery before fine-tuning: untie the LM head and spread collapsed words apart.

In a model with tied embeddings, words whose answers the model could not tell apart for a long
time end up as one vector. The built-in learned its colour and shape names in stages where it
could not yet see objects: its rows for the answers "Red", "Blue", ... have a mean pairwise
cosine of 0.99, its shape words 0.92 and its colour words in text 0.73, against 0.35-0.50 for
digits, verbs and directions (``word_cosine``). Through the tied weights the collapse reaches the
question too, so "when does the red circle enter?" and "... the blue circle ..." differ by
almost nothing. Fine-tuning cannot undo it: 800 steps of one-object stills asking for the
object's colour leave the built-in saying "Pink." to every one (accuracy 0.10), while the same
model with fresh embeddings learns them (0.73); ``bench/RESULTS.md``, session 18.

- ``untie``: the LM head becomes its own copy of the embeddings (the logits do not change), so
  what answers are trained towards no longer moves the words of questions.
- ``groups``: each group's rows get Gaussian noise of ``noise`` times the rows' mean norm, in
  the input embeddings and then, a draw of its own, in the untied head; the group's common
  direction stays, and what tells its words apart is back for training to build on.

The result saves in the released format (``tie_word_embeddings`` false with ``lm_head.weight``,
as the larger Qwen3-VL checkpoints are).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recipe.scene import BACKGROUND_COLOUR_NAMES, OBJECT_COLOUR_NAMES, SHAPES
from vidlm.model import Qwen3VL
from vidlm.tokenizer import Tokenizer
from vidlm.weights import model_from_state

_EMBED, _HEAD = "model.language_model.embed_tokens.weight", "lm_head.weight"


@dataclass(frozen=True)
class Spread:
    """Which words to spread apart, by how much, and whether to untie the head first."""

    groups: tuple[tuple[str, ...], ...] = ()  # each word a single token of the model's tokenizer
    noise: float = 0.7  # the noise's norm, as a share of the group's mean row norm
    untie: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise ValueError(f"Spread.noise={self.noise}: expected >= 0")


def world_identity_groups() -> tuple[tuple[str, ...], ...]:
    """The synthetic world's identity words as the built-in's tokenizer splits them, one token
    each: colours as an answer starts ("Red"), colours in text (" red", object and background
    colours both) and shapes in text (" circle"). "dark green" (two tokens) and the shapes'
    capitalised forms (several tokens each) are left out."""
    colours = sorted((set(OBJECT_COLOUR_NAMES) | set(BACKGROUND_COLOUR_NAMES)) - {"dark green"})
    return (tuple(c.capitalize() for c in colours), tuple(f" {c}" for c in colours), tuple(f" {s}" for s in SHAPES))


def token_rows(tokenizer: Tokenizer, words: Sequence[str]) -> list[int]:
    """The token id of each word.

    Raises:
        ValueError: a word that is not one token (named, with how it splits).
    """
    rows = []
    for word in words:
        ids = tokenizer.encode(word)
        if len(ids) != 1:
            raise ValueError(f"{word!r} is {len(ids)} tokens ({ids}), not one: only single-token words can be spread")
        rows.append(ids[0])
    return rows


def word_cosine(model: Qwen3VL, tokenizer: Tokenizer, words: Sequence[str]) -> float:
    """Mean pairwise cosine similarity of the input embeddings of ``words`` (single tokens)."""
    rows = model.model.language_model.embed_tokens.weight.detach()[token_rows(tokenizer, words)].float()
    unit = rows / rows.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    n = len(rows)
    return float((cos.sum() - cos.diagonal().sum()) / (n * (n - 1)))


def spread(model: Qwen3VL, tokenizer: Tokenizer, how: Spread) -> Qwen3VL:
    """A copy of ``model`` with its head untied (``how.untie``) and its word groups spread, in its
    dtype and on its device; ``model`` is left as it is.

    Raises:
        ValueError: a word that is not one token, or groups to spread in a model left tied (the
            noise would reach the answers' rows too; untie it).
    """
    tied = model.config.tie_word_embeddings
    if how.groups and tied and not how.untie:
        raise ValueError("Spread: spreading the words of a tied model moves its answers too; set untie=True")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if tied and how.untie:
        state[_HEAD] = state[_EMBED].clone()  # a model left tied has no groups; model_from_state drops its head
    gen = torch.Generator().manual_seed(how.seed)
    for words in how.groups:
        rows = token_rows(tokenizer, words)
        for key in (_EMBED, _HEAD):
            table = state[key]
            scale = how.noise * table[rows].float().norm(dim=1).mean() / table.shape[1] ** 0.5
            table[rows] += (scale * torch.randn((len(rows), table.shape[1]), generator=gen)).to(table)
    config = dataclasses.replace(model.config, tie_word_embeddings=tied and not how.untie)
    spread_model = model_from_state(config, state, "the spread model")
    spread_model.set_attn_implementation(model.model.language_model.attn_implementation)
    return spread_model.train(model.training)
