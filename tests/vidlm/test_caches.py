"""Caches across questions: visual features on disk, and prompt-prefix KV caches in memory."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("transformers")
import tiny  # noqa: E402

import vidlm  # noqa: E402
from vidlm.kv_cache import KVCache  # noqa: E402
from vidlm.prefix_cache import PrefixCache, common_prefix_length  # noqa: E402
from vidlm.vision import VisualFeatures  # noqa: E402
from vidlm.visual_cache import VisualDiskCache  # noqa: E402

GREEDY = dict(do_sample=False)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caches")
    tiny.build_reference_checkpoint(out, seed=5)
    return out


def video_message(question: str, seed: int = 0, frames: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 64, 96, 3), dtype=np.uint8)
    return [{"role": "user", "content": [
        {"type": "video", "video": video, "timestamps": np.arange(frames) * 0.5},
        {"type": "text", "text": question},
    ]}]


def count_calls(lm: vidlm.VideoLM) -> tuple[list[int], list[int]]:
    """Record vision-tower calls (frame pairs) and the token count of every decoder pass."""
    tower, passes = [], []
    original = lm.model.encode_visual

    def counting(pixels, grid, **kw):
        tower.append(int(grid[:, 0].sum()))
        return original(pixels, grid, **kw)

    lm.model.encode_visual = counting
    lm.model.model.language_model.register_forward_pre_hook(
        lambda _m, args: passes.append(args[0].shape[1])
    )
    return tower, passes


def features(n: int, seed: int) -> VisualFeatures:
    g = torch.Generator().manual_seed(seed)
    return VisualFeatures(tokens=torch.randn(n, 8, generator=g), deepstack=[torch.randn(n, 8, generator=g)] * 2)


def test_disk_cache_round_trip_and_lru_bound(tmp_path):
    disk = VisualDiskCache(tmp_path, max_bytes=2 * 3 * 40 * 8 * 4 + 2000)  # about two entries
    stored = {k: features(40, i) for i, k in enumerate("abc")}
    disk.put("a", stored["a"])
    disk.put("b", stored["b"])
    old = time.time() - 100
    os.utime(disk.path("b"), (old, old))  # "a" is now the more recently used
    disk.put("c", stored["c"])
    assert disk.get("b") is None
    for key in "ac":
        got = disk.get(key)
        assert got is not None and torch.equal(got.tokens, stored[key].tokens)
        assert len(got.deepstack) == 2 and torch.equal(got.deepstack[1], stored[key].deepstack[1])
    assert not list(tmp_path.glob("*.tmp"))


def test_visual_features_come_from_disk_in_a_new_process(folder, tmp_path):
    first = vidlm.load(folder, cache_dir=tmp_path)
    answer = first.generate(video_message("When?"), max_new_tokens=6, **GREEDY)
    second = vidlm.load(folder, cache_dir=tmp_path)
    tower, _ = count_calls(second)
    assert second.generate(video_message("When?"), max_new_tokens=6, **GREEDY) == answer
    assert tower == [] and second.visual_cache.disk_hits == 1


def test_follow_up_prefills_only_its_own_tokens_and_answers_as_cold(folder):
    warm = vidlm.load(folder, prefix_cache_bytes=1 << 26)
    tower, passes = count_calls(warm)
    first, follow = video_message("When does it start?"), video_message("Where is the red thing?")
    warm.generate(first, max_new_tokens=8, **GREEDY)
    passes.clear()
    answer = warm.generate(follow, max_new_tokens=8, **GREEDY)
    ids = [warm.prepare(m)["input_ids"][0] for m in (first, follow)]
    shared = common_prefix_length(ids[0], ids[1])
    assert shared > 50 and passes[0] == ids[1].shape[0] - shared
    assert tower == [3] and warm.prefix_cache is not None and warm.prefix_cache.hits == 1
    cold = vidlm.load(folder)
    assert answer == cold.generate(follow, max_new_tokens=8, **GREEDY)
    other_video = warm.generate(video_message("Where is the red thing?", seed=1), max_new_tokens=8, **GREEDY)
    assert other_video == cold.generate(video_message("Where is the red thing?", seed=1), max_new_tokens=8, **GREEDY)
    assert warm.prefix_cache.hits == 1  # same tokens, other pixels: never reused


def test_prefix_cache_is_memory_bounded_and_prefers_the_longest_prefix():
    def cache(length: int) -> KVCache:
        c = KVCache(num_layers=1, batch_size=1, num_kv_heads=1, head_dim=4, capacity=length,
                    dtype=torch.float32, device="cpu")
        c.keys[0][:] = torch.arange(length, dtype=torch.float32)[:, None]
        c.length = length
        return c

    prefixes = PrefixCache(max_bytes=cache(64).nbytes() * 2, min_tokens=4)
    ids = torch.arange(64)
    prefixes.store("v", ids[:32], cache(32))
    prefixes.store("v", ids[:48], cache(48))
    hit = prefixes.lookup("v", torch.cat([ids[:40], torch.tensor([999, 998])]), extra_capacity=3)
    assert hit is not None and hit.length == 40 and hit.capacity == 45
    assert torch.equal(hit.keys[0][0, 0, :40, 0], torch.arange(40, dtype=torch.float32))
    assert prefixes.lookup("w", ids, extra_capacity=1) is None
    prefixes.store("v", ids, cache(64))
    assert prefixes.nbytes <= prefixes.max_bytes and len(prefixes) == 2  # the 32-token entry went
