"""The float32 floor of an 8K video prompt's prefill ('small' config), against both sides' times.

Counts the matrix products and attention the model defines for the prompt of
``bench/speed.py`` (vision tower, DeepStack mergers, text decoder; ours skips the last layer's
queries, output projection and MLP for all but the last position, the reference does not),
times each one alone on this machine with its real shapes (torch's GEMMs, the CPU flash
kernel), and adds them up: no elementwise op, norm, rope, copy or Python is counted, so no
implementation of these float32 numbers on this machine can prefill faster than the floor.
Then it measures both sides' time to first token on the same prompt (``bench/speed.py``'s
worker, alternating) and prints the best ratio the floor leaves.

    python bench/prefill_floor.py [--tokens 8192] [--workdir DIR] [--runs 2] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the bench's prompt, sizes, prefill chunk and worker)

from vidlm.model import VISION_CHUNK_PAIRS  # noqa: E402


def timed(fn: Callable[[], object], reps: int = 3) -> float:
    """Seconds per call (best of ``reps`` after one warm-up)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache  # chunks of one shape are timed once
def gemm(rows: int, k: int, n: int) -> float:
    a, b = torch.randn(rows, k), torch.randn(n, k)
    return timed(lambda: torch.nn.functional.linear(a, b))


@functools.cache
def flash(b: int, heads: int, lq: int, lk: int, dh: int, causal: bool) -> float:
    kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    q, k, v = torch.randn(b, heads, lq, dh), torch.randn(b, heads, lk, dh), torch.randn(b, heads, lk, dh)
    return timed(lambda: kernel(q, k, v, is_causal=causal))


