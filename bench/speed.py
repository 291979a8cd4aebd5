"""Model speed: ours against the reference (transformers 5.24.0) with the same random weights.

Every measurement runs in its own subprocess (so ``ru_maxrss`` is that measurement's peak), on
the same inputs for both sides: float32, SDPA, CPU threads as torch sets them. Prompts are
"video prompts" laid out as the processor does (a timestamp text, then vision start, the frame
pair's placeholder tokens and vision end, per frame pair) with random pixels, handed over as
each side's processor does: normalised float32 rows to the reference, uint8 rows to ours (the
vision tower normalises them chunk by chunk, to the same float rows).

- prefill: time to the first generated token (vision tower + prefill + LM head).
- decode: tokens/s from per-token timestamps (a streamer on the reference's ``generate``, the
  yields of our ``generate_ids``), never generate-minus-prefill.
- follow-up: time to first token of a second question about the same video; ours with its
  caches (a first question warmed them), the reference cold, as the reference stack runs.
- preprocess: frames of 720p to the planned size; ours in bulk, the reference rules (PIL
  bicubic, rescale, normalise) frame by frame.

    python bench/speed.py --quick --json      # reduced run, one JSON object on stdout
    python bench/speed.py                     # 'tiny' and 'small', 1K/8K/32K in full

Speed ratios are ours over the reference's rate (above 1 is better); the memory ratio is the
reference's peak RSS over ours (likewise).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.speed")

IMG, VID, VS, VE, IM_START, IM_END, PAD = 262, 263, 259, 260, 258, 256, 257
PAIR_GRID = (24, 32)  # patches per frame pair (h, w): 192 merged tokens
PREFILL_CHUNK = 4096  # tokens per decoder pass of our prefill
TEXT_SIZES = {
    "tiny": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=64, mrope=[12, 10, 10]),
    "small": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=64, mrope=[12, 10, 10]),
}
VISION_SIZES = {
    "tiny": dict(depth=4, hidden_size=128, intermediate_size=512, num_heads=2, deepstack=[0, 1, 2]),
    "small": dict(depth=8, hidden_size=384, intermediate_size=1536, num_heads=6, deepstack=[1, 3, 5]),
}


# ----------------------------------------------------------------------------- checkpoint
def config_dicts(tok: Any, name: str) -> dict[str, Any]:
    """Keyword arguments for the reference ``Qwen3VLConfig`` of a named size (tests/vidlm/tiny.py style)."""
    t, v = dict(TEXT_SIZES[name]), VISION_SIZES[name]
    mrope = t.pop("mrope")
    text = dict(vocab_size=len(tok), max_position_embeddings=262144, rms_norm_eps=1e-6, **t,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": mrope,
                                 "mrope_interleaved": True})
    vision = dict(depth=v["depth"], hidden_size=v["hidden_size"], intermediate_size=v["intermediate_size"],
                  num_heads=v["num_heads"], patch_size=16, temporal_patch_size=2, spatial_merge_size=2,
                  in_channels=3, out_hidden_size=t["hidden_size"], num_position_embeddings=2304,
                  deepstack_visual_indexes=v["deepstack"], hidden_act="gelu_pytorch_tanh")
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    return dict(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def build_checkpoint(folder: Path, name: str) -> None:
    """Save a random reference model of size ``name`` in the released format."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    sys.path.insert(0, str(ROOT / "tests" / "vidlm"))
    import tiny

    tok = tiny.build_tokenizer(folder)
    torch.manual_seed(0)
    model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**config_dicts(tok, name))).eval()
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    log.info("checkpoint %s: %.1fM parameters", name, params / 1e6)


