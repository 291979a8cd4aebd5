"""Ingest speed and memory: our decode+sample against the usual ways, on one generated file.

Generates an H.264 720p30 test video (default 10 minutes, x264 `veryfast`, keyframe every
250 frames) in a temp folder, then times, each in its own subprocess so peak memory
(`ru_maxrss`) is per method:

  ours-pyav   ingest.probe + ingest.plan (default policy: 2 fps, token budget) + ingest.decode
              with backend="pyav"
  ours-auto   the same with backend="auto": with decord installed, this constant-rate H.264 mp4
              takes the decord path (one demux pass to check eligibility, then decord get_batch
              at the planned size); the "backend" column shows which path ran
  decord      decord VideoReader.get_batch at indices round(linspace(0, n-1, n/fps*2)) (index/fps)
  pyav-rgb    PyAV sequential decode, every frame converted to RGB at source size, sampled ones kept
  floor       PyAV decode of every frame, no conversion (nothing that decodes the stream is faster)

All PyAV paths use FFmpeg's automatic frame/slice threading. Prints frames/s, seconds, peak
memory and the ratios.

    python bench/ingest_speed.py               # 10 minutes, as in issue 3
    python bench/ingest_speed.py --minutes 2   # quicker
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("floor", "ours-pyav", "ours-auto", "pyav-rgb", "decord")
LABELS = {
    "floor": "floor (pyav decode all, no conversion)",
    "ours-pyav": "ours (pyav)",
    "ours-auto": "ours (auto, decord path)",
    "pyav-rgb": "pyav sequential + rgb",
    "decord": "decord get_batch (index/fps)",
}


def generate(path: Path, minutes: float) -> None:
    """Encode `minutes` of FFmpeg's testsrc2 pattern at 1280x720, 30 fps, H.264."""
    frames = int(minutes * 60 * 30)
    with av.open(f"testsrc2=size=1280x720:rate=30:duration={minutes * 60}", format="lavfi") as src, av.open(
        str(path), "w"
    ) as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "veryfast", "g": "250", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for n, frame in enumerate(src.decode(video=0)):
            frame.pts = None
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
            if n + 1 >= frames:
                break
        for packet in stream.encode():
            out.mux(packet)


def qwen_indices(total: int, fps: float, sample_fps: float = 2.0) -> np.ndarray:
    count = max(2, int(total / fps * sample_fps) // 2 * 2)
    return np.round(np.linspace(0, total - 1, count)).astype(np.int64)


def run_floor(path: Path) -> dict:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for _ in c.decode(stream))
    return {"frames": n, "decoded": n}


def run_ours(path: Path, backend: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import ingest

    info = ingest.probe(path)
    batch = ingest.decode(path, ingest.plan(info, ingest.SamplingPolicy()), backend=backend)
    return {
        "frames": len(batch),
        "shape": list(batch.frames.shape),
        "result_bytes": batch.frames.nbytes,
        "backend": batch.backend,
    }


def run_pyav_rgb(path: Path) -> dict:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        total, fps = stream.frames, float(stream.average_rate)
        wanted = set(qwen_indices(total, fps).tolist())
        kept = []
        for i, frame in enumerate(c.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            if i in wanted:
                kept.append(rgb)
    batch = np.stack(kept)
    return {"frames": len(kept), "shape": list(batch.shape), "result_bytes": batch.nbytes}


def run_decord(path: Path) -> dict:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    indices = qwen_indices(len(reader), reader.get_avg_fps())
    batch = reader.get_batch(indices.tolist()).asnumpy()
    return {"frames": len(batch), "shape": list(batch.shape), "result_bytes": batch.nbytes}


RUNNERS = {
    "floor": run_floor,
    "ours-pyav": lambda path: run_ours(path, "pyav"),
    "ours-auto": lambda path: run_ours(path, "auto"),
    "pyav-rgb": run_pyav_rgb,
    "decord": run_decord,
}


def measure(method: str, path: Path) -> dict:
    """Run one method in this process and report seconds and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = RUNNERS[method](path)
    result["seconds"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    result["peak_bytes"] = usage.ru_maxrss * 1024
    return result


def measure_in_subprocess(method: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--measure", method, str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict], minutes: float) -> None:
    gib = 1024**3
    total = int(minutes * 60 * 30)
    print(f"\n{minutes:g}-minute 1280x720 30 fps H.264, {total} frames; sampling at 2 fps")
    print("frames/s = source frames per wall second; cpu s = user+sys seconds (less sensitive to other load)")
    print("\n| method | backend | frames | wall s | cpu s | source frames/s | peak GiB | result GiB | result shape |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name in METHODS:
        r = results[name]
        if "error" in r:
            print(f"| {LABELS[name]} | failed: {r['error']} | | | | | | | |")
            continue
        print(
            f"| {LABELS[name]} | {r.get('backend', '-')} | {r['frames']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
            f"| {total / r['seconds']:.1f} | {r['peak_bytes'] / gib:.2f} | {r.get('result_bytes', 0) / gib:.2f} "
            f"| {r.get('shape', '')} |"
        )
    floor = results["floor"]
    for ours_name in ("ours-pyav", "ours-auto"):
        ours = results[ours_name]
        if "error" in floor or "error" in ours:
            continue
        print(
            f"\n{LABELS[ours_name]} / floor: wall {ours['seconds'] / floor['seconds']:.2f}x, "
            f"cpu {ours['cpu_seconds'] / floor['cpu_seconds']:.2f}x (target <= 1.3x); "
            f"peak memory {ours['peak_bytes'] / gib:.2f} GiB (target < 1 GiB)"
        )
        for other in ("pyav-rgb", "decord"):
            r = results[other]
            if "error" not in r:
                print(
                    f"  {other} / {ours_name}: wall {r['seconds'] / ours['seconds']:.2f}x, "
                    f"cpu {r['cpu_seconds'] / ours['cpu_seconds']:.2f}x, "
                    f"peak memory {r['peak_bytes'] / ours['peak_bytes']:.2f}x"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generated video")
    parser.add_argument("--video", type=Path, help="use this file instead of generating one")
    parser.add_argument("--measure", nargs=2, metavar=("METHOD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        method, path = args.measure
        print(json.dumps(measure(method, Path(path))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.video or Path(tmp) / "bench_720p30.mp4"
        if args.video is None:
            start = time.perf_counter()
            generate(path, args.minutes)
            print(f"generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s")
        results = {}
        for method in METHODS:
            results[method] = measure_in_subprocess(method, path)
            print(f"  {method}: {results[method]}", flush=True)
        report(results, args.minutes)


if __name__ == "__main__":
    main()