def floor(tokens: int) -> dict[str, tuple[float, float, float]]:
    """Per part: (GFLOP ours, GFLOP reference, seconds ours) at the kernels' measured rates."""
    torch.manual_seed(0)
    text, vision = speed.TEXT_SIZES["small"], speed.VISION_SIZES["small"]
    d, inter, layers = text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"]
    heads, kv, dh = text["num_attention_heads"], text["num_key_value_heads"], text["head_dim"]
    vd, vi, depth, vheads = vision["hidden_size"], vision["intermediate_size"], vision["depth"], vision["num_heads"]
    batch = speed.video_batch(tokens, "ours")
    length = batch["input_ids"].shape[1]
    pairs, h, w = batch["video_grid_thw"][0].tolist()
    per_pair = h * w
    patch = batch["pixel_values_videos"].shape[1]  # channels x temporal patch x patch^2
    parts: dict[str, tuple[float, float, float]] = {}

    # Vision tower, in chunks of frame pairs; the last chunk holds the rest.
    chunks = [min(VISION_CHUNK_PAIRS, pairs - s) for s in range(0, pairs, VISION_CHUNK_PAIRS)]
    shapes = [(patch, vd), (vd, 3 * vd), (vd, vd), (vd, vi), (vi, vd)]
    repeat = [1, depth, depth, depth, depth]
    secs = flops = 0.0
    for c in chunks:
        rows = c * per_pair
        for (k, n), times in zip(shapes, repeat, strict=True):
            secs += times * gemm(rows, k, n)
            flops += times * 2 * rows * k * n
        merged = rows // 4  # the merger and three DeepStack mergers: 4*vd -> 4*vd -> d
        secs += 4 * (gemm(merged, 4 * vd, 4 * vd) + gemm(merged, 4 * vd, d))
        flops += 4 * 2 * merged * (4 * vd * 4 * vd + 4 * vd * d)
    parts["vision GEMMs"] = (flops / 1e9, flops / 1e9, secs)
    secs = sum(depth * flash(c, vheads, per_pair, per_pair, vd // vheads, False) for c in chunks)
    flops = depth * 4 * pairs * per_pair * per_pair * vd
    parts["vision attention"] = (flops / 1e9, flops / 1e9, secs)

    # Text decoder, prefilled in chunks; ours runs the last layer's queries, o_proj and MLP for
    # the prompt's last position only (its keys and values for every position).
    starts = list(range(0, length, speed.PREFILL_CHUNK))
    kv_shapes = [(d, kv * dh), (d, kv * dh)]
    rest_shapes = [(d, heads * dh), (heads * dh, d), (d, inter), (d, inter), (inter, d)]
    secs_ours = flops_ours = flops_ref = 0.0
    for s in starts:
        rows = min(speed.PREFILL_CHUNK, length - s)
        kv_s = sum(gemm(rows, k, n) for k, n in kv_shapes)
        rest_s = sum(gemm(rows, k, n) for k, n in rest_shapes)
        kv_f = sum(2 * rows * k * n for k, n in kv_shapes)
        rest_f = sum(2 * rows * k * n for k, n in rest_shapes)
        secs_ours += layers * kv_s + (layers - 1) * rest_s
        flops_ours += layers * kv_f + (layers - 1) * rest_f
        flops_ref += layers * (kv_f + rest_f)
    parts["text GEMMs"] = (flops_ours / 1e9, flops_ref / 1e9, secs_ours)
    secs = flops_ours = flops_ref = 0.0
    for s in starts:
        rows = min(speed.PREFILL_CHUNK, length - s)
        per_layer = flash(1, heads, rows, rows, dh, True)  # the chunk's causal square
        f = 4 * heads * dh * rows * (rows + 1) / 2
        if s:  # the cached prefix: a kv head's query heads stacked as rows, no mask
            per_layer += flash(1, kv, heads // kv * rows, s, dh, False)
            f += 4 * heads * dh * rows * s
        secs += (layers - 1) * per_layer
        flops_ours += (layers - 1) * f
        flops_ref += layers * f
    parts["text attention"] = (flops_ours / 1e9, flops_ref / 1e9, secs)
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--workdir", help="where the 'small' checkpoint is built (a temp folder by default)")
    parser.add_argument("--runs", type=int, default=2, help="alternating runs of each side's prefill (0: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = floor(args.tokens)
    total = sum(s for *_, s in parts.values())
    result: dict[str, object] = {
        "parts": {name: {"gflop_ours": round(a, 1), "gflop_reference": round(b, 1), "seconds": round(s, 2),
                         "gflop_per_s": round(a / s, 1)} for name, (a, b, s) in parts.items()},
        "floor_s": round(total, 2),
        "tflop_ours": round(sum(a for a, _, _ in parts.values()) / 1e3, 3),
        "tflop_reference": round(sum(b for _, b, _ in parts.values()) / 1e3, 3),
    }
    if args.runs:
        with tempfile.TemporaryDirectory() as tmp:
            folder = speed.checkpoint(Path(args.workdir or tmp), "small")
            ttft: dict[str, list[float]] = {"ours": [], "ref": []}
            for _ in range(args.runs):
                for side in ("ours", "ref"):
                    out = speed.measure("generate", side, folder=folder, tokens=args.tokens, new_tokens=2)
                    ttft[side].append(out["ttft_s"])
        ours, ref = statistics.median(ttft["ours"]), statistics.median(ttft["ref"])
        result |= {"ours_s": ttft["ours"], "reference_s": ttft["ref"], "ratio": round(ref / ours, 3),
                   "best_ratio_at_floor": round(ref / total, 3)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'part':18s} {'GFLOP ours':>11s} {'reference':>10s} {'s at floor':>10s} {'GFLOP/s':>8s}")
    for name, (a, b, s) in parts.items():
        print(f"{name:18s} {a:11.0f} {b:10.0f} {s:10.2f} {a / s:8.0f}")
    print(f"floor (these kernels alone, back to back): {total:.2f} s; "
          f"{result['tflop_ours']} TFLOP ours, {result['tflop_reference']} the reference")
    if args.runs:
        print(f"time to first token: ours {result['ours_s']}, reference {result['reference_s']}: "
              f"ratio {result['ratio']}x now, at most {result['best_ratio_at_floor']}x at the floor")


if __name__ == "__main__":
    main()
