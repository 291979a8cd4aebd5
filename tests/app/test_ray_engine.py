"""The Ray engine (``--engine ray``) against the local engine, on a local Ray with 2 workers.

One Ray is started for the module. The same folder (3 short synthetic videos + the broken
files) is ingested by both engines with the tiny model; the libraries must hold the same
catalog rows (timing fields aside), the same segments and captions (segment ids follow the
order files finish in, so they are not compared) and the same vectors up to float tolerance.
Then: a re-run resumes (nothing ingested again), shards left by a killed run are merged
without redoing work, and ``export --engine ray`` writes the same files as the local export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

ray = pytest.importorskip("ray")

import index  # noqa: E402
from app.cli import cli  # noqa: E402
from app.ingesting import entry_fields, now  # noqa: E402
from app.ray_shards import SHARDS_DIR, FileResult, shard_frame  # noqa: E402
from tests.app.conftest import GOOD_COUNT, make_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKENS = ["--max-new-tokens", "16"]
TIMING = ["ingest_started_at", "ingest_finished_at"]
SEGMENT_KEY = ["video_id", "start_seconds", "end_seconds", "caption", "source"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with room for 2 model workers plus a decoding task, for the whole module."""
    with pytest.MonkeyPatch.context() as mp:
        # Workers import the checkout even where it is not pip-installed.
        mp.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        )
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=3, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def built(tmp_path_factory, good_videos, tiny_model, local_ray):
    """The folder, and the library each engine built from it, with both JSON reports."""
    root = tmp_path_factory.mktemp("ray")
    folder = make_folder(root / "videos", good_videos)
    model = ["--model", str(tiny_model), *TOKENS]
    local = run("ingest", str(folder), "--library", str(root / "local"), "--json", *model)
    on_ray = run(
        "ingest", str(folder), "--library", str(root / "ray"), "--json", *model,
        "--engine", "ray", "--workers", "2",
    )  # fmt: skip
    return folder, root / "local", root / "ray", local, on_ray


def vectors_by_segment(lib: index.Library) -> tuple[pl.DataFrame, np.ndarray]:
    """Segments in a stable order (not by id) and their stored vectors in that order."""
    segments = lib.segments.sort(SEGMENT_KEY)
    ids = segments["segment_id"].to_numpy()
    return segments.drop("segment_id"), lib._index.reconstruct_batch(ids)


def test_ray_builds_the_library_the_local_engine_builds(built):
    folder, local_path, ray_path, local, on_ray = built
    assert local.exit_code == on_ray.exit_code == 1  # the broken files
    local_report, ray_report = json.loads(local.stdout), json.loads(on_ray.stdout)
    assert ray_report == {**local_report, "library": str(ray_path)}
    assert ray_report["counts"]["ingested"] == GOOD_COUNT

    a, b = index.Library.open(local_path), index.Library.open(ray_path)
    assert a.catalog.drop(TIMING).equals(b.catalog.drop(TIMING))
    assert b.catalog.select(TIMING).null_count().sum_horizontal().item() == 0
    segments_a, vectors_a = vectors_by_segment(a)
    segments_b, vectors_b = vectors_by_segment(b)
    assert segments_a.height >= GOOD_COUNT and segments_a.equals(segments_b)
    np.testing.assert_allclose(vectors_a, vectors_b, atol=1e-5)

    errors = {Path(r["path"]).name: r["error_message"] for r in b.failures().iter_rows(named=True)}
    assert errors["broken_zero_bytes.mp4"].startswith("empty:")
    assert errors["broken_not_video_jpeg.mp4"].startswith("not_video:")
    assert set(errors) == {p.name for p in folder.iterdir() if p.name.startswith("broken_")}
    assert not (ray_path / SHARDS_DIR).exists() or not any((ray_path / SHARDS_DIR).iterdir())


