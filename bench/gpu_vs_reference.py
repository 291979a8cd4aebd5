"""Ours against the reference (transformers) on a GPU: the same random weights, bf16, SDPA.

For each prompt length, a video prompt of that many tokens (``bench/speed.py``'s inputs: each
side gets its own processor's rows of the same random frames) is generated from on both sides
in one process, one after the other: time to first token (vision tower + prefill), decode
tokens/s from per-token timestamps, and the peak GPU memory of that call. A side that runs out
of GPU memory is reported as such.

    python bench/gpu_vs_reference.py                      # 'small' config, 8K/32K/128K tokens
    python bench/gpu_vs_reference.py --tokens 8192 --config tiny
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import speed  # noqa: E402

log = logging.getLogger("bench.gpu_vs_reference")


def measure(side: str, model: Any, tokens: int, new_tokens: int) -> dict[str, Any]:
    batch = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in speed.video_batch(tokens, side).items()}
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    try:
        if side == "ours":
            stamps = speed.timed_tokens_ours(Path(), batch, new_tokens, model=model)
        else:
            try:
                stamps = speed.timed_tokens_ref(model, batch, new_tokens)
            except ValueError as err:  # a transformers release that takes no mm_token_type_ids
                if "mm_token_type_ids" not in str(err):
                    raise
                batch.pop("mm_token_type_ids")
                stamps = speed.timed_tokens_ref(model, batch, new_tokens)
    except torch.OutOfMemoryError:
        return {"side": side, "prompt_tokens": batch["input_ids"].shape[1], "error": "out of GPU memory"}
    return {"side": side, "prompt_tokens": batch["input_ids"].shape[1], **speed.rates(stamps),
            "peak_extra_gib": (torch.cuda.max_memory_allocated() - base) / 2**30}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(speed.TEXT_SIZES), default="small")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--decode-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    import transformers

    from vidlm.weights import build_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = speed.checkpoint(Path(tmp), args.config)
        ours = build_model(folder, dtype=torch.bfloat16, device="cuda").eval()
        ref = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
            folder, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
        rows = []
        for tokens in args.tokens:
            for side, model in (("ours", ours), ("ref", ref)):
                with torch.inference_mode():
                    measure(side, model, 1024, 2)  # warm-up: kernels, allocator
                    rows.append(measure(side, model, tokens, args.decode_tokens))
                log.info("%s", rows[-1])
    result = {"config": args.config, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transformers": transformers.__version__, "rows": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
