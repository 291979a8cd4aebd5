"""The ``vidlm`` CLI end to end with a tiny real model: a mixed folder, re-ingest, a real kill
and resume, a damaged library, exports, ``--json`` schemas and exit codes. The tiny model
writes gibberish, so these check the mechanics, not the captions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import srt
from typer.testing import CliRunner

from app.cli import cli
from tests.app.conftest import GOOD_COUNT, cli_command, make_folder, write_videos

TOKENS = ["--max-new-tokens", "16"]


def run(*args: str, env: dict[str, str] | None = None):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, good_videos, tiny_model):
    """A library built from 3 good and the broken files, with the first run's result."""
    root = tmp_path_factory.mktemp("mixed")
    folder = make_folder(root / "videos", good_videos)
    library = root / "library"
    result = run(
        "ingest",
        str(folder),
        "--library",
        str(library),
        "--model",
        str(tiny_model),
        "--json",
        *TOKENS,
    )
    return folder, library, result


def test_mixed_folder_every_good_file_is_searchable_and_broken_ones_are_listed(ingested):
    folder, library, result = ingested
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert {"library", "model_id", "counts", "files", "failures"} <= report.keys()
    assert report["counts"]["ingested"] == GOOD_COUNT
    broken = {f["path"] for f in report["failures"]}
    assert broken and all(Path(p).name.startswith("broken_") for p in broken)
    for p in broken:
        assert f"FAILED {p}:" in result.stderr

    status = run("status", "--library", str(library), "--json")
    assert status.exit_code == 1
    doc = json.loads(status.stdout)
    assert {
        "library",
        "embedder_id",
        "index_kind",
        "videos",
        "segments",
        "counts",
        "entries",
        "failures",
    } <= doc.keys()
    by_path = {Path(e["path"]).name: e for e in doc["entries"]}
    goods = [n for n in by_path if not n.startswith("broken_")]
    assert len(goods) == GOOD_COUNT and all(by_path[n]["status"] == "ok" for n in goods)
    assert by_path["broken_zero_bytes.mp4"]["error"].startswith("empty:")
    assert "not_video" in by_path.get("broken_not_video_jpeg.mp4", {"error": "not_video"})["error"]
    assert {
        "video_id",
        "path",
        "status",
        "error",
        "duration_seconds",
        "segments",
        "model_id",
        "ingested_at",
    } <= doc["entries"][0].keys()
    assert "broken_zero_bytes.mp4" in run("status", "--library", str(library)).stderr

    found = json.loads(
        run("localize", "an object moves", "--library", str(library), "--k", "50", "--json").stdout
    )
    assert {Path(r["path"]).name for r in found["results"]} == set(goods)
    assert {
        "rank",
        "video_id",
        "path",
        "start_seconds",
        "end_seconds",
        "score",
        "caption",
        "grounded",
        "confidence",
    } <= found["results"][0].keys()
    assert all((r["confidence"] is not None) == r["grounded"] for r in found["results"])


