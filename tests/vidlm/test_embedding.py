"""Qwen3-VL-Embedding (``vidlm.load_embedder``) against the pinned transformers reference.

The reference's embedding is the final normed hidden state of ``Qwen3VLModel`` at the last
token of the instruction-formatted prompt, L2-normalised (reference doc §11). Ours batches
inputs with left padding; the reference runs each input alone, unpadded.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("transformers")
import tiny  # noqa: E402

import vidlm  # noqa: E402
from vidlm.embedding import embedding_messages, with_final_punctuation  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedder")
    ref = tiny.build_reference_checkpoint(folder, seed=21, tie=False)
    return ref, folder


def clip(seed: int, frames: int = 4, start: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8),
        "timestamps": start + 0.5 * np.arange(frames),
    }


INPUTS = [
    {"text": "the red circle enters", "instruction": "Retrieve videos relevant to the user's query"},
    {**clip(1), "text": "a caption of the clip"},
    clip(2, frames=6, start=3.0),
    {"text": "a longer passage of text than the others, so the batch is padded"},
    {},
]


@torch.no_grad()
def reference_vector(ref, emb: vidlm.VideoEmbedder, item: dict) -> torch.Tensor:
    batch = emb.processor(embedding_messages(item), add_generation_prompt=True)
    hidden = ref.model(**batch).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(hidden, dim=-1)


def test_vectors_equal_the_references_last_token_state(checkpoint):
    ref, folder = checkpoint
    emb = vidlm.load_embedder(folder, batch_size=3)
    got = emb.embed(INPUTS)
    expected = torch.stack([reference_vector(ref, emb, item) for item in INPUTS])
    assert got.shape == (len(INPUTS), emb.dim)
    assert (got - expected).abs().max().item() <= 1e-5
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(INPUTS)), atol=1e-6)
    # Distinct inputs give distinct vectors (a pooled padding token would repeat one).
    assert (got @ got.T - torch.eye(len(INPUTS))).abs().max() < 0.999


def test_prompt_follows_the_reference_format(checkpoint):
    _, folder = checkpoint
    emb = vidlm.load_embedder(folder)
    decode = lambda item: emb.processor.tokenizer.decode(  # noqa: E731
        emb.processor(embedding_messages(item))["input_ids"][0].tolist()
    )
    assert decode({"text": "hello"}) == (
        "<|im_start|>system\nRepresent the user's input.<|im_end|>\n"
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "user\nNULL<|im_end|>" in decode({})
    video_then_text = decode({**clip(0), "text": "words", "instruction": "Find it"})
    assert video_then_text.startswith("<|im_start|>system\nFind it.<|im_end|>")
    assert video_then_text.index("<0.2 seconds>") < video_then_text.index("words")


def test_instruction_punctuation():
    assert with_final_punctuation("Find clips") == "Find clips."
    assert with_final_punctuation("Find clips?  ") == "Find clips?"
    assert with_final_punctuation("找视频。") == "找视频。"


def test_matryoshka_dim_keeps_the_leading_dims_renormalised(checkpoint):
    _, folder = checkpoint
    emb = vidlm.load_embedder(folder)
    full = emb.embed(INPUTS[:2])
    short = emb.embed(INPUTS[:2], dim=16)
    assert short.shape == (2, 16)
    assert torch.allclose(short, torch.nn.functional.normalize(full[:, :16], dim=-1), atol=1e-6)
    with pytest.raises(ValueError, match="dim=0"):
        emb.embed(INPUTS[:1], dim=0)


def test_bad_inputs_are_refused(checkpoint):
    _, folder = checkpoint
    emb = vidlm.load_embedder(folder)
    with pytest.raises(ValueError, match="unknown keys"):
        emb.embed([{"txt": "typo"}])
    with pytest.raises(ValueError, match="timestamps"):
        emb.embed([{"video": clip(0)["video"]}])
    assert emb.embed([]).shape == (0, emb.dim)


def test_a_checkpoint_without_its_head_loads(checkpoint, tmp_path):
    ref, folder = checkpoint
    headless = tmp_path / "headless"
    shutil.copytree(folder, headless)
    weights = load_file(headless / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, headless / "model.safetensors")
    assert json.loads((headless / "config.json").read_text())["tie_word_embeddings"] is False
    with pytest.raises(vidlm.CheckpointError, match="lm_head"):
        vidlm.load(headless)
    expected = vidlm.load_embedder(folder).embed(INPUTS[:2])
    assert torch.equal(vidlm.load_embedder(headless).embed(INPUTS[:2]), expected)
