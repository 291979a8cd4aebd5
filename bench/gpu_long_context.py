"""Long context on a GPU: a 256K-token video prompt through our model, bf16, flash-attn if installed.

A randomly initialised model of a released configuration (no download: the shapes are what
matter for speed and memory) prefills a video prompt of ``--tokens`` tokens in chunks into a
preallocated KV cache, with the vision tower over ``--vision-chunk-pairs`` frame pairs at a
time, then decodes ``--decode-tokens`` tokens. It reports prefill tokens/s, decode tokens/s
(from per-token timestamps), the KV cache size and the peak GPU memory.

    python bench/gpu_long_context.py                        # 256K tokens, Qwen3-VL-2B shapes
    python bench/gpu_long_context.py --dry-run              # CPU, tiny model, 4K tokens

``--dry-run`` checks the whole path on CPU with the tiny preset in float32.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vidlm.attention import resolve_attn_implementation  # noqa: E402
from vidlm.config import Qwen3VLConfig  # noqa: E402
from vidlm.generate import GenerationConfig, generate_ids  # noqa: E402
from vidlm.model import Qwen3VL  # noqa: E402
from vidlm.presets import preset  # noqa: E402

log = logging.getLogger("bench.gpu_long_context")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def random_model(config: Qwen3VLConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Qwen3VL:
    """The model with random weights, built directly on ``device`` (norm weights stay 1)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen3VL(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "norm" not in name:
                p.normal_(0.0, 0.02)
    return model.to(dtype).eval()


def video_prompt(config: Qwen3VLConfig, tokens: int, pair_grid: tuple[int, int], device: torch.device,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """About ``tokens`` tokens: per frame pair a timestamp text and its vision start/end run."""
    h, w = pair_grid
    merge = config.vision.spatial_merge_size
    per_pair = h * w // merge**2
    pairs = max(1, round((tokens - 32) / (per_pair + 7)))
    stamp = [16, 17, 18, 19, 20]  # stands for "<t seconds>"
    pair_ids = stamp + [config.vision_start_token_id] + [config.video_token_id] * per_pair + [config.vision_end_token_id]
    ids = list(range(30, 46)) + pair_ids * pairs + list(range(50, 66))
    input_ids = torch.tensor([ids], device=device)
    vision = config.vision
    patch_values = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    g = torch.Generator(device=device).manual_seed(0)
    pixels = torch.randn(pairs * h * w, patch_values, generator=g, device=device, dtype=dtype)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                mm_token_type_ids=(input_ids == config.video_token_id).long() * 2,
                pixel_values_videos=pixels, video_grid_thw=torch.tensor([[pairs, h, w]]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cpu" if args.dry_run else args.device)
    dtype = torch.float32 if args.dry_run else DTYPES[args.dtype]
    config = preset("tiny" if args.dry_run else args.model)
    implementation = resolve_attn_implementation(args.attn, device, dtype)
    model = random_model(config, device, dtype)
    model.set_attn_implementation(implementation)
    batch = video_prompt(config, args.tokens, tuple(args.pair_grid), device, dtype)
    length = batch["input_ids"].shape[1]
    log.info("%d prompt tokens, %s on %s, attention %s", length, dtype, device, implementation)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_gib = peak_memory_gib(device)
    sync(device)
    start, stamps = time.perf_counter(), []
    generation = GenerationConfig(max_new_tokens=args.decode_tokens)
    for token in generate_ids(model, batch, generation, prefill_chunk_size=args.chunk_size,
                              vision_chunk_pairs=args.vision_chunk_pairs):
        int(token[0])  # waits for the device
        stamps.append(time.perf_counter() - start)
    text = config.text
    kv_gib = 2 * text.num_hidden_layers * text.num_key_value_heads * text.head_dim * (length + args.decode_tokens)
    kv_gib *= torch.finfo(dtype).bits / 8 / 2**30
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {
        "model": "tiny" if args.dry_run else args.model, "device": str(device), "dtype": str(dtype),
        "attention": implementation, "prompt_tokens": length, "prefill_s": round(stamps[0], 3),
        "prefill_tok_s": round(length / stamps[0], 1), "decode_tok_s": round(decode, 2),
        "kv_cache_gib": round(kv_gib, 3), "weights_and_inputs_gib": round(base_gib, 3),
        "peak_memory_gib": round(peak_memory_gib(device), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256 * 1024, help="prompt tokens (default 262144)")
    parser.add_argument("--model", default="Qwen/Qwen3-VL-2B-Instruct", help="a preset (shapes only, random weights)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--attn", choices=["auto", "sdpa", "flash"], default="auto")
    parser.add_argument("--chunk-size", type=int, default=8192, help="prefill tokens per decoder pass")
    parser.add_argument("--vision-chunk-pairs", type=int, default=64, help="frame pairs per vision pass")
    parser.add_argument("--pair-grid", type=int, nargs=2, default=(16, 28), metavar=("H", "W"),
                        help="patches per frame pair (default 16x28: 112 tokens, 256x448 pixels)")
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, float32 (use a small --tokens)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if args.dry_run and args.tokens == parser.get_default("tokens"):
        args.tokens = 4096
    result = run(args)
    print("| " + " | ".join(result) + " |\n|" + " --- |" * len(result) + "\n| "
          + " | ".join(str(v) for v in result.values()) + " |", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    with torch.inference_mode():
        main()
