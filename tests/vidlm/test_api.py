"""The public API (``vidlm.load`` -> ``VideoLM``) and the generation controls."""

from __future__ import annotations

import json
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
from vidlm.generate import GenerationConfig, apply_penalties, filter_top_k_top_p, generate_ids  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api")
    tiny.build_reference_checkpoint(out, seed=11)
    return out


@pytest.fixture(scope="module")
def lm(folder):
    return vidlm.load(folder)


def video_message(question: str, seed: int = 0, frames: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "role": "user",
            "content": [
                {
                    "type": "video",
                    "video": rng.integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8),
                    "timestamps": np.arange(frames) * 0.5 + 10.0,
                },
                {"type": "text", "text": question},
            ],
        }
    ]


GREEDY = dict(do_sample=False)


def test_public_api_shapes(lm):
    batch = lm.processor(video_message("When?"))
    assert {"input_ids", "attention_mask", "pixel_values_videos", "video_grid_thw"} <= set(batch)
    logits = lm.model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], lm.model.config.text.vocab_size)
    prompt = lm.tokenizer.decode(batch["input_ids"][0].tolist())
    assert "<10.2 seconds><|vision_start|>" in prompt and "<11.2 seconds>" in prompt


@pytest.mark.parametrize("stats", [None, {"image_mean": [0.48, 0.46, 0.41], "image_std": [0.27, 0.26, 0.28]}])
def test_uint8_video_rows_give_the_float_rows_features(folder, tmp_path, stats):
    """``prepare`` keeps video rows uint8; the tower normalises them as the processor would, with
    the statistics of its own checkpoint folder. ``processor`` keeps the reference's float rows."""
    if stats is not None:
        folder = Path(shutil.copytree(folder, tmp_path / "other_stats"))
        (folder / "preprocessor_config.json").write_text(json.dumps(stats))
    lm = vidlm.load(folder)
    assert lm.model.model.visual.pixel_norm == lm.processor.config.pixel_norm
    msg = video_message("When?", seed=4)
    raw, floats = lm.prepare(msg), lm.processor(msg)
    assert raw["pixel_values_videos"].dtype == torch.uint8 and floats["pixel_values_videos"].dtype == torch.float32
    a = lm.model.encode_visual(raw["pixel_values_videos"], raw["video_grid_thw"], chunk_pairs=1)
    b = lm.model.encode_visual(floats["pixel_values_videos"], floats["video_grid_thw"], chunk_pairs=1)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    for x, y in zip(a.deepstack, b.deepstack, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(lm.model(**raw).logits, lm.model(**floats).logits, rtol=0, atol=0)
    # The streamed prefill (vision chunks of one pair inside prefill chunks of 7 tokens) too.
    greedy = GenerationConfig(max_new_tokens=6, eos_token_ids=())
    runs = [
        torch.stack(list(generate_ids(lm.model, b, greedy, prefill_chunk_size=7, vision_chunk_pairs=1)))
        for b in (raw, floats)
    ]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("sampling", [GREEDY, dict(do_sample=True, seed=3, temperature=1.5, repetition_penalty=1.3)])
def test_answer_logprobs_are_the_models_own_next_token_log_softmax(lm, sampling):
    """``answer`` writes what ``generate`` writes; each token's log-probability is the raw
    model's (a full forward over prompt + answer), whatever penalties and sampling chose it."""
    msg = video_message("What happens?", seed=2)
    full = lm.answer(msg, max_new_tokens=8, eos_token_ids=(), **sampling)
    assert full.text == lm.generate(msg, max_new_tokens=8, eos_token_ids=(), **sampling)
    assert len(full.token_ids) == len(full.logprobs) == 8
    batch = lm.prepare(msg)
    n = batch["input_ids"].shape[1]
    ids = torch.tensor([full.token_ids])
    batch = {**batch, "input_ids": torch.cat([batch["input_ids"], ids], 1),
             "attention_mask": torch.ones(1, n + ids.shape[1], dtype=torch.long),
             "mm_token_type_ids": torch.cat([batch["mm_token_type_ids"], torch.zeros_like(ids)], 1)}
    with torch.no_grad():
        logits = lm.model(**batch).logits[0, n - 1 : -1].float()
    want = torch.log_softmax(logits, -1).gather(1, ids[0, :, None])[:, 0]
    torch.testing.assert_close(torch.tensor(full.logprobs), want, rtol=1e-4, atol=1e-4)
    assert full.confidence == pytest.approx(float(want.min().exp()), rel=1e-4)
    # A stop token ends it: it is among the tokens (with its log-probability), not in the text.
    stop = full.token_ids[3]
    first = full.token_ids.index(stop)
    short = lm.answer(msg, max_new_tokens=8, eos_token_ids=(stop,), **sampling)
    assert short.token_ids == full.token_ids[: first + 1] and short.logprobs == pytest.approx(full.logprobs[: first + 1], abs=1e-5)
    assert short.text == lm.tokenizer.decode(list(full.token_ids[:first]), skip_special_tokens=True)
    with pytest.raises(ValueError, match="one conversation"):
        lm.answer([msg, msg])


def test_loaded_settings_come_from_the_checkpoint(lm):
    cfg = lm.generation_config
    assert cfg.do_sample and cfg.temperature == 0.7 and cfg.top_k == 20 and cfg.top_p == 0.8
    assert cfg.eos_token_ids == (lm.tokenizer.token_to_id("<|im_end|>"), lm.tokenizer.token_to_id("<|endoftext|>"))


def test_stream_pieces_join_to_the_generated_text(lm):
    msg = video_message("Describe it.", seed=1)
    text = lm.generate(msg, max_new_tokens=12, **GREEDY)
    assert isinstance(text, str) and text
    stream = lm.stream(msg, max_new_tokens=12, **GREEDY)
    first = next(stream)
    assert stream.answer is None  # not before the last piece is read
    assert first + "".join(stream) == text
    want = lm.answer(msg, max_new_tokens=12, **GREEDY)
    assert stream.answer is not None and (stream.answer.text, stream.answer.token_ids) == (want.text, want.token_ids)
    assert stream.answer.logprobs == pytest.approx(want.logprobs, abs=1e-5)
    assert list(stream) == [] and stream.answer.text == text  # read again: stays


def test_padded_batch_equals_each_conversation_alone(lm):
    short = [{"role": "user", "content": "hi"}]
    convs = [video_message("When does the ball drop?", seed=2), short, video_message("Why?", seed=3, frames=4)]
    alone = [lm.generate(c, max_new_tokens=10, **GREEDY) for c in convs]
    assert lm.generate(convs, max_new_tokens=10, **GREEDY) == alone


def test_sampling_is_deterministic_with_a_seed(lm):
    msg = video_message("Go.", seed=4)
    a = lm.generate(msg, max_new_tokens=10, do_sample=True, seed=7)
    b = lm.generate(msg, max_new_tokens=10, do_sample=True, seed=7)
    c = lm.generate(msg, max_new_tokens=10, do_sample=True, seed=8, temperature=5.0, top_k=0, top_p=1.0)
    assert a == b and a != c


def test_video_reader_turns_paths_into_frames(folder):
    calls = []

    def reader(path):
        calls.append(Path(path))
        return np.full((4, 64, 64, 3), 128, dtype=np.uint8), np.array([0.0, 1.0, 2.0, 3.0])

    lm = vidlm.load(folder, video_reader=reader)
    batch = lm.prepare([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}, {"type": "text", "text": "?"}]}])
    assert calls == [Path("clip.mp4")]
    assert batch["video_grid_thw"].tolist() == [[2, 4, 4]]
    with pytest.raises(ValueError, match="vidlm takes frames"):
        vidlm.load(folder).prepare([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}]}])


