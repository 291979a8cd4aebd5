"""Grounding through the product: synthetic videos -> `vidlm ingest` -> `localize` and `ask`.

Drives the `vidlm` CLI exactly as a user would. Writes a folder of synthetic-world videos with known events (the built-in model's world, as
`vidlm eval --synthetic` uses), ingests it into a fresh library with the pipeline, then for every
event whose query text names one event in the whole folder:

  localize   the library-wide search (caption search, then the model grounds the query in the
             --ground best videos): a hit counts at IoU >= 0.5 when its video is the event's
             video and its span overlaps the true span by that much (R1: the first hit; R5: any
             of the first five)
  ask        the event's grounding question about its video; the first span of the answer

Prints one JSON object with the scores and counts. Issue 5 asks for R1@0.5 >= 0.7 on both.

    python bench/library_grounding.py --videos 6 --seed 777
    python bench/library_grounding.py --model path/to/checkpoint --videos 20
    python bench/library_grounding.py --embedder path/to/embedding-checkpoint   # clip vectors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tqdm import tqdm

import index

REPO = Path(__file__).resolve().parents[1]


def vidlm(*args: str) -> dict:
    """Run the CLI (as a user would) and return its --json output."""
    cmd = [sys.executable, "-c", "from app.cli import main; main()", *args, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def run(videos: int, seed: int, model: str | None, max_seconds: float, work: Path, ground: int = 5,
        embedder: str | None = None) -> dict:
    from recipe.data import SampleSpec
    from recipe.synth import write_dataset
    from recipe.tasks import grounding_question

    world = dataclasses.replace(SampleSpec().world, max_seconds=max_seconds)
    events_file = write_dataset(work / "videos", videos=videos, seed=seed, params=world)
    rows = [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines()]
    common = ["--library", str(work / "library"), *(["--model", model] if model else []),
              *(["--embedder", embedder] if embedder else [])]
    report = vidlm("ingest", str(work / "videos"), *common)
    status = vidlm("status", "--library", str(work / "library"))
    if status["failures"]:
        raise SystemExit(f"ingest failed: {report}")
    ids = {Path(e["path"]).name: e["video_id"] for e in status["entries"]}
    folder_counts = Counter(r["query"] for r in rows)
    queries = [r for r in rows if folder_counts[r["query"]] == 1]
    loc1 = loc5 = ask1 = 0
    ious: list[float] = []
    for r in tqdm(queries, desc="queries", unit="query"):
        truth = (r["start_seconds"], r["end_seconds"])
        hits = vidlm("localize", r["query"], "--k", "5", "--ground", str(ground), *common)["results"]
        good = [h["video_id"] == ids[r["video"]] and index.temporal_iou((h["start_seconds"], h["end_seconds"]), truth) >= 0.5 for h in hits]
        loc1 += bool(good[:1] and good[0])
        loc5 += any(good)
        answer = vidlm("ask", str(work / "videos" / r["video"]), grounding_question(r["query"]), *common)
        spans = answer["spans"]
        score = index.temporal_iou((spans[0]["start_seconds"], spans[0]["end_seconds"]), truth) if spans else 0.0
        ious.append(score)
        ask1 += score >= 0.5
    n = max(1, len(queries))
    return {
        "videos": videos, "seed": seed, "ground": ground, "embedder": embedder, "queries": len(queries), "events": len(rows),
        "localize_r1_at_0_5": round(loc1 / n, 3), "localize_r5_at_0_5": round(loc5 / n, 3),
        "ask_r1_at_0_5": round(ask1 / n, 3), "ask_miou": round(sum(ious) / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--model", default=None, help="checkpoint folder or hub id; default the built-in model")
    parser.add_argument("--max-seconds", type=float, default=40.0, help="longest video")
    parser.add_argument("--ground", type=int, default=5, help="localize's --ground (0: caption search only)")
    parser.add_argument("--embedder", default=None, help="Qwen3-VL-Embedding checkpoint for the library (default MiniLM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(args.videos, args.seed, args.model, args.max_seconds, Path(tmp), args.ground,
                                  args.embedder), indent=2))


if __name__ == "__main__":
    main()
