"""Checkpoint loading: a local folder or a hub repo id -> a ready ``Qwen3VL``.

Unusual here: the model is built on the meta device and the (memory-mapped) safetensors
tensors are *assigned*, so no random init runs and no second copy exists. Loading is strict:
a missing, unexpected or wrongly shaped key is an error listing the names. The first release's
hub files store MoE expert weights transposed relative to the current reference; which layout a
file uses is decided by the ``transformers_version`` that wrote its ``config.json`` (never
guessed from shapes, which cannot tell the layouts apart when H == 2I), then checked against
the shapes.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open

from .config import Qwen3VLConfig
from .model import Qwen3VL

log = logging.getLogger(__name__)

DType = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# Files a model folder may hold; the hub download fetches only these.
CHECKPOINT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model"]
_EXPERT_KEY = re.compile(r"\.mlp\.experts\.(gate_up_proj|down_proj)$")


class CheckpointError(ValueError):
    """A checkpoint folder is incomplete or does not match its config."""


def resolve_checkpoint(name_or_path: str | Path, *, revision: str | None = None) -> Path:
    """A local model folder for a path or a hub repo id (downloaded, or taken from the cache).

    Raises:
        CheckpointError: the folder lacks ``config.json``, or the hub cannot be reached.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: not a model folder (no config.json)")
        return path
    repo_id = str(name_or_path)
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise CheckpointError(f"{repo_id}: no such folder, and not a hub repo id like 'Qwen/Qwen3-VL-2B-Instruct'")
    return _download(repo_id, revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_PATTERNS))
    except Exception as exc:  # the hub client raises many types for "offline" / "not found"
        raise CheckpointError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            f"If this machine is offline, download the model elsewhere (e.g. `hf download {repo_id} "
            f"--local-dir DIR`) and pass that folder: vidlm.load('DIR') or --model DIR"
        ) from exc
    missing = [name for name in _expected_files(folder) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: the download of {repo_id!r} is incomplete, missing {missing}")
    return folder


def _expected_files(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return sorted(set(json.loads(index.read_text())["weight_map"].values()))
    return ["config.json", "model.safetensors"]


def read_config(folder: Path) -> tuple[Qwen3VLConfig, dict]:
    """The parsed config and the raw ``config.json`` dict."""
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    try:
        return Qwen3VLConfig.from_hf_config(raw), raw
    except ValueError as exc:
        raise CheckpointError(f"{folder / 'config.json'}: {exc}") from exc


def shard_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint (from the index when there is one)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{folder}: no *.safetensors weights")
    missing = [str(f.name) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{folder}: shards listed in the index are missing: {missing}")
    return files


def iter_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) for every tensor, memory-mapped from disk."""
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def uses_first_release_expert_layout(raw_config: dict) -> bool:
    """Whether expert weights are stored as [E, H, 2I] / [E, I, H] (writers before 5.0)."""
    version = str(raw_config.get("transformers_version", "5"))
    major = version.split(".")[0]
    return major.isdigit() and int(major) < 5


def expert_from_first_release_layout(tensor: torch.Tensor) -> torch.Tensor:
    """[E, H, 2I] -> [E, 2I, H] (gate_up) or [E, I, H] -> [E, H, I] (down)."""
    return tensor.transpose(1, 2).contiguous()


def load_state_dict(folder: Path, config: Qwen3VLConfig, raw_config: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Checkpoint tensors under our parameter names, converted to ``dtype``."""
    transpose_experts = config.text.is_moe and uses_first_release_expert_layout(raw_config)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in iter_tensors(shard_files(folder)):
        if transpose_experts and _EXPERT_KEY.search(key):
            tensor = expert_from_first_release_layout(tensor)
        state[key] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state


def build_model(
    folder: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    head_optional: bool = False,
) -> Qwen3VL:
    """Build ``Qwen3VL`` from a checkpoint folder (strict).

    ``head_optional``: a checkpoint without ``lm_head.weight`` loads with the head tied to the
    embeddings (embedding models, which never use the head, may be exported without one).

    Raises:
        CheckpointError: bad config, missing/unexpected keys, wrong shapes, missing files.
    """
    config, raw = read_config(folder)
    state = load_state_dict(folder, config, raw, dtype)
    if head_optional and "lm_head.weight" not in state and not config.tie_word_embeddings:
        log.info("%s has no lm_head.weight; tying the unused head to the embeddings", folder)
        config = replace(config, tie_word_embeddings=True)
    model = model_from_state(config, state, folder)
    model = model.to(device).eval()
    log.info("loaded %s (%s, %.1fM parameters)", folder, config.model_type,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model


def model_from_state(config: Qwen3VLConfig, state: dict[str, torch.Tensor], source: Path | str) -> Qwen3VL:
    """``Qwen3VL(config)`` holding ``state``'s tensors themselves (strict; ``source`` names the
    weights in errors). A tied model's head is its embedding: a stored head is ignored.

    Raises:
        CheckpointError: missing/unexpected keys, wrong shapes.
    """
    with torch.device("meta"):
        model = Qwen3VL(config)
    tied = config.tie_word_embeddings
    if tied:
        state = {k: v for k, v in state.items() if k != "lm_head.weight"}  # some exports keep a copy
    check_keys(model, state, source, tied=tied)
    model.load_state_dict(state, strict=not tied, assign=True)
    if tied:
        model.tie_weights()
    return model


def check_keys(model: Qwen3VL, state: dict[str, torch.Tensor], folder: Path | str, *, tied: bool) -> None:
    """Raise ``CheckpointError`` listing missing, unexpected and wrongly shaped keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if tied:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {expected[k]}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_names(wrong)}")
    if problems:
        raise CheckpointError(f"{folder}: " + "; ".join(problems))


def _names(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"
