"""Growing a checkpoint before fine-tuning, without changing what it computes.

A model that has levelled off can be given more capacity and trained on from where it is
(block expansion, as in LLaMA Pro, and the GQA uptraining of Ainslie et al.):

- ``kv_heads``: each key/value head is repeated for the query heads that shared it, so every
  query head group gets its own keys and values (their projections are copies at first and
  then train apart);
- ``new_layers_before``: a new decoder layer goes before each listed layer index (the layer
  count for one at the end; none before the layers that DeepStack adds to). It copies the
  layer it precedes (the last layer for one at the end) with its attention output and MLP down
  projections zeroed, so that at first it adds nothing to the residual stream; its zeroed
  projections get gradients at the first step.

The grown model gives the same logits as the one it came from (tested), and saves in the
released format with the new ``num_hidden_layers`` / ``num_key_value_heads``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import torch

from vidlm.model import Qwen3VL
from vidlm.weights import model_from_state

_LAYERS = "model.language_model.layers."
# a new layer's outputs into the residual stream (the bias where ``attention_bias`` gives one)
_ZEROED = ("self_attn.o_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.weight")


@dataclass(frozen=True)
class Growth:
    """How to grow a dense Qwen3-VL decoder (see the module docstring)."""

    kv_heads: int | None = None  # key/value heads after growing; None keeps them
    new_layers_before: tuple[int, ...] = ()  # a new layer before each of these layer indices

    def __post_init__(self) -> None:
        object.__setattr__(self, "new_layers_before", tuple(sorted(self.new_layers_before)))
        if self.kv_heads is not None and self.kv_heads <= 0:
            raise ValueError(f"Growth.kv_heads={self.kv_heads}: expected a positive number of heads")


def grow(model: Qwen3VL, growth: Growth) -> Qwen3VL:
    """A grown copy of ``model``, in its dtype and on its device; ``model`` is left as it is.

    Raises:
        ValueError: a mixture-of-experts decoder, a ``kv_heads`` that is not a multiple of the
            model's own and a divisor of its query heads, or a layer index outside
            ``levels..num_hidden_layers`` (DeepStack's ``levels`` first layers keep their places).
    """
    text = model.config.text
    if text.is_moe:
        raise ValueError("grow: mixture-of-experts decoders are not supported (dense layers only)")
    old_kv, head_dim = cast(int, text.num_key_value_heads), cast(int, text.head_dim)  # TextConfig fills both in
    kv = growth.kv_heads or old_kv
    if kv % old_kv or text.num_attention_heads % kv:
        raise ValueError(
            f"Growth.kv_heads={kv}: expected a multiple of the model's {old_kv} key/value heads "
            f"that divides its {text.num_attention_heads} query heads"
        )
    layers = text.num_hidden_layers
    levels = len(model.config.vision.deepstack_visual_indexes)  # DeepStack adds after layers 0..levels-1
    if any(not levels <= i <= layers for i in growth.new_layers_before):
        raise ValueError(
            f"Growth.new_layers_before={growth.new_layers_before}: expected indices in {levels}..{layers} "
            f"(a new layer before one of the first {levels} would move where DeepStack adds its features)"
        )

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if kv != old_kv:
        for key in [k for k in state if k.startswith(_LAYERS) and k.endswith(("k_proj.weight", "v_proj.weight", "k_proj.bias", "v_proj.bias"))]:
            w = state[key]
            state[key] = w.reshape(old_kv, head_dim, *w.shape[1:]).repeat_interleave(kv // old_kv, dim=0).reshape(kv * head_dim, *w.shape[1:])

    per_layer = [{k[len(f"{_LAYERS}{i}."):]: v for k, v in state.items() if k.startswith(f"{_LAYERS}{i}.")} for i in range(layers)]
    order: list[dict[str, torch.Tensor]] = []
    for i in range(layers + 1):
        for _ in range(growth.new_layers_before.count(i)):
            new = {k: v.clone() for k, v in per_layer[min(i, layers - 1)].items()}
            for name in _ZEROED:
                if name in new:
                    new[name].zero_()
            order.append(new)
        if i < layers:
            order.append(per_layer[i])
    state = {k: v for k, v in state.items() if not k.startswith(_LAYERS)}
    state.update({f"{_LAYERS}{j}.{k}": v for j, layer in enumerate(order) for k, v in layer.items()})

    config = dataclasses.replace(
        model.config, text=dataclasses.replace(text, num_hidden_layers=len(order), num_key_value_heads=kv)
    )
    grown = model_from_state(config, state, "the grown model")
    grown.set_attn_implementation(model.model.language_model.attn_implementation)
    return grown.train(model.training)