def test_load_argument_errors(folder):
    with pytest.raises(ValueError, match="attn_implementation='flash' needs"):
        vidlm.load(folder, attn_implementation="flash")
    with pytest.raises(ValueError, match="dtype='float64'"):
        vidlm.load(folder, dtype="float64")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            vidlm.load(folder, device="cuda")


def test_top_k_top_p_filtering():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_top_k_top_p(logits, 2, 1.0)).tolist() == [[False, False, True, True, True]]
    probs = logits.softmax(-1)[0]  # 0.636, 0.234, 0.086, ...
    assert probs[0] < 0.8 < probs[0] + probs[1]
    kept = ~torch.isinf(filter_top_k_top_p(logits, 0, 0.8))
    assert kept.tolist() == [[True, True, False, False, False]]
    assert (~torch.isinf(filter_top_k_top_p(logits, 0, 0.01))).sum() == 1


def test_repetition_and_presence_penalties():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    cfg = GenerationConfig(repetition_penalty=2.0, presence_penalty=0.25)
    out = apply_penalties(logits, seen=torch.tensor([[0, 1]]), generated=torch.tensor([[1, 3]]), config=cfg)
    # token 0: 2/2; token 1: -2*2 - 0.25; token 2 untouched; token 3: 0.5 - 0.25
    assert out.tolist() == [[1.0, -4.25, 1.0, 0.25]]


def test_generation_config_validation_and_overrides():
    with pytest.raises(ValueError, match="top_p=1.5"):
        GenerationConfig(top_p=1.5)
    with pytest.raises(TypeError, match="unknown generation settings \\['beam_size'\\]"):
        GenerationConfig().updated(beam_size=4)
    assert GenerationConfig().updated(temperature=None, top_k=5).top_k == 5


def test_builtin_model_missing_is_a_clear_error(monkeypatch, tmp_path):
    import vidlm.api

    monkeypatch.setattr(vidlm.api, "BUILTIN_DIR", tmp_path / "none")
    with pytest.raises(vidlm.CheckpointError, match="built-in checkpoint is not installed"):
        vidlm.load()


def test_follow_up_questions_reuse_the_vision_tower_output(folder):
    lm = vidlm.load(folder)
    calls = []
    original = lm.model.encode_visual

    def counting(pixels, grid):
        calls.append(tuple(grid.tolist()[0]))
        return original(pixels, grid)

    lm.model.encode_visual = counting
    first = lm.generate(video_message("When?", seed=9), max_new_tokens=6, **GREEDY)
    again = lm.generate(video_message("When?", seed=9), max_new_tokens=6, **GREEDY)
    other = video_message("Where?", seed=9)
    lm.generate(other, max_new_tokens=6, **GREEDY)
    assert len(calls) == 1 and first == again
    assert lm.visual_cache.hits == 2 and lm.visual_cache.misses == 1
    lm.generate(video_message("When?", seed=10), max_new_tokens=6, **GREEDY)
    assert len(calls) == 2
    uncached = vidlm.load(folder)
    assert uncached.generate(other, max_new_tokens=6, **GREEDY) == lm.generate(other, max_new_tokens=6, **GREEDY)
