"""Ingest one folder with the local engine and with the Ray engine; print the times and ratios.

Writes synthetic videos (the built-in model's world, as ``vidlm demo`` does, shorter) into a
temp folder, then runs the real command line three times, each in its own process and into its
own fresh library, with the built-in model:

  local            vidlm ingest DIR --library L1
  local-1-thread   the same with OMP_NUM_THREADS=1 (torch on one thread, as each Ray worker is)
  ray              vidlm ingest DIR --library L3 --engine ray --workers W   (starts a local Ray)

Wall times include everything a user waits for: process start, model load (once per Ray
worker), Ray's start-up and shutdown. All runs must report the same counts and the libraries
the same captions, or the script fails. On 2 CPU cores no speedup is expected (the
2 model workers and the decoding tasks share the same 2 cores); the point is that the path
is real. This file runs the CLI in subprocesses and so never imports app/.

    python bench/ingest_ray.py                  # 8 videos, 2 workers
    python bench/ingest_ray.py --videos 16 --workers 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from app.cli import main; main()"]


def write_videos(folder: Path, *, videos: int, seed: int, max_seconds: float) -> list[Path]:
    """``videos`` files of the built-in model's synthetic world, at most ``max_seconds`` long."""
    sys.path.insert(0, str(ROOT))  # this checkout, whether or not it is pip-installed
    from recipe.data import SampleSpec
    from recipe.synth import write_dataset

    params = dataclasses.replace(SampleSpec().world, max_seconds=max_seconds, max_objects=3)
    write_dataset(folder, videos=videos, seed=seed, params=params)
    return sorted(folder.glob("*.mp4"))


def ingest(
    folder: Path, library: Path, *extra: str, threads: int | None = None
) -> tuple[float, dict]:
    """Run ``vidlm ingest`` in a fresh process; (wall seconds, its --json report).

    ``threads`` sets ``OMP_NUM_THREADS`` (torch's thread count) for that process; None keeps
    torch's default (one per core).
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.perf_counter()
    done = subprocess.run(
        [*CLI, "ingest", str(folder), "--library", str(library), "--json", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        sys.exit(f"vidlm ingest {' '.join(extra)} failed ({done.returncode}):\n{done.stderr}")
    return wall, json.loads(done.stdout)


def captions(library: Path) -> pl.DataFrame:
    """Every caption with its video and span, in a fixed order (segment ids aside)."""
    key = ["video_id", "start_seconds", "end_seconds", "caption"]
    return pl.read_parquet(library / "segments.parquet").select(key).sort(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8, help="synthetic videos in the folder")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="longest video")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="Ray model workers")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vidlm-ingest-ray-") as tmp:
        runs = Path(tmp)
        files = write_videos(
            runs / "videos", videos=args.videos, seed=args.seed, max_seconds=args.max_seconds
        )
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        seconds, reports = {}, {}
        for name, extra, threads in (
            ("local", (), None),
            ("local-1-thread", (), 1),
            ("ray", ("--engine", "ray", "--workers", str(args.workers)), None),
        ):
            seconds[name], reports[name] = ingest(
                runs / "videos", runs / name, *extra, threads=threads
            )
        counts = {name: r["counts"] for name, r in reports.items()}
        if len({json.dumps(c, sort_keys=True) for c in counts.values()}) != 1:
            sys.exit(f"the runs disagree: {counts}")
        if not all(captions(runs / n).equals(captions(runs / "local")) for n in reports):
            sys.exit("the runs wrote different captions")
        segments = captions(runs / "ray").height

    result = {
        "videos": len(files),
        "megabytes": round(megabytes, 2),
        "segments": segments,
        "workers": args.workers,
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "local_seconds": round(seconds["local"], 2),
        "local_1_thread_seconds": round(seconds["local-1-thread"], 2),
        "ray_seconds": round(seconds["ray"], 2),
        "ray_over_local": round(seconds["ray"] / seconds["local"], 2),
        "ray_over_local_1_thread": round(seconds["ray"] / seconds["local-1-thread"], 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{len(files)} videos ({megabytes:.1f} MB), {segments} segments, built-in model, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; same captions in all runs"
    )
    print(f"local engine (torch default threads)  {seconds['local']:8.2f} s")
    print(f"local engine (1 torch thread)          {seconds['local-1-thread']:8.2f} s")
    print(f"ray engine, {args.workers} workers (1 thread each)  {seconds['ray']:8.2f} s")
    print(f"ray / local                            {result['ray_over_local']:8.2f}x")
    print(f"ray / local (1 thread)                 {result['ray_over_local_1_thread']:8.2f}x")


if __name__ == "__main__":
    main()