# ----------------------------------------------------------------------------- inputs
def video_batch(tokens: int, side: str, *, question_seed: int = 0, pixel_seed: int = 0) -> dict[str, Any]:
    """A video prompt of about ``tokens`` tokens: frame pairs of ``PAIR_GRID`` with timestamps.

    The pixels are the same random frames for both sides, as each side's processor hands them
    over: normalised float32 rows for the reference, the uint8 rows that ``VideoLM.prepare``
    gives our model (the tower normalises them chunk by chunk) for ours.
    """
    import torch

    from vidlm.image_ops import PixelNorm

    h, w = PAIR_GRID
    per_pair = h * w // 4
    pairs = max(1, round((tokens - 24) / (per_pair + 7)))
    g = torch.Generator().manual_seed(question_seed)
    text = lambda n: torch.randint(0, 256, (n,), generator=g).tolist()  # noqa: E731
    ids = [IM_START] + list(range(100, 110))
    for _ in range(pairs):
        ids += list(range(40, 45)) + [VS] + [VID] * per_pair + [VE]
    ids += text(10) + [IM_END, IM_START] + list(range(120, 122))
    input_ids = torch.tensor([ids])
    pixels = torch.randint(0, 256, (pairs * h * w, 1536), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(pixel_seed))
    if side == "ref":
        pixels = PixelNorm()(pixels)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                mm_token_type_ids=(input_ids == VID).long() * 2, pixel_values_videos=pixels,
                video_grid_thw=torch.tensor([[pairs, h, w]]))


# ----------------------------------------------------------------------------- workers
def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed_tokens_ours(folder: Path, batch: dict[str, Any], new_tokens: int, **caches: Any) -> list[float]:
    """Timestamps (from the call) at which our generation yielded each token."""
    from vidlm.generate import GenerationConfig, generate_ids
    from vidlm.weights import build_model

    model = caches.pop("model", None) or build_model(folder)
    start, stamps = time.perf_counter(), []
    for _ in generate_ids(model, batch, GenerationConfig(max_new_tokens=new_tokens), **caches):
        stamps.append(time.perf_counter() - start)
    return stamps


