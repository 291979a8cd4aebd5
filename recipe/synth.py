"""Write a synthetic dataset: real H.264 ``.mp4`` videos plus ``events.jsonl``; backs ``vidlm synth``.

What is unusual: the stream's time base is the scene's 90 kHz clock and each frame's PTS is its
scene tick, with B-frames off, so decoded presentation times equal the scene's frame times
exactly and variable-frame-rate scenes stay variable in the file (no resampling to a nominal
rate). Video ``i`` of a dataset is the scene with seed ``scene_seed(seed, i)``; ``events.jsonl``
is a pure function of ``(videos, seed, params)``, byte for byte.

``events.jsonl``: one JSON object per event, videos in order, events by start time::

    {"video": "video_00000.mp4", "query": "the red circle enters from the left",
     "start_seconds": 12.5, "end_seconds": 18.0, "caption": "the red circle enters from the left.",
     "kind": "enter", "unique": true, "duration_seconds": 54.3}

``unique`` is false when the same query occurs more than once in that video (ambiguous for
grounding; still right for dense captions and counting).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from recipe.scene import TIME_BASE_HZ, Scene, WorldParams
from recipe.world import make_scene, render_frames

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
CHUNK_FRAMES = 64


def scene_seed(seed: int, index: int) -> int:
    """Seed of video ``index`` in a dataset made with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def video_name(index: int) -> str:
    return f"video_{index:05d}.mp4"


def _frame_chunks(scene: Scene, *, size_px: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (ticks ``[F]``, frames uint8 ``[F, H, W, 3]``) in order, a chunk at a time."""
    ticks = np.asarray(scene.frame_ticks, dtype=np.int64)
    for start in range(0, ticks.shape[0], CHUNK_FRAMES):
        chunk = ticks[start : start + CHUNK_FRAMES]
        yield chunk, render_frames(scene, chunk / TIME_BASE_HZ, size_px=size_px)


def write_video(scene: Scene, path: Path, *, size_px: int | None = None, crf: int = 23) -> None:
    """Encode ``scene`` to an H.264/yuv420p ``.mp4`` whose PTS are the scene's frame ticks.

    Raises:
        ValueError: if ``size_px`` is odd or ``crf`` is outside 0..51.
    """
    size_px = scene.params.size_px if size_px is None else size_px
    if size_px % 2 or size_px < 16:
        raise ValueError(f"size_px={size_px}: expected an even integer >= 16 (yuv420p)")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf={crf}: expected 0..51")
    time_base = Fraction(1, TIME_BASE_HZ)
    nominal_fps = max(1, round(len(scene.frame_ticks) / max(scene.duration_seconds, 0.1)))
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=nominal_fps)
        stream.width = stream.height = size_px
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"preset": "veryfast", "crf": str(crf), "bf": "0"}
        for ticks, frames in _frame_chunks(scene, size_px=size_px):
            for tick, pixels in zip(ticks, frames, strict=True):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = int(tick), time_base
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def event_rows(scene: Scene, *, video: str) -> list[dict[str, object]]:
    """The ``events.jsonl`` rows of one scene."""
    counts = Counter(e.query for e in scene.events)
    return [
        {
            "video": video,
            "query": e.query,
            "start_seconds": e.start_seconds,
            "end_seconds": e.end_seconds,
            "caption": e.caption,
            "kind": e.kind,
            "unique": counts[e.query] == 1,
            "duration_seconds": scene.duration_seconds,
        }
        for e in scene.events
    ]


def write_dataset(
    out_dir: str | os.PathLike[str],
    *,
    videos: int,
    seed: int,
    params: WorldParams | None = None,
    crf: int = 23,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``videos`` synthetic videos and their ``events.jsonl`` into ``out_dir``.

    Args:
        out_dir: folder to write into (created if missing; same-named files are replaced).
        videos: how many videos (>= 1).
        seed: dataset seed (>= 0); the same seed and params give the same events, byte for byte.
        params: world knobs (size, durations, frame rates); defaults to ``WorldParams()``.
        crf: x264 quality (0..51, lower is better).
        progress: called as ``progress(done, total)`` after each video.

    Returns:
        The path of ``events.jsonl``.

    Raises:
        ValueError: on ``videos < 1`` or ``seed < 0``.
    """
    if videos < 1:
        raise ValueError(f"videos={videos}: expected >= 1")
    if seed < 0:
        raise ValueError(f"seed={seed}: expected >= 0")
    params = WorldParams() if params is None else params
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for index in range(videos):
        scene = make_scene(scene_seed(seed, index), params)
        name = video_name(index)
        write_video(scene, out / name, crf=crf)
        lines += [json.dumps(row) for row in event_rows(scene, video=name)]
        log.info(
            "wrote %s: %.1f s, %d frames, %d events",
            name,
            scene.duration_seconds,
            len(scene.frame_ticks),
            len(scene.events),
        )
        if progress is not None:
            progress(index + 1, videos)
    events_path = out / EVENTS_FILE
    partial = out / f".{EVENTS_FILE}.partial"
    partial.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    partial.replace(events_path)  # atomic: a crash never leaves a half-written events file
    return events_path
