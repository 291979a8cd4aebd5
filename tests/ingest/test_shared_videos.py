"""The 24 real files in ../shared/testdata/videos: each gives the outcome its manifest implies.

Good files: the probe matches the manifest (codec, coded size, rotation), and every sampled
frame sits at a true frame time (from a plain PyAV pass), nearest to its planned instant, with
the manifest's first and last frame times. Broken files: the right error, or a partial batch
that stops where the manifest says decoding stops.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import ingest
from tests.ingest.conftest import SHARED_VIDEOS, all_frame_times

DENSE = ingest.SamplingPolicy(fps=1000.0, max_frames=4096, min_tokens_per_pair=4, max_tokens_per_pair=16)

ERRORS: dict[str, type[ingest.VideoError]] = {
    "audio_only_aac.mp4": ingest.NoVideoStreamError,
    "broken_zero_bytes.mp4": ingest.EmptyFileError,
    "broken_not_video_jpeg.mp4": ingest.NotAVideoError,  # PyAV would call it a 1-frame video
}
PARTIAL = {"broken_truncated_50pct.webm", "broken_upstream_invalid_nalu.mp4"}


def manifest_rows() -> list[dict[str, str]]:
    path = SHARED_VIDEOS / "MANIFEST.md"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 11 and cells[0].startswith("`"):
            keys = ["file", "bytes", "source", "licence", "video", "frames", "pts", "avg_rate", "rotation", "pyav", "decord"]
            rows.append(dict(zip(keys, cells, strict=True)) | {"file": cells[0].strip("`")})
    return rows


ROWS = manifest_rows()


@pytest.mark.skipif(not ROWS, reason="shared test videos not found")
def test_manifest_lists_24_files() -> None:
    assert len(ROWS) == 24
    assert all((SHARED_VIDEOS / r["file"]).is_file() for r in ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_real_file(row: dict[str, str], shared_videos: Path) -> None:
    path = shared_videos / row["file"]
    if row["file"] in ERRORS:
        with pytest.raises(ERRORS[row["file"]]) as caught:
            ingest.probe(path)
        assert caught.value.path == path and row["file"] in str(caught.value)
        return
    info = ingest.probe(path)
    codec, size = row["video"].split()
    assert info.codec == codec
    assert f"{info.coded_width}x{info.coded_height}" == size
    assert info.rotation == (-int(row["rotation"])) % 360
    first, last = (float(x) for x in re.split(r"\s*\.\.\s*", row["pts"]))
    plan = ingest.plan(info, DENSE)
    batch = ingest.decode(path, plan)
    true = all_frame_times(path) if row["pyav"] == "ok" else None
    assert batch.seconds[0] == 0.0
    if row["file"] in PARTIAL:
        assert batch.partial and batch.stopped_at_seconds == pytest.approx(last - first, abs=1e-3)
        return
    assert not batch.partial and len(true) == int(row["frames"])
    assert batch.seconds[-1] == pytest.approx(last - first, abs=1e-3)
    for k, sec in enumerate(batch.seconds):
        assert min(abs(t - sec) for t in true) < 1e-6, "not a true frame time"
        target = plan.seconds[k]
        assert abs(sec - target) <= min(abs(t - target) for t in true) + 1e-6, "not the nearest frame"