class Stamps:
    """A ``generate`` streamer recording when each new token arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter() - self.start)

    def end(self) -> None:
        pass


def timed_tokens_ref(model: Any, batch: dict[str, Any], new_tokens: int) -> list[float]:
    import torch

    stamps = Stamps()
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       eos_token_id=None, pad_token_id=PAD, streamer=stamps)
    return stamps.times


def load_ref(folder: Path) -> Any:
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    return Qwen3VLForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="sdpa").eval()


def rates(stamps: list[float]) -> dict[str, float]:
    """Time to first token and decode tokens/s over the remaining per-token timestamps."""
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"ttft_s": stamps[0], "decode_tok_s": decode}


def worker_generate(side: str, folder: Path, tokens: int, new_tokens: int, compile_decoding: bool = False) -> dict[str, Any]:
    import torch

    torch.set_grad_enabled(False)
    batch = video_batch(tokens, side)
    if side == "ref":
        stamps = timed_tokens_ref(load_ref(folder), batch, new_tokens)
    elif compile_decoding:
        from vidlm.weights import build_model

        model = build_model(folder)
        model.compile_decoding()
        # The compiler runs once per process (a server's start-up), before the measured prompt.
        ids = torch.arange(100, 164)[None]  # text only: no placeholders to fill
        warm = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        timed_tokens_ours(folder, warm, 6, model=model)
        stamps = timed_tokens_ours(folder, batch, new_tokens, model=model, prefill_chunk_size=PREFILL_CHUNK)
    else:
        stamps = timed_tokens_ours(folder, batch, new_tokens, prefill_chunk_size=PREFILL_CHUNK)
    return {**rates(stamps), "prompt_tokens": int(batch["input_ids"].shape[1])}


def worker_followup(side: str, folder: Path, tokens: int) -> dict[str, Any]:
    """TTFT of a second question about the same video (ours warm, the reference cold)."""
    import torch

    torch.set_grad_enabled(False)
    first, follow = video_batch(tokens, side, question_seed=1), video_batch(tokens, side, question_seed=2)
    if side == "ref":
        return {"ttft_s": timed_tokens_ref(load_ref(folder), follow, 1)[0]}
    from vidlm.prefix_cache import PrefixCache
    from vidlm.visual_cache import VisualCache
    from vidlm.weights import build_model

    caches = dict(model=build_model(folder), prefix_cache=PrefixCache(max_bytes=8 << 30),
                  visual_cache=VisualCache(max_bytes=4 << 30), prefill_chunk_size=PREFILL_CHUNK)
    timed_tokens_ours(folder, first, 1, **dict(caches))
    return {"ttft_s": timed_tokens_ours(folder, follow, 1, **dict(caches))[0]}


def worker_preprocess(side: str, frames: int, batch_frames: int = 120) -> dict[str, Any]:
    """720p uint8 frames -> normalised patches at the planned size (448x800), ``batch_frames`` at a time.

    Working in batches keeps both sides' float32 outputs (4.3 MB per frame) within memory; the
    timed work per frame is the same as for one call over all frames.
    """
    import numpy as np
    import PIL.Image
    import torch

    from vidlm.image_ops import PixelNorm, patchify, video_to_patches, video_to_tchw

    height, width, mean, std = 448, 800, (0.5,) * 3, (0.5,) * 3
    base = np.random.default_rng(0).integers(0, 256, (8, 720, 1280, 3), dtype=np.uint8)
    video = np.tile(base, (batch_frames // 8, 1, 1, 1))
    seconds, patches = 0.0, 0
    for _ in range(frames // batch_frames):
        start = time.perf_counter()
        if side == "ours":
            rows, _ = video_to_patches(video_to_tchw(video), height, width, norm=PixelNorm(mean, std, 1 / 255),
                                       patch_size=16, temporal_patch_size=2, merge_size=2)
        else:
            # The reference's per-image rules (PIL bicubic, rescale, normalise), frame by frame.
            out = []
            for frame in video:
                small = np.asarray(PIL.Image.fromarray(frame).resize((width, height), PIL.Image.BICUBIC))
                x = torch.from_numpy(small.astype(np.float32) / 255.0).permute(2, 0, 1)
                out.append((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
            rows, _ = patchify(torch.stack(out), patch_size=16, temporal_patch_size=2, merge_size=2)
            rows = rows.contiguous()
        seconds += time.perf_counter() - start
        patches += int(rows.shape[0])
        del rows
    return {"seconds": seconds, "patches": patches}


def run_worker(args: argparse.Namespace) -> None:
    folder = Path(args.folder) if args.folder else None
    if args.task == "generate":
        out = worker_generate(args.side, folder, args.tokens, args.new_tokens, bool(args.compile_decoding))
    elif args.task == "followup":
        out = worker_followup(args.side, folder, args.tokens)
    else:
        out = worker_preprocess(args.side, args.frames)
    out["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(out))


# ----------------------------------------------------------------------------- driver
def measure(task: str, side: str, *, folder: Path | None = None, **kw: int) -> dict[str, Any]:
    """Run one measurement in a fresh subprocess; return its JSON."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--task", task, "--side", side]
    if folder is not None:
        cmd += ["--folder", str(folder)]
    for key, value in kw.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    log.info("running %s", " ".join(cmd[2:]))
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    log.info("  -> %s", result)
    return result


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(configs=["small"], lengths={1024: 32, 8192: 16, 32768: 8}, followup_tokens=8192, frames=1200)
    return dict(configs=["tiny", "small"], lengths={1024: 64, 8192: 32, 32768: 16}, followup_tokens=38400,
                frames=1200)


def checkpoint(workdir: Path, name: str) -> Path:
    """``workdir / name``, holding the random checkpoint of size ``name`` (built on first use)."""
    folder = workdir / name
    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        build_checkpoint(folder, name)
    return folder


def run_config(name: str, settings: dict[str, Any], workdir: Path, *, compile_decoding: bool = False) -> dict[str, Any]:
    folder = checkpoint(workdir, name)
    results: dict[str, Any] = {}
    for tokens, new_tokens in settings["lengths"].items():
        for side in ("ref", "ours"):
            extra = {"compile_decoding": 1} if side == "ours" and compile_decoding else {}
            results[f"generate_{tokens}_{side}"] = measure(
                "generate", side, folder=folder, tokens=tokens, new_tokens=new_tokens, **extra)
    for side in ("ref", "ours"):
        results[f"followup_{side}"] = measure("followup", side, folder=folder, tokens=settings["followup_tokens"])
    return results


