"""Training throughput against videos per forward pass (`vidlm train --batch-videos N`).

The same rendered samples (stage 4 of ``curriculum_stages``: the evaluation world, 8 questions a
video, every grounding loss the session-9 runs used) are run as forward + backward passes of
1, 4, 16, ... videos, from the built-in checkpoint at the asked frame size. Per video it
prints the seconds and the operator calls (aten ops on a CPU, GPU kernels on CUDA), the count
a small model's GPU step is bound by.

    python bench/train_batching.py --device cpu --px 128 --videos 16 --batches 1 4 16
    python bench/train_batching.py --device cuda --px 128 --videos 64 --batches 1 8 32 64 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recipe.train import (  # noqa: E402
    GroundingHeads,
    GroundingLosses,
    SampleStream,
    branch_loss,
    curriculum_stages,
    training_processor,
)
from vidlm.weights import build_model  # noqa: E402

BUILTIN = ROOT / "vidlm" / "builtin"
LOSSES = GroundingLosses(saliency_weight=0.5, clock_weight=1.0, attend_weight=3.0, attend_deciding_digits=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--px", type=int, default=128, help="frame side (a multiple of 32)")
    parser.add_argument("--videos", type=int, default=16, help="samples run at every batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    model = build_model(BUILTIN).to(args.device).train()
    stage = curriculum_stages(frame_px=args.px)[3]
    stream = SampleStream(stage, training_processor(BUILTIN, args.px))  # the samples stage 4 trains on
    samples = [stream[i] for i in range(args.videos)]
    samples.sort(key=lambda b: b.prefix["input_ids"].shape[1])  # as `train` orders a step's videos
    samples = [b.to(args.device) for b in samples]
    heads = GroundingHeads(model.config.text.hidden_size).to(args.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def run(batch: int) -> None:
        for first in range(0, len(samples), batch):
            with autocast:
                loss = branch_loss(model, samples[first : first + batch], visual_norm_weight=0.05, heads=heads, grounding=LOSSES)
            loss.backward()
        if cuda:
            torch.cuda.synchronize()

    rows = []
    for batch in args.batches:
        run(batch)  # warm-up: allocator, kernels picked
        start = time.perf_counter()
        run(batch)
        seconds = (time.perf_counter() - start) / len(samples)
        with profile(activities=[ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]) as prof:
            run(batch)
        if cuda:
            calls = sum(e.count for e in prof.key_averages() if e.device_type.name == "CUDA")
        else:
            calls = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
        rows.append({"batch_videos": batch, "seconds_per_video": round(seconds, 4), "calls_per_video": round(calls / len(samples))})
    if args.json:
        print(json.dumps({"device": args.device, "px": args.px, "videos": args.videos, "rows": rows}))
        return
    base = rows[0]
    print(f"| videos per pass | s / video | {'kernels' if cuda else 'aten calls'} / video | speed vs {base['batch_videos']} |")
    print("| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch_videos']} | {r['seconds_per_video']:.4f} | {r['calls_per_video']} | "
              f"{base['seconds_per_video'] / r['seconds_per_video']:.2f}x |")


if __name__ == "__main__":
    main()
