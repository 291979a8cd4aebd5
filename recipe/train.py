"""Supervised fine-tuning for temporal grounding, with the project's own model code.

Works on any Qwen3-VL checkpoint folder (``init=``) or on a fresh tiny configuration (the
built-in model). Samples are rendered on the fly from the synthetic world; the loss covers only
the answer tokens; gradients are accumulated over several samples; bf16 autocast on CUDA. The
result is saved in the released folder format (config.json, model.safetensors, tokenizer,
chat template, generation and preprocessor configs), which vidlm and transformers both load.
Deterministic for a seed on one device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from recipe.data import (
    IGNORE,
    Branches,
    SampleSpec,
    corpus_texts,
    encode_branches,
    length_groups,
    make_sample,
    worker_options,
)
from recipe.grow import Growth, grow
from recipe.spread import Spread, spread
from recipe.tasks import TaskKind
from recipe.tokenizer import save_tokenizer, train_tokenizer
from recipe.warmup import WarmupConfig, warm_up_tower
from recipe.world import WorldParams
from vidlm.config import Qwen3VLConfig, RopeConfig, TextConfig, VisionConfig
from vidlm.decoder import AttentionContext, DecoderLayer
from vidlm.model import Qwen3VL
from vidlm.processor import Processor, ProcessorConfig
from vidlm.rope import apply_rotary
from vidlm.tokenizer import Tokenizer
from vidlm.weights import build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundingLosses:
    """Dense losses added to the answer loss for the search grounding needs (0: off).

    The first three are :class:`GroundingHeads` losses; ``attend_weight`` supervises the
    model's own last-layer lookup (``attend_first_digits``: only at a time's first digit;
    ``attend_deciding_digits``: only at the digits that still choose the frame pair).
    See :func:`branch_loss`.
    """

    saliency_weight: float = 0.0  # frame pair inside the asked event?
    clock_weight: float = 0.0  # each visual token's printed time
    pointer_weight: float = 0.0  # each answer time digit's frame pair
    attend_weight: float = 0.0  # the last layer's supervised lookup head
    attend_first_digits: bool = False
    attend_deciding_digits: bool = False
    name_weight: float = 0.0  # each frame pair's visual tokens name what it shows, through the input embeddings

    def __post_init__(self) -> None:
        if self.attend_first_digits and self.attend_deciding_digits:
            raise ValueError("attend_first_digits and attend_deciding_digits: choose one")

    @property
    def needs_heads(self) -> bool:
        return bool(self.saliency_weight or self.clock_weight or self.pointer_weight)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    accumulation: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 20
    save_every: int = 250
    model_hidden: int = 256
    model_layers: int = 4
    tokenizer_scenes: int = 400
    visual_norm_weight: float = 0.0
    workers: int = 0
    batch_videos: int = 1  # videos per forward pass (speed only: a step still takes `accumulation` samples)
    freeze_tower: bool = False  # the tower's patch embedding, position table and blocks stay fixed; its mergers train
    sample: SampleSpec = field(default_factory=SampleSpec)
    tower_warmup: WarmupConfig | None = None  # run on the starting model before the first step
    grounding: GroundingLosses = field(default_factory=GroundingLosses)
    grow: Growth | None = None  # grow the starting model first, keeping what it computes (recipe.grow)
    spread: Spread | None = None  # then untie its head and spread collapsed words apart (recipe.spread)

    def __post_init__(self) -> None:
        if self.batch_videos < 1:
            raise ValueError(f"batch_videos={self.batch_videos}: expected at least 1")
        if self.tower_warmup is not None and self.tower_warmup.frame_px != self.sample.frame_px:
            raise ValueError(f"tower_warmup.frame_px={self.tower_warmup.frame_px}: expected the stage's "
                             f"frame_px={self.sample.frame_px} (the tower learns at one resolution)")


def tiny_config(tokenizer: Tokenizer, *, hidden: int = 256, layers: int = 4) -> Qwen3VLConfig:
    """The built-in model's shape: ~6M parameters, text width 256, vision width 128."""
    ids = {
        "image_token_id": tokenizer.token_to_id("<|image_pad|>"),
        "video_token_id": tokenizer.token_to_id("<|video_pad|>"),
        "vision_start_token_id": tokenizer.token_to_id("<|vision_start|>"),
        "vision_end_token_id": tokenizer.token_to_id("<|vision_end|>"),
    }
    text = TextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
        max_position_embeddings=32768, rope=RopeConfig(theta=10000.0, mrope_section=(12, 10, 10)),
    )
    vision = VisionConfig(
        depth=4, hidden_size=128, intermediate_size=512, num_heads=4, out_hidden_size=hidden,
        num_position_embeddings=256, deepstack_visual_indexes=(1, 2, 3)[:layers],
    )
    return Qwen3VLConfig(text=text, vision=vision, tie_word_embeddings=True, **ids)