def ratios(r: dict[str, Any], pre: dict[str, Any]) -> dict[str, float]:
    def ratio(a: float, b: float) -> float:
        return round(a / b, 3)

    g = lambda n, side: r[f"generate_{n}_{side}"]  # noqa: E731
    return {
        "prefill_8k_ratio": ratio(g(8192, "ref")["ttft_s"], g(8192, "ours")["ttft_s"]),
        "decode_1k_ratio": ratio(g(1024, "ours")["decode_tok_s"], g(1024, "ref")["decode_tok_s"]),
        "decode_32k_ratio": ratio(g(32768, "ours")["decode_tok_s"], g(32768, "ref")["decode_tok_s"]),
        "peak_mem_32k_ratio": ratio(g(32768, "ref")["peak_rss_gib"], g(32768, "ours")["peak_rss_gib"]),
        "followup_ttft_ratio": ratio(r["followup_ref"]["ttft_s"], r["followup_ours"]["ttft_s"]),
        "preprocess_ratio": ratio(pre["ref"]["seconds"], pre["ours"]["seconds"]),
    }


def table(name: str, r: dict[str, Any]) -> str:
    rows = [f"### {name}", "", "| measurement | reference | ours | ours vs reference |", "| --- | ---: | ---: | ---: |"]
    for key in sorted((k for k in r if k.startswith("generate_") and k.endswith("_ref")), key=lambda k: int(k.split("_")[1])):
        n = key.split("_")[1]
        ref, ours = r[key], r[key.replace("_ref", "_ours")]
        toks = ref["prompt_tokens"]
        rows.append(f"| prefill {toks} tokens (tok/s) | {toks / ref['ttft_s']:.0f} | {toks / ours['ttft_s']:.0f} "
                    f"| {ref['ttft_s'] / ours['ttft_s']:.2f}x |")
        rows.append(f"| decode at {n} (tok/s) | {ref['decode_tok_s']:.2f} | {ours['decode_tok_s']:.2f} "
                    f"| {ours['decode_tok_s'] / ref['decode_tok_s']:.2f}x |")
        rows.append(f"| peak RSS at {n} (GiB) | {ref['peak_rss_gib']:.2f} | {ours['peak_rss_gib']:.2f} "
                    f"| {ref['peak_rss_gib'] / ours['peak_rss_gib']:.2f}x less |")
    fr, fo = r["followup_ref"], r["followup_ours"]
    rows.append(f"| follow-up TTFT (s) | {fr['ttft_s']:.2f} | {fo['ttft_s']:.3f} | {fr['ttft_s'] / fo['ttft_s']:.1f}x |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="'small' only, fewer decode tokens")
    parser.add_argument("--json", action="store_true", help="print one JSON object of ratios on stdout")
    parser.add_argument("--workdir", help="where checkpoints are built (a temp folder by default)")
    parser.add_argument("--compile", action="store_true",
                        help="ours decodes through torch.compile (vidlm --compile), compiled before the measured prompt")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["generate", "followup", "preprocess"], help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=["ref", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument("--new-tokens", type=int, default=16, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=1200, help=argparse.SUPPRESS)
    parser.add_argument("--compile-decoding", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    settings = plan(args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        pre = {side: measure("preprocess", side, frames=settings["frames"]) for side in ("ref", "ours")}
        results = {name: run_config(name, settings, workdir, compile_decoding=args.compile)
                   for name in settings["configs"]}
    summary = ratios(results["small"], pre)
    report = "\n\n".join(table(name, r) for name, r in results.items())
    report += (f"\n\npreprocess {settings['frames']} frames 720p -> 448x800: reference {pre['ref']['seconds']:.2f} s, "
               f"ours {pre['ours']['seconds']:.2f} s ({summary['preprocess_ratio']:.2f}x)")
    print(report, file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({**summary, "compiled_decoding": args.compile, "raw": {"preprocess": pre, **results}}))
    else:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
