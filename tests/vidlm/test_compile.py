"""Decoding through torch.compile (``Qwen3VL.compile_decoding``, ``vidlm.load(compile_decoding=True)``)."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("transformers")
import tiny  # noqa: E402

import vidlm  # noqa: E402
from vidlm.generate import GenerationConfig, generate_steps  # noqa: E402

STEPS = 12
needs_compiler = pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler (scripts/setup.sh dev installs g++)",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compile")
    tiny.build_reference_checkpoint(out, seed=9)
    return out


def batch_of(lm: vidlm.VideoLM, batch_size: int = 1) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(3)
    messages = [
        [{"role": "user", "content": [
            {"type": "video", "video": rng.integers(0, 256, (4 + 2 * i, 64, 96, 3), dtype=np.uint8),
             "timestamps": np.arange(4 + 2 * i) * 0.5},
            {"type": "text", "text": "When does it change?" + " Why?" * i},
        ]}]
        for i in range(batch_size)
    ]
    return lm.prepare(messages if batch_size > 1 else messages[0])


def decode(lm: vidlm.VideoLM, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy ids [STEPS, B] and their log-probabilities, never stopping early."""
    config = GenerationConfig(max_new_tokens=STEPS, do_sample=False, eos_token_ids=())
    steps = list(generate_steps(lm.model, batch, config, logprobs=True))
    return torch.stack([s.token for s in steps]), torch.stack([s.logprob for s in steps])


def count_compiled_steps(lm: vidlm.VideoLM) -> list[int]:
    """Record the new-token count of every call the compiled step receives."""
    calls: list[int] = []
    compiled = lm.model._compiled_step
    assert compiled is not None

    def counting(embeds, *args):
        calls.append(embeds.shape[1])
        return compiled(embeds, *args)

    lm.model._compiled_step = counting
    return calls


@needs_compiler
@pytest.mark.parametrize("batch_size", [1, 2])
def test_compiled_decoding_gives_the_eager_tokens_and_logprobs(folder, batch_size):
    eager = vidlm.load(folder)
    compiled = vidlm.load(folder, compile_decoding=True)
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # no extra keys
    calls = count_compiled_steps(compiled)
    batch = batch_of(eager, batch_size)  # a padded batch when 2: the key-padding mask is used
    want_ids, want_lp = decode(eager, batch)
    got_ids, got_lp = decode(compiled, batch)
    assert calls == [1] * (STEPS - 1)  # every step after the prompt, and only those
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_lp, want_lp, atol=1e-4, rtol=0)
    # The prompt itself stays eager and is unchanged.
    out_e = eager.model(batch["input_ids"][:1, :8])
    out_c = compiled.model(batch["input_ids"][:1, :8])
    torch.testing.assert_close(out_c.logits, out_e.logits, atol=0, rtol=0)


def test_a_failing_compiler_falls_back_to_eager_with_a_warning(folder, caplog):
    eager = vidlm.load(folder)
    lm = vidlm.load(folder, compile_decoding=True)

    def broken(embeds, position_ids, cache, key_padding_mask):
        cache.advance(1)  # fails midway, after the pass moved the cache on
        raise RuntimeError("no C++ compiler")

    lm.model._compiled_step = broken
    batch = batch_of(eager)
    with caplog.at_level(logging.WARNING, logger="vidlm.model"):
        got_ids, got_lp = decode(lm, batch)
    want_ids, want_lp = decode(eager, batch)
    assert torch.equal(got_ids, want_ids)
    torch.testing.assert_close(got_lp, want_lp, atol=1e-5, rtol=0)
    assert lm.model._compiled_step is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0] and "eagerly" in warnings[0]


def test_compile_decoding_can_be_switched_off(folder):
    lm = vidlm.load(folder, compile_decoding=True)
    assert lm.model._compiled_step is not None
    lm.model.compile_decoding(False)
    assert lm.model._compiled_step is None
    assert vidlm.load(folder).model._compiled_step is None  # off by default