def test_reingest_skips_unchanged_and_notices_touched_changed_and_deleted(
    tmp_path, good_videos, tiny_model
):
    folder = make_folder(tmp_path / "videos", good_videos, broken=False)
    library = str(tmp_path / "library")
    def ingest_json():
        return run("ingest", str(folder), "--library", library, "--model", str(tiny_model), "--json", *TOKENS)

    first = ingest_json()
    assert first.exit_code == 0, first.stderr
    again = json.loads(ingest_json().stdout)
    assert again["counts"]["skipped"] == GOOD_COUNT and again["counts"]["ingested"] == 0

    names = sorted(p.name for p in folder.glob("*.mp4"))
    os.utime(folder / names[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    (folder / names[1]).unlink()
    replacement = write_videos(tmp_path / "other", videos=1, seed=99)[0]
    os.replace(replacement, folder / names[2])
    third = json.loads(ingest_json().stdout)
    actions = {Path(f["path"]).name: f["action"] for f in third["files"]}
    assert actions == {names[0]: "touched", names[1]: "removed", names[2]: "ingested"}
    status = json.loads(run("status", "--library", library, "--json").stdout)
    assert status["videos"] == GOOD_COUNT - 1


def comparable(library: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Catalog and segments without the columns that differ between runs (times)."""
    catalog = pl.read_parquet(library / "catalog.parquet").drop(
        "ingest_started_at", "ingest_finished_at"
    )
    segments = pl.read_parquet(library / "segments.parquet")
    return catalog.sort("path"), segments.sort("video_id", "start_seconds")


def test_killed_ingest_resumes_to_the_same_library(tmp_path, tiny_model):
    folder = tmp_path / "videos"
    write_videos(folder, videos=5, seed=11)
    args = ["ingest", str(folder), "--model", str(tiny_model), "--max-new-tokens", "48"]
    killed_lib, whole_lib = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen(
        [*cli_command(), *args, "--library", str(killed_lib)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = killed_lib / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("video_count", 0) >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "ingest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = json.loads((killed_lib / "manifest.json").read_text())["video_count"]
    assert 1 <= partial < 5

    resumed = subprocess.run(
        [*cli_command(), *args, "--library", str(killed_lib), "--json"],
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["counts"]["skipped"] == partial
    whole = subprocess.run(
        [*cli_command(), *args, "--library", str(whole_lib)], capture_output=True, text=True
    )
    assert whole.returncode == 0, whole.stderr
    for a, b in zip(comparable(killed_lib), comparable(whole_lib), strict=True):
        assert a.equals(b)


def test_damaged_library_is_a_clear_error_with_the_way_to_rebuild(tmp_path, ingested):
    _, library, _ = ingested
    damaged = tmp_path / "lib"
    import shutil

    shutil.copytree(library, damaged)
    (damaged / "vectors.faiss").write_bytes(b"garbage")
    result = run("localize", "anything", "--library", str(damaged))
    assert result.exit_code == 3
    assert "damaged" in result.stderr and f"vidlm rebuild --library {damaged}" in result.stderr
    fixed = run("rebuild", "--library", str(damaged))
    assert fixed.exit_code == 0, fixed.stderr
    assert run("localize", "anything", "--library", str(damaged), "--json").exit_code == 0

    manifest = damaged / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"dimension": 384', '"dimension": 385'))
    broken = run("status", "--library", str(damaged))
    assert broken.exit_code == 3 and "damaged" in broken.stderr and "rebuild" in broken.stderr


def test_export_srt_parses_and_jsonl_has_one_record_per_segment(tmp_path, ingested):
    _, library, _ = ingested
    out = tmp_path / "subs"
    result = run("export", "--format", "srt", str(out), "--library", str(library))
    assert result.exit_code == 0, result.stderr
    files = sorted(out.glob("*.srt"))
    assert len(files) == GOOD_COUNT
    for f in files:
        cues = list(srt.parse(f.read_text(encoding="utf-8")))
        assert cues and [c.start for c in cues] == sorted(c.start for c in cues)
    jsonl = tmp_path / "caps.jsonl"
    assert run("export", "--format", "jsonl", str(jsonl), "--library", str(library)).exit_code == 0
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    status = json.loads(run("status", "--library", str(library), "--json").stdout)
    assert len(records) == status["segments"]
    assert {"qid", "vid", "query", "duration", "relevant_windows"} <= records[0].keys()


def test_ask_json_and_clip(tmp_path, ingested, tiny_model):
    folder, library, _ = ingested
    video = sorted(folder.glob("video_*.mp4"))[0]
    result = run(
        "ask",
        str(video),
        "When does something move?",
        "--library",
        str(library),
        "--model",
        str(tiny_model),
        "--json",
        *TOKENS,
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {
        "video_id",
        "path",
        "question",
        "answer",
        "spans",
        "mode",
        "windows",
        "model_id",
        "confidence",
    } <= doc.keys()
    assert doc["mode"] == "whole" and doc["path"] == str(video.absolute())
    assert 0.0 < doc["confidence"] <= 1.0
    text = run("ask", str(video), "When does something move?", "--library", str(library),
               "--model", str(tiny_model), *TOKENS)
    assert text.exit_code == 0 and text.stdout.startswith(doc["answer"].strip())
    assert text.stdout.splitlines()[-1] == f"  ({doc['confidence']:.0%} sure)"
    out = tmp_path / "clip.mp4"
    assert run("clip", str(video), "0.5", "1.5", str(out)).exit_code == 0
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    ("flags", "env", "compiled"),
    [([], None, False), (["--compile"], None, True), ([], {"VIDLM_COMPILE": "1"}, True),
     (["--no-compile"], {"VIDLM_COMPILE": "1"}, False)],
)
def test_compile_reaches_the_model_loader(monkeypatch, ingested, tiny_model, flags, env, compiled):
    import vidlm

    folder, library, _ = ingested
    video = sorted(folder.glob("video_*.mp4"))[0]
    asked: list[bool] = []
    real_load = vidlm.load

    def spy(*args, **kwargs):
        asked.append(kwargs["compile_decoding"])
        return real_load(*args, **{**kwargs, "compile_decoding": False})  # the plumbing, not the compiler

    monkeypatch.setattr(vidlm, "load", spy)
    common = ["--library", str(library), "--model", str(tiny_model), "--json", *flags]
    assert run("ask", str(video), "When?", *common, *TOKENS, env=env).exit_code == 0
    assert run("localize", "something moves", *common, "--ground", "1", env=env).exit_code == 0
    assert asked == [compiled, compiled]


@pytest.mark.parametrize(
    "args",
    [
        ["ask", "/no/such/video.mp4", "when?"],
        ["status", "--library", "/no/such/library"],
        ["ingest", "/no/such/folder", "--library", "/tmp/unused-lib"],
        ["localize"],
        ["export", "--format", "docx", "out.docx"],
        ["status", "--bogus"],
    ],
)
def test_usage_errors_exit_2(args, tmp_path, monkeypatch, ingested):
    _, library, _ = ingested
    monkeypatch.setenv("VIDLM_LIBRARY", str(library))
    monkeypatch.chdir(tmp_path)
    assert run(*args).exit_code == 2


def test_default_library_comes_from_the_environment(monkeypatch, ingested):
    _, library, _ = ingested
    monkeypatch.setenv("VIDLM_LIBRARY", str(library))
    doc = json.loads(run("status", "--json").stdout)
    assert doc["library"] == str(library)


def test_train_writes_a_checkpoint_with_the_options_asked(tmp_path):
    out = tmp_path / "model"
    args = ["--steps", "2", "--accumulation", "2", "--questions", "2", "--max-seconds", "9"]
    result = run("train", str(out), *args, "--max-offset", "120", "--batch-videos", "2", "--freeze-tower")
    assert result.exit_code == 0, result.output
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    record = json.loads((out / "training.json").read_text(encoding="utf-8"))
    assert record["step"] == 2 and len(record["losses"]) == 2
    assert record["config"]["batch_videos"] == 2 and record["config"]["freeze_tower"] is True
    sample = record["config"]["sample"]
    assert sample["max_offset_seconds"] == 120.0 and sample["questions"] == 2
    assert run("train", str(tmp_path / "x"), "--max-offset", "-1").exit_code == 2
    assert run("train", str(tmp_path / "x"), "--batch-videos", "0").exit_code == 2
    too_short = run("train", str(tmp_path / "x"), "--max-seconds", "5")  # the world starts at 8 s
    assert too_short.exit_code == 2 and "max_seconds=5.0" in too_short.output
    assert not (tmp_path / "x").exists()