def test_rerun_with_ray_resumes_without_ingesting_again(built, tiny_model):
    folder, _, ray_path, _, _ = built
    before = index.Library.open(ray_path).catalog
    args = ["--library", str(ray_path), "--model", str(tiny_model), "--json", "--engine", "ray"]
    again = run("ingest", str(folder), *args)
    counts = json.loads(again.stdout)["counts"]
    assert counts["ingested"] == counts["failed"] == 0
    assert counts["skipped"] == len(list(folder.glob("*.mp4")))
    assert index.Library.open(ray_path).catalog.equals(before)


def test_shards_left_by_a_killed_run_are_merged_not_redone(built, tmp_path, tiny_model):
    """A file finished (shard written) but not yet committed when the run died."""
    folder, _, ray_path, _, _ = built
    library = tmp_path / "library"
    shutil.copytree(ray_path, library)
    lib = index.Library.open(library)
    victim = next(r for r in lib.catalog.iter_rows(named=True) if r["status"] == "ok")
    segments = lib.segments_of(victim["video_id"])
    vectors = lib._index.reconstruct_batch(segments["segment_id"].to_numpy())
    entry = index.VideoEntry(**{**entry_fields(victim), "ingest_finished_at": now()})
    result = FileResult(entry, tuple(index.schema.as_segments(segments)), vectors)
    lib.remove_video(victim["video_id"])
    lib.commit()
    (library / SHARDS_DIR).mkdir(exist_ok=True)
    shard_frame(result).write_parquet(library / SHARDS_DIR / f"{victim['video_id']}.parquet")
    stale = replace(result, entry=replace(entry, video_id="0" * 16, mtime_ns=1))  # file changed
    shard_frame(stale).write_parquet(library / SHARDS_DIR / f"{'0' * 16}.parquet")

    args = ["--library", str(library), "--model", str(tiny_model), "--json", "--engine", "ray"]
    again = run("ingest", str(folder), *args)
    counts = json.loads(again.stdout)["counts"]
    assert counts["ingested"] == counts["failed"] == 0
    merged = index.Library.open(library)
    assert merged.entry("0" * 16) is None
    assert (
        merged.segments_of(victim["video_id"])["caption"].to_list() == segments["caption"].to_list()
    )
    assert not any((library / SHARDS_DIR).iterdir())


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("jsonl", "c.jsonl"), ("parquet", "c.parquet"), ("srt", "srt"), ("vtt", "one.vtt")],
)
def test_export_with_ray_writes_what_the_local_export_writes(built, tmp_path, fmt, name):
    folder, _, ray_path, _, _ = built
    one = ["--video", str(sorted(folder.glob("video_*.mp4"))[0])] if fmt == "vtt" else []
    for engine in ("local", "ray"):
        args = [
            "export",
            str(tmp_path / engine / name),
            "--format",
            fmt,
            "--library",
            str(ray_path),
        ]
        assert run(*args, *one, "--engine", engine).exit_code == 0
    local, on_ray = tmp_path / "local" / name, tmp_path / "ray" / name
    files = sorted(p.relative_to(local) for p in local.rglob("*")) if local.is_dir() else [Path()]
    assert files == (
        sorted(p.relative_to(on_ray) for p in on_ray.rglob("*")) if on_ray.is_dir() else [Path()]
    )
    assert len(files) == (GOOD_COUNT if fmt == "srt" else 1)
    for f in files:
        assert (on_ray / f).read_bytes() == (local / f).read_bytes()


@pytest.mark.parametrize("args", [["--address", "auto"], ["--workers", "2"], ["--engine", "spark"]])
def test_ray_options_need_the_ray_engine(args, tmp_path):
    result = CliRunner().invoke(cli, ["ingest", str(tmp_path), *args])
    assert result.exit_code == 2


def test_the_local_engine_never_imports_ray(tmp_path, tiny_model):
    folder = make_folder(tmp_path / "videos", [])  # only the broken files: no decoding needed
    code = (
        "import sys\nfrom app.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'ray' not in sys.modules, 'the local engine imported ray'\nsys.exit(code)\n"
    )
    args = ["ingest", str(folder), "--library", str(tmp_path / "lib"), "--model", str(tiny_model)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr  # 1: the broken files failed, as they should
    assert "imported ray" not in done.stderr
