"""Mixture-of-experts feed-forward (sparse decoder layers).

Unusual here: the router's softmax runs over *all* experts in float32, then top-k, then the
top-k weights are always renormalised to sum to 1. There is no shared expert and no router
bias. Expert weights are fused 3D parameters in the in-memory layout ``gate_up_proj``
[E, 2I, H] (first half gate, second half up) and ``down_proj`` [E, H, I]; the hub files of the
first release store them transposed, which ``vidlm.weights`` converts on load.

Shapes: T tokens (batch flattened), D hidden, E experts, I expert width, k experts per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TextConfig


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k expert ids [T, k] and their renormalised weights [T, k] (in the logits' dtype)."""
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return experts, weights.to(router_logits.dtype)


class Router(nn.Module):
    """The ``gate``: one logit per expert, no bias."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class Experts(nn.Module):
    """All experts' SwiGLU weights as two fused tensors."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        e, h, i = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))

    def forward(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x [T, D], experts/weights [T, k] -> [T, D]."""
        out = torch.zeros_like(x)
        # Group the (token, slot) pairs by expert so each expert runs once on its tokens.
        flat_expert = experts.flatten()
        order = torch.argsort(flat_expert, stable=True)
        counts = torch.bincount(flat_expert, minlength=self.gate_up_proj.shape[0]).tolist()
        token_of = order // experts.shape[1]
        weight_of = weights.flatten()[order]
        start = 0
        for e, count in enumerate(counts):
            if count == 0:
                continue
            tokens = token_of[start : start + count]
            gate, up = F.linear(x[tokens], self.gate_up_proj[e]).chunk(2, dim=-1)
            y = F.linear(F.silu(gate) * up, self.down_proj[e])
            out.index_add_(0, tokens, (y * weight_of[start : start + count, None]).to(out.dtype))
            start += count
        return out


class SparseMoeBlock(nn.Module):
    """Router + experts; the feed-forward of a sparse decoder layer."""

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = Router(config)
        self.experts = Experts(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [T, D]
        experts, weights = route(self.gate(flat), self.top_k)
        return self.experts(flat, experts, weights).reshape(shape)