def init_weights(model: Qwen3VL, seed: int) -> None:
    """Normal(0, 0.02) linear/embedding weights, zero biases, unit norms."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


def save_checkpoint(model: Qwen3VL, tokenizer_dir: Path, out: Path, *, frame_px: int) -> None:
    """Write ``out`` in the released checkpoint format (atomically: temp folder + rename)."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_config() | {"transformers_version": "5.24.0", "dtype": "bfloat16"}
    (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    # bfloat16 on disk halves the size; vidlm.load converts to the dtype asked for.
    state = {k: v.detach().to(torch.bfloat16).contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp / name).write_bytes((tokenizer_dir / name).read_bytes())
    tok = Tokenizer.from_dir(tmp)
    eos, pad = tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")
    generation = {"do_sample": False, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
                  "repetition_penalty": 1.0, "bos_token_id": pad, "pad_token_id": pad,
                  "eos_token_id": [eos, pad]}
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
    tokens_per_frame = (frame_px // 32) ** 2
    shared = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
              "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    image = shared | {"size": {"shortest_edge": 4096, "longest_edge": 65536}}
    video = shared | {"size": {"shortest_edge": 4096, "longest_edge": 25165824},
                      "max_video_tokens": tokens_per_frame, "cap_pixels_per_frame": True}
    (tmp / "preprocessor_config.json").write_text(json.dumps(image, indent=2), encoding="utf-8")
    (tmp / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2), encoding="utf-8")
    if out.exists():
        old = out.with_name(out.name + ".old")
        out.rename(old)
        tmp.rename(out)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(out)


class _SharedPrefix:
    """A differentiable stand-in for :class:`~vidlm.kv_cache.KVCache`: the first pass (the video
    prefixes) keeps its keys/values; later passes (a batch of branches) see them broadcast to
    their batch size, or with several videos each branch row sees its own video's (``rows``:
    the prefix row of every branch row), so gradients of every branch flow back into its prefix."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.length = 0
        self.frozen = False
        self.branch_keys: dict[int, torch.Tensor] = {}  # layer -> keys [B, KV, prefix + branch, Dh] of the last branch pass
        self.rows: torch.Tensor | None = None

    def reserve(self, total_tokens: int) -> None:
        return None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.frozen:
            self.keys[layer], self.values[layer] = k, v
            return k, v
        pk, pv = self.keys[layer], self.values[layer]
        assert pk is not None and pv is not None
        if self.rows is None:
            shape = (k.shape[0], -1, -1, -1)
            pk, pv = pk.expand(shape), pv.expand(shape)
        else:
            pk, pv = pk[self.rows], pv[self.rows]
        keys = torch.cat([pk, k], dim=2)
        self.branch_keys[layer] = keys
        return keys, torch.cat([pv, v], dim=2)

    def advance(self, new_tokens: int) -> None:
        if not self.frozen:  # branches never extend the shared prefix
            self.length += new_tokens
            self.frozen = True


class GroundingHeads(torch.nn.Module):
    """Training-only heads (not saved) on the hidden states entering the last decoder layer,
    whose attention is where an answer can look up the frames it names and copy their time.

    A grounding answer is a few digits, so the answer loss alone gives that lookup a weak
    signal. Three denser ones:

    - saliency: the question's last prompt token and each frame pair's visual tokens (averaged)
      are projected to ``width``; their scaled dot product plus a bias is the logit that the
      pair lies inside the asked event (``pair_saliency``), as moment retrieval models train
      a saliency score;
    - clock: every visual token names the three digits (tens, units, tenths) of the time
      printed before its pair, which an answer that finds the token can then copy;
    - pointer: each answer token that predicts a digit of a time points (softmax over the
      pairs, the same two projections' shape as saliency) at the pair whose printed time that
      is: the lookup the last layer's attention has to make to copy it.
    """

    def __init__(self, hidden: int, width: int = 64) -> None:
        super().__init__()
        self.query = torch.nn.Linear(hidden, width, bias=False)
        self.key = torch.nn.Linear(hidden, width, bias=False)
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.clock = torch.nn.Linear(hidden, 3 * 10)
        self.point_query = torch.nn.Linear(hidden, width, bias=False)
        self.point_key = torch.nn.Linear(hidden, width, bias=False)

    def saliency(self, questions: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Logits [N, P] for question states [N, D] and pair states [P, D]."""
        return _scaled_dot(self.query(questions.float()), self.key(pairs.float())) + self.bias

    def pointer(self, positions: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Logits [K, P] over the pairs [P, D] for answer positions' states [K, D]."""
        return _scaled_dot(self.point_query(positions.float()), self.point_key(pairs.float()))

    def clock_loss(self, visual: torch.Tensor, tenths: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the digits of ``tenths`` [P] from the visual token states [P, T, D]."""
        logits = self.clock(visual.float()).reshape(*visual.shape[:2], 3, 10)
        digits = torch.stack([tenths // 100 % 10, tenths // 10 % 10, tenths % 10], dim=-1)
        digits = digits[:, None].expand(-1, visual.shape[1], -1)
        return F.cross_entropy(logits.reshape(-1, 10), digits.reshape(-1))


def _scaled_dot(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.T / math.sqrt(q.shape[-1])


def branch_loss(
    model: Qwen3VL,
    branches: Branches | Sequence[Branches],
    *,
    visual_norm_weight: float = 0.0,
    heads: GroundingHeads | None = None,
    grounding: GroundingLosses = GroundingLosses(),
) -> torch.Tensor:
    """Mean over questions of each answer's mean cross-entropy, with one pass over the shared
    video prefix (the branches attend to its keys/values exactly as a full sequence would).

    Several videos (a sequence of ``Branches``) run as one batch: their prefixes right-padded
    into one pass, the questions of all of them batched by length. The result is the mean of
    each video's loss computed alone, in a fraction of the kernel launches that one video per
    pass costs (what a GPU step of a small model is made of).

    ``visual_norm_weight`` adds that times the mean square of the visual tokens and DeepStack
    features. Without it a model trained from scratch lets them grow into one huge constant
    vector (norm ~100 against ~1 for text embeddings) that drowns what they say about the
    frames, and it never learns to look.

    With ``heads``, the ``grounding`` weights add: ``saliency_weight`` times their saliency
    binary cross-entropy over the frame pairs of every grounding question
    (``branches.saliency``), ``clock_weight`` times their clock loss (``branches.pair_tenths``)
    and ``pointer_weight`` times their pointer cross-entropy (``branches.pointers``).

    ``grounding.attend_weight`` supervises the model's own lookup instead of a side head: the
    first query head of the last decoder layer, at every answer token that predicts a digit of
    a time, is trained (cross-entropy of its attention mass) to attend to the visual tokens of the frame
    pair printed with that time (``branches.pointers``), so that the copy the answer needs runs
    through the attention that produces it. With ``attend_first_digits`` only the first digit
    of each time is supervised: the later ones are found from the digits already written, the
    first from the question alone, which is the search grounding needs. That holds for times
    under 10 s only: after the "1" of "17.4", the next digit still chooses between the pairs
    printed 1.x and 10-19.x. ``attend_deciding_digits`` supervises every digit that still
    chooses a pair (``branches.deciding``) and none that only copies the one already chosen.

    ``grounding.name_weight`` adds the name loss (:func:`name_loss`): the visual tokens entering
    the last layer, read through the model's final norm and input embeddings, name the identity words
    of what their frame pair shows (``branches.words``), so that the keys the last layer's lookup
    searches carry those words in the space the question's words are embedded in.
    """
    videos = [branches] if isinstance(branches, Branches) else list(branches)
    prefix, prefix_mask = _batch_prefixes(model, videos)
    cache = _SharedPrefix(model.config.text.num_hidden_layers)
    seen: list[torch.Tensor] = []
    states: list[torch.Tensor] = []
    hooks = [model.model.visual.register_forward_hook(
        lambda _module, _args, out: seen.extend([out.tokens, *out.deepstack])
    )]
    use_saliency = heads is not None and grounding.saliency_weight > 0 and all(v.saliency is not None for v in videos)
    use_clock = heads is not None and grounding.clock_weight > 0 and all(v.pair_tenths is not None for v in videos)
    has_pointers = any(v.pointers is not None and len(v.pointers) > 0 for v in videos)
    use_pointer = heads is not None and grounding.pointer_weight > 0 and has_pointers
    use_attend = grounding.attend_weight > 0 and has_pointers
    use_heads = use_saliency or use_clock or use_pointer
    use_name = grounding.name_weight > 0 and all(v.words is not None for v in videos)
    contexts: list[AttentionContext] = []
    last = model.model.language_model.layers[-1]
    if use_heads or use_attend or use_name:
        def keep(_module: torch.nn.Module, args: tuple) -> None:
            states.append(args[0])
            contexts.append(args[1])

        hooks.append(last.register_forward_pre_hook(keep))
    count = len(videos)
    # Per-row answer losses and per-digit lookup losses, each with its video: averaged per video
    # at the end in one scatter, not one small op per row (a GPU step is bound by their count).
    answers: list[torch.Tensor] = []
    answered: list[int] = []
    attended: list[torch.Tensor] = []
    attended_by: list[int] = []
    salient: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in videos]
    pointed: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in videos]
    width_all = max(v.input_ids.shape[1] for v in videos)
    input_ids = torch.cat([F.pad(v.input_ids, (0, width_all - v.input_ids.shape[1])) for v in videos])
    labels_all = torch.cat([F.pad(v.labels, (0, width_all - v.labels.shape[1]), value=IGNORE) for v in videos])
    first_row = [0]
    for v in videos:
        first_row.append(first_row[-1] + len(v.lengths))
    lengths = [length for v in videos for length in v.lengths]
    owner = [n for n, v in enumerate(videos) for _ in v.lengths]
    # (row over all videos, position, pair) of every answer time digit
    pointers = [
        (first_row[n] + row, position, pair)
        for n, v in enumerate(videos) if (use_pointer or use_attend) and v.pointers is not None
        for row, position, pair in v.pointers.tolist()
    ]
    deciding = {
        (first_row[n] + row, position)
        for n, v in enumerate(videos) if grounding.attend_deciding_digits and v.pointers is not None
        for (row, position, _), chooses in zip(v.pointers.tolist(), cast(torch.Tensor, v.deciding).tolist(), strict=True)
        if chooses
    }
    try:
        prefix_out = model(**prefix, cache=cache, logits_to_keep=1, vision_chunk_pairs=None)  # type: ignore[arg-type]
        pair_keys = [_pair_key_positions(model, v) for v in videos] if use_heads or use_attend or use_name else None
        # Each frame pair's visual token states [P, T, D] in the prefix pass, per video.
        visual = (
            [states[0][n, keys] for n, keys in enumerate(pair_keys)]
            if pair_keys is not None and (use_heads or use_name) else None
        )
        pairs = [x.mean(dim=1) for x in visual] if visual is not None and use_heads else None
        prefix_width = prefix["input_ids"].shape[1]
        for rows in length_groups(lengths):
            width = max(lengths[i] for i in rows)
            ids, labels = input_ids[rows, :width], labels_all[rows, 1:width]
            video_of = torch.tensor([owner[i] for i in rows], device=ids.device)
            cache.rows = video_of if count > 1 else None
            mask = None if prefix_mask is None else torch.cat([prefix_mask[video_of], prefix_mask.new_ones(len(rows), width)], dim=1)
            deltas = prefix_out.rope_deltas[video_of] if count > 1 else prefix_out.rope_deltas.expand(len(rows), 1)
            logits = model(ids, attention_mask=mask, cache=cache, rope_deltas=deltas).logits[:, :-1].float()  # type: ignore[arg-type]
            per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
            per_row = per_token.sum(dim=1) / (labels != IGNORE).sum(dim=1).clamp(min=1)
            answers.append(per_row)
            answered += [owner[i] for i in rows]
            local = {row: k for k, row in enumerate(rows)}
            chosen = [r for r in pointers if r[0] in local]
            if grounding.attend_first_digits:
                written = {(r, position) for r, position, _ in chosen}  # the digits whose previous token is not a time's
                looked_up = [r for r in chosen if (r[0], r[1] - 1) not in written]
            elif grounding.attend_deciding_digits:
                looked_up = [r for r in chosen if (r[0], r[1]) in deciding]
            else:
                looked_up = chosen
            if use_pointer and pairs is not None and chosen:
                assert heads is not None
                for n in sorted({owner[r] for r, _, _ in chosen}):
                    mine = [(local[r], position, pair) for r, position, pair in chosen if owner[r] == n]
                    at = torch.tensor([[k, position] for k, position, _ in mine], device=ids.device)
                    targets = torch.tensor([pair for *_, pair in mine], device=ids.device)
                    pointed[n].append((heads.pointer(states[-1][at[:, 0], at[:, 1]], pairs[n]), targets))
            if use_attend and pair_keys is not None and looked_up:
                at = torch.tensor([[local[r], position] for r, position, _ in looked_up], device=ids.device)
                keys = cache.branch_keys[model.config.text.num_hidden_layers - 1]
                pointed_keys = torch.stack([pair_keys[owner[r]][pair] for r, _, pair in looked_up])  # [K, T]
                targets = torch.zeros(len(looked_up), keys.shape[2], dtype=torch.bool, device=ids.device)
                targets.scatter_(1, pointed_keys, True)
                allowed = None if mask is None else mask[at[:, 0]].bool()
                per_digit = _attend_loss(
                    cast(DecoderLayer, last), states[-1], contexts[-1], keys, at, targets,
                    prefix_length=prefix_width, allowed=allowed,
                )
                attended.append(per_digit)
                attended_by += [owner[r] for r, _, _ in looked_up]
            if use_saliency and pairs is not None:
                assert heads is not None
                for n in sorted({owner[i] for i in rows}):
                    mine = [i - first_row[n] for i in rows if owner[i] == n]  # the video's own rows
                    at = torch.tensor([local[first_row[n] + i] for i in mine], device=ids.device)
                    ends = torch.tensor([videos[n].question_lengths[i] - 1 for i in mine], device=ids.device)
                    saliency = videos[n].saliency
                    assert saliency is not None
                    salient[n].append((heads.saliency(states[-1][at, ends], pairs[n]), saliency[mine]))
    finally:
        for hook in hooks:
            hook.remove()
    total = _video_means(torch.cat(answers), answered, count)
    if visual_norm_weight and seen:
        tokens = [int((v.prefix["input_ids"] == model.config.video_token_id).sum()) for v in videos]
        by = [n for n, m in enumerate(tokens) for _ in range(m)]  # each visual token's video
        levels = [_video_means(t.float().pow(2).mean(dim=1), by, count) for t in seen]
        total = total + visual_norm_weight * torch.stack(levels).mean(dim=0)
    if attended:
        total = total + grounding.attend_weight * _video_means(torch.cat(attended), attended_by, count)
    if use_name and visual is not None:
        named = torch.stack([name_loss(model, x, cast(torch.Tensor, v.words)) for x, v in zip(visual, videos, strict=True)])
        total = total + grounding.name_weight * named
    if use_heads:  # the side heads' losses, each video's over its own frame pairs
        side = []
        for n, v in enumerate(videos):
            loss = total.new_zeros(())
            if salient[n]:
                scores, targets = torch.cat([s for s, _ in salient[n]]), torch.cat([t for _, t in salient[n]])
                if (known := targets >= 0).any():
                    loss = loss + grounding.saliency_weight * F.binary_cross_entropy_with_logits(scores[known], targets[known])
            if pointed[n]:
                loss = loss + grounding.pointer_weight * F.cross_entropy(
                    torch.cat([s for s, _ in pointed[n]]), torch.cat([t for _, t in pointed[n]]))
            if use_clock and visual is not None:
                assert heads is not None and v.pair_tenths is not None
                loss = loss + grounding.clock_weight * heads.clock_loss(visual[n], v.pair_tenths)
            side.append(loss)
        total = total + torch.stack(side)
    return total.mean()


def name_loss(model: Qwen3VL, visual: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the identity words each frame pair shows, read off its visual
    token states ``visual`` [P, T, D] through the final norm and the input embeddings (the logit
    lens of a tied model; in an untied one, the rows the question's words are embedded with):
    a word's logit for a pair is its highest over the pair's tokens (an object covers a few of
    them, the background all). ``words`` int8 [P, V'] from :func:`recipe.data.pair_words`:
    1 shown, 0 not shown, -1 not scored."""
    text = model.model.language_model
    logits = F.linear(text.norm(visual), text.embed_tokens.weight).float().amax(dim=1)  # [P, V]
    width = logits.shape[1]
    words = words[:, :width] if words.shape[1] >= width else F.pad(words, (0, width - words.shape[1]), value=-1)
    scored = words >= 0
    return F.binary_cross_entropy_with_logits(logits[scored], words[scored].float())


def _video_means(values: torch.Tensor, videos: list[int], count: int) -> torch.Tensor:
    """[count]: the mean of ``values`` [K] over each video's entries (``videos``: each entry's
    video); 0 for a video with none."""
    index = torch.tensor(videos, device=values.device)
    sums = values.new_zeros(count).index_add(0, index, values)
    return sums / torch.bincount(index, minlength=count).clamp(min=1)


def _batch_prefixes(model: Qwen3VL, videos: Sequence[Branches]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The videos' prefixes as one right-padded batch, and its attention mask (None for one video).

    The batch carries its MRoPE positions and rope deltas instead of the mask: a right pad
    comes after every real token, so causal attention keeps real tokens off the pads without a
    mask (and stays on the fused kernels); only the branches, which follow the pads, need it.
    """
    if len(videos) == 1:
        return videos[0].prefix, None
    width = max(v.prefix["input_ids"].shape[1] for v in videos)
    batch: dict[str, torch.Tensor] = {}
    for key in videos[0].prefix:
        parts = [v.prefix[key] for v in videos]
        if key in ("input_ids", "mm_token_type_ids", "attention_mask"):
            parts = [F.pad(t, (0, width - t.shape[1])) for t in parts]  # 0: pad id, text, masked
        batch[key] = torch.cat(parts)
    mask = batch.pop("attention_mask")
    batch["position_ids"], batch["rope_deltas"] = model.positions(
        batch["input_ids"], mask, batch.get("mm_token_type_ids"), batch.get("image_grid_thw"),
        batch.get("video_grid_thw"), position_ids=None, rope_deltas=None, cache=None,
    )
    return batch, mask


def _pair_key_positions(model: Qwen3VL, branches: Branches) -> torch.Tensor:
    """Prefix positions [P, T] of each frame pair's visual tokens."""
    assert branches.pair_tenths is not None
    visual = (branches.prefix["input_ids"][0] == model.config.video_token_id).nonzero().flatten()
    return visual.reshape(len(branches.pair_tenths), -1)


def _attend_loss(
    layer: DecoderLayer, x: torch.Tensor, ctx: AttentionContext, keys: torch.Tensor, at: torch.Tensor,
    targets: torch.Tensor, *, prefix_length: int, allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """-log of the attention mass that query head 0 of ``layer`` gives the key positions marked
    in ``targets`` [K, Lk] from the branch positions ``at`` [K, 2] (row, token), recomputed from
    the layer's input ``x`` [B, L, D], its rope tables ``ctx`` and its keys [B, KV, Lk, Dh]
    (Lk = prefix + L); ``allowed`` [K, Lk] masks padded prefix keys out."""
    attn = layer.self_attn
    rows, pos = at[:, 0], at[:, 1]
    h = layer.input_layernorm(x[rows, pos])
    q = attn.q_norm(attn.q_proj(h).view(len(at), -1, attn.head_dim))[:, 0]
    q = apply_rotary(q, ctx.cos[rows, pos], ctx.sin[rows, pos]).float()
    k = keys[rows, 0].float()  # query head 0 reads key head 0
    logits = torch.einsum("kd,kld->kl", q, k) / math.sqrt(attn.head_dim)
    causal = torch.arange(k.shape[1], device=k.device)[None] <= prefix_length + pos[:, None]
    logits = logits.masked_fill(~(causal if allowed is None else causal & allowed), float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(logits.masked_fill(~targets, float("-inf")), dim=1)


class SampleStream(torch.utils.data.Dataset):
    """Sample ``i`` of a run (step ``i // accumulation``, micro-batch ``i % accumulation``),
    rendered and encoded: a pure function of ``i`` and the seed, so worker processes change
    nothing but the speed."""

    def __init__(self, cfg: TrainConfig, processor: Processor) -> None:
        self.cfg, self.processor = cfg, processor

    def __len__(self) -> int:
        return self.cfg.steps * self.cfg.accumulation

    def __getitem__(self, index: int) -> Branches:
        return encode_branches(self.processor, make_sample(self.cfg.seed * 1_000_003 + index, self.cfg.sample))


def _as_is(branches: Branches) -> Branches:
    return branches


def sample_loader(cfg: TrainConfig, processor: Processor) -> torch.utils.data.DataLoader:
    """The run's samples in order; ``cfg.workers`` processes render ahead of the model (a GPU
    step of the tiny model is shorter than rendering and encoding its sample on one core)."""
    return torch.utils.data.DataLoader(
        SampleStream(cfg, processor), batch_size=None, shuffle=False, collate_fn=_as_is,
        **worker_options(cfg.workers, prefetch_factor=8),
    )


def training_processor(tok_dir: Path, frame_px: int) -> Processor:
    """The processor a run at ``frame_px`` plans its frames with: (frame_px / 32)^2 tokens a frame."""
    return Processor(Tokenizer.from_dir(tok_dir), ProcessorConfig(video_max_tokens_per_frame=(frame_px // 32) ** 2))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def prepare(out: Path, init: Path | None, cfg: TrainConfig) -> tuple[Qwen3VL, Path]:
    """The starting model (grown by ``cfg.grow``, then spread by ``cfg.spread``) and the folder
    holding its tokenizer files."""
    if init is not None:
        model, tok_dir = build_model(init), init
    else:
        tok_dir = out.with_name(out.name + ".tokenizer")
        corpus = corpus_texts(range(10_000, 10_000 + cfg.tokenizer_scenes), cfg.sample)
        save_tokenizer(train_tokenizer(corpus), tok_dir)
        with torch.device("meta"):
            model = Qwen3VL(tiny_config(Tokenizer.from_dir(tok_dir), hidden=cfg.model_hidden, layers=cfg.model_layers))
        model = model.to_empty(device="cpu")
        init_weights(model, cfg.seed)
        model.tie_weights()
    if cfg.grow is not None:
        model = grow(model, cfg.grow)
        log.info("grown to %d layers, %d key/value heads", model.config.text.num_hidden_layers,
                 model.config.text.num_key_value_heads)
    if cfg.spread is not None:
        model = spread(model, Tokenizer.from_dir(tok_dir), cfg.spread)
        log.info("head %s, %d word groups spread", "untied" if cfg.spread.untie else "kept", len(cfg.spread.groups))
    return model, tok_dir


def train(
    out: Path,
    *,
    init: Path | None = None,
    cfg: TrainConfig = TrainConfig(),
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> list[float]:
    """Train and save to ``out``; returns the loss of every optimiser step.

    Args:
        out: the checkpoint folder to write (replaced atomically at every save).
        init: a checkpoint folder to fine-tune; None trains the tiny configuration from scratch.
        cfg: schedule, sampling and seed.
        device: "cpu" or "cuda" (bf16 autocast on CUDA).
        progress: called with (step, steps, loss) after every optimiser step.
    """
    torch.manual_seed(cfg.seed)
    model, tok_dir = prepare(out, init, cfg)
    model.to(device).train()
    processor = training_processor(tok_dir, cfg.sample.frame_px)
    if cfg.tower_warmup is not None:
        warm_up_tower(model, processor, cfg.tower_warmup, device=device, progress=progress)
        model.train()
    if cfg.freeze_tower:  # keep what a warm-up taught the tower: the answers' loss erodes it (bench/RESULTS.md)
        tower = model.model.visual
        for module in (tower.patch_embed, tower.pos_embed, tower.blocks):
            module.requires_grad_(False)
    head = GroundingHeads(model.config.text.hidden_size).to(device) if cfg.grounding.needs_heads else None
    params = [*model.parameters(), *(head.parameters() if head is not None else ())]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else _null()
    losses: list[float] = []
    samples = iter(sample_loader(cfg, processor))
    start = time.time()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        total = 0.0
        drawn = [next(samples) for _ in range(cfg.accumulation)]
        if cfg.batch_videos > 1:  # similar lengths share a pass: less padding
            drawn.sort(key=lambda b: b.prefix["input_ids"].shape[1])
        for first in range(0, cfg.accumulation, cfg.batch_videos):
            batch = [b.to(device) for b in drawn[first : first + cfg.batch_videos]]
            with autocast:
                loss = branch_loss(
                    model, batch, visual_norm_weight=cfg.visual_norm_weight,
                    heads=head, grounding=cfg.grounding,
                ) * (len(batch) / cfg.accumulation)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
        if progress is not None:
            progress(step + 1, cfg.steps, total)
        if (step + 1) % cfg.log_every == 0:
            log.info("step %d/%d loss %.4f lr %.2e %.1fs", step + 1, cfg.steps, total, lr_at(step, cfg), time.time() - start)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            model.eval()
            save_checkpoint(model, tok_dir, out, frame_px=cfg.sample.frame_px)
            record = out / "training.json.tmp"
            record.write_text(json.dumps({"step": step + 1, "config": asdict(cfg), "losses": losses}, default=str))
            record.replace(out / "training.json")
            model.train()
    return losses


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def curriculum_stages(
    *,
    frame_px: int = 64,
    tower_warmup: WarmupConfig | None = None,
    snap_spans: bool = False,
    motion_warmup: WarmupConfig | None = None,
    grounding: GroundingLosses = GroundingLosses(),
) -> list[TrainConfig]:
    """The four-stage curriculum a fresh tiny model starts with (the first stages of ``builtin_stages``).

    Each stage continues from the previous checkpoint:

    1. background stills: one moment per sample, "What colour is the background at T
       seconds?" only. A model from scratch otherwise learns the text priors first and then
       ignores the visual tokens for good (its final hidden states carry nothing of what the
       vision tower encodes perfectly); one pure pixel question makes it look.
    2. stills, every QA form (objects, text, counts, colours): what there is to see.
    3. short videos (4-12 s, few frame pairs), 8 questions per video sharing its prefix,
       grounding and QA weighted up: finding moments and reading their timestamps.
    4. the evaluation world (8-60 s, slow actions), the same mix.

    Visual tokens are kept on the text embeddings' scale (``visual_norm_weight``). The
    keywords change the schedule for experiments (defaults: the built-in's start): ``frame_px``
    for every stage, a ``tower_warmup`` before stage 1 (its ``frame_px`` must match), and for the
    video stages ``snap_spans`` (answers on the printed frame-pair times), a ``motion_warmup``
    before stage 3 (usually with ``moving`` > 0) and the ``grounding`` losses.
    """
    kinds: tuple[TaskKind, ...] = ("grounding", "grounding", "grounding", "qa", "qa", "caption", "count", "order")
    world = SampleSpec().world
    short = dataclasses.replace(world, min_seconds=4.0, max_seconds=12.0, action_scale=1.5)
    common = {"log_every": 10, "save_every": 50, "visual_norm_weight": 0.05}
    video = {"grounding": grounding, **common}
    return [
        TrainConfig(steps=150, accumulation=16, lr=1.5e-3, warmup_steps=20, seed=0, tower_warmup=tower_warmup,
                    sample=SampleSpec(frame_px=frame_px, stills=True, focuses=("background",), world=world), **common),
        TrainConfig(steps=200, accumulation=16, lr=1.5e-3, warmup_steps=10, seed=1,
                    sample=SampleSpec(frame_px=frame_px, stills=True, world=world), **common),
        TrainConfig(steps=700, accumulation=8, lr=1.5e-3, warmup_steps=20, seed=2, tower_warmup=motion_warmup,
                    sample=SampleSpec(frame_px=frame_px, questions=8, kinds=kinds, world=short, snap_spans=snap_spans), **video),
        TrainConfig(steps=500, accumulation=4, lr=1e-3, warmup_steps=20, seed=3,
                    sample=SampleSpec(frame_px=frame_px, questions=8, kinds=kinds, world=world, snap_spans=snap_spans), **video),
    ]


def builtin_stages() -> list[TrainConfig]:
    """The schedule that produced the built-in checkpoint (``vidlm train --recipe builtin``).

    Each stage continues from the previous one's checkpoint (bfloat16 on disk between stages):

    1-4. ``curriculum_stages()``: a fresh tiny model at 64 px, stills then videos, every task.
    5. 128 px frames (16 visual tokens a frame pair instead of 4): a warm-up of the vision tower
       alone labelling every token of 320,000 stills (shape, colour, action, direction,
       background; 70% of them inside a moving event), then the stills stage again with the
       tower frozen. The tower stays frozen from here on (the answers' loss erodes what the
       warm-up taught it; its mergers train).
    6-9. grounding questions only, 8 to a video, answers snapped to the printed frame-pair
       times, with the saliency, clock and lookup losses, the lookup supervised at each time's
       first digit: four cosine cycles of 1,200 steps.
    10-11. the same with the lookup supervised at every deciding digit
       (``GroundingLosses.attend_deciding_digits``; the first digit alone leaves "1.x" against
       "1x.x" open): 1,200 steps, then a cycle of 3,600.
    12-13. stage 4's full task mix at 128 px with those losses, which brings QA and dense
       captions back: 500 and 800 steps.
    14. the same with QA weighted up (4 of a video's 8 questions, no ordering): 1,800 steps.
    15. the same on long videos only (24-60 s, where it found the fewest events), grounding
       and QA 3 questions each: 3,000 steps.
    16. that mix on the whole evaluation world (8-60 s) again, at lr 3e-4 instead of 1e-3:
       1,200 steps.

    The cycles are the runs as they were made (bench/RESULTS.md, sessions 12 to 16), each a
    restart of the cosine schedule; the speed-only fields are as they ran (stage 5 put 16 stills
    in a pass). A rerun draws the same samples under the same schedule and batching; its float
    rounding drifts from the recorded run's after the first steps (bench/RESULTS.md, session 14).
    """
    warmup = WarmupConfig(stills=320_000, batch=64, frame_px=128, lr=1e-3, seed=11, moving=0.7, background=True)
    first = GroundingLosses(saliency_weight=1.0, clock_weight=1.0, attend_weight=3.0, attend_first_digits=True)
    deciding = dataclasses.replace(first, attend_first_digits=False, attend_deciding_digits=True)
    at_128 = curriculum_stages(frame_px=128, snap_spans=True, grounding=deciding)
    stills = dataclasses.replace(at_128[1], steps=150, tower_warmup=warmup, batch_videos=16, freeze_tower=True)
    mix = dataclasses.replace(at_128[3], freeze_tower=True)

    def video(
        steps: int, seed: int, *kinds: TaskKind, losses: GroundingLosses = deciding, world: WorldParams | None = None,
        lr: float = mix.lr,
    ) -> TrainConfig:
        sample = dataclasses.replace(mix.sample, kinds=kinds or mix.sample.kinds, world=world or mix.sample.world)
        return dataclasses.replace(mix, steps=steps, seed=seed, lr=lr, grounding=losses, sample=sample)

    long = dataclasses.replace(mix.sample.world, min_seconds=24.0)  # up to the world's own 60 s
    last_mix = ("grounding", "grounding", "grounding", "qa", "qa", "qa", "caption", "count")

    return [
        *curriculum_stages(),
        stills,
        *(video(1200, seed, "grounding", losses=first) for seed in (60, 61, 62, 63)),
        video(1200, 64, "grounding"),
        video(3600, 65, "grounding"),
        video(500, 66),
        video(800, 67),
        video(1800, 69, "grounding", "grounding", "qa", "qa", "qa", "qa", "caption", "count"),
        video(3000, 70, *last_mix, world=long),
        video(1200, 72, *last_mix, lr=3e-4),
    ]


def train_builtin(
    out: Path,
    *,
    device: str = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
    stages: list[TrainConfig] | None = None,
    workers: int | None = None,
    batch_videos: int | None = None,
) -> list[float]:
    """Reproduce the built-in checkpoint into ``out`` (stage folders beside it), or run
    ``stages`` (e.g. ``curriculum_stages(frame_px=128, ...)``) the same way. ``workers`` and
    ``batch_videos``, when given, set every stage's (they change the speed and the float
    rounding, not the samples or the schedule).

    Run again after an interruption, it resumes: the leading stages whose folders already hold
    the finished checkpoint of the same configuration are kept, not retrained.
    """
    losses: list[float] = []
    init: Path | None = None
    trained = False
    stages = [with_speed(cfg, workers=workers, batch_videos=batch_videos) for cfg in stages or builtin_stages()]
    for number, cfg in enumerate(stages, 1):
        target = out if number == len(stages) else out.with_name(f"{out.name}.stage{number}")
        done = finished_losses(target, cfg) if not trained else None  # a stage on a new start is new
        if done is not None:
            log.info("stage %d of %d: %s is finished, kept", number, len(stages), target)
            losses += done
        else:
            losses += train(target, init=init, cfg=cfg, device=device, progress=progress)
            trained = True
        init = target
    return losses


SPEED_ONLY = ("workers", "batch_videos")  # TrainConfig fields that change the speed of a run, not its result


def with_speed(cfg: TrainConfig, *, workers: int | None = None, batch_videos: int | None = None) -> TrainConfig:
    """``cfg`` with the speed-only fields that are given (not None) replaced; the rest its own."""
    given = {"workers": workers, "batch_videos": batch_videos}
    return dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})


def _as_json(cfg: TrainConfig) -> dict[str, object]:
    return cast(dict[str, object], json.loads(json.dumps(asdict(cfg), default=str)))


def _with_defaults(got: object, default: object) -> object:
    """``got`` (a recorded config) with the fields it lacks taken from ``default`` (the default
    TrainConfig's): a field newer than the run, which ran as the field's default does. Nested
    configs (``sample.world``, ...) are filled field by field where ``default`` nests them too;
    a nested config that is None by default (``tower_warmup``, ``grow``, ``spread``) is compared
    as recorded."""
    if not isinstance(got, dict) or not isinstance(default, dict):
        return got
    return {**default, **{k: _with_defaults(v, default.get(k)) for k, v in got.items()}}


def finished_losses(out: Path, cfg: TrainConfig) -> list[float] | None:
    """The step losses of ``out`` if it holds the last checkpoint of a run of ``cfg`` (up to
    its speed-only fields), else None."""
    try:
        record = json.loads((out / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (out / "model.safetensors").is_file():
        return None
    want = _as_json(cfg)
    got = record.get("config", {}) if isinstance(record, dict) else {}
    got = _with_defaults(got, _as_json(TrainConfig()))
    same = {k: v for k, v in got.items() if k not in SPEED_ONLY} == {k: v for k, v in want.items() if k not in SPEED_ONLY}
    return list(record["losses"]) if same and record.get("step") == cfg.steps else None
