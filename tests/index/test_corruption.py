"""Damaged libraries fail loudly with a typed error and a rebuild hint; crashes never leave a
half-written library (simulated at each step of a commit, and with a real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import index.journal as journal
from index import (
    Library,
    LibraryCorruptError,
    LibraryMismatchError,
    Segment,
    VideoEntry,
    rebuild_vectors,
)
from index.manifest import Manifest, facts_of

DIM = 16
ROOT = Path(__file__).resolve().parents[2]


class HashEmbedder:
    """A deterministic stand-in embedder: bag of hashed words."""

    id = "hash-16"
    dim = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, sum(map(ord, word)) % DIM] += 1.0
            out[row, 0] += 1e-3
        return out


def _rewrite_manifest(lib_path: Path, **changes: object) -> None:
    """Edit the manifest *consistently* (valid checksum), to test the cross-checks."""
    path = lib_path / "manifest.json"
    manifest = Manifest.from_json(path.read_text(), lib_path)
    path.write_text(replace(manifest, **changes).to_json())


def test_truncated_faiss_file(filled: Library, lib_path: Path) -> None:
    data = (lib_path / "vectors.faiss").read_bytes()
    (lib_path / "vectors.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        LibraryCorruptError, match=r"vectors.faiss has \d+ bytes.*truncated.*rebuild_vectors"
    ) as info:
        Library.open(lib_path)
    assert info.value.rebuildable and info.value.path == lib_path


def test_garbage_faiss_with_matching_manifest(filled: Library, lib_path: Path) -> None:
    garbage = b"not a faiss index at all"
    (lib_path / "vectors.faiss").write_bytes(garbage)

    manifest = Manifest.from_json((lib_path / "manifest.json").read_text(), lib_path)
    files = dict(manifest.files, **{"vectors.faiss": facts_of(garbage)})
    _rewrite_manifest(lib_path, files=files)
    with pytest.raises(LibraryCorruptError, match="cannot be read by faiss"):
        Library.open(lib_path)


def test_hand_edited_manifest(filled: Library, lib_path: Path) -> None:
    path = lib_path / "manifest.json"
    body = json.loads(path.read_text())
    body["embedder_id"] = "something-else"
    path.write_text(json.dumps(body))
    with pytest.raises(
        LibraryCorruptError, match="manifest.json is unreadable: its checksum does not match"
    ):
        Library.open(lib_path)
    path.write_text('{"truncated": ')
    with pytest.raises(LibraryCorruptError, match="manifest.json is unreadable"):
        Library.open(lib_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vector_count": 99}, "holds 7 vectors, manifest says 99"),
        ({"segment_count": 6}, "segments has 7 rows, manifest says 6"),
        ({"video_count": 2}, "catalog has 3 rows"),
        ({"dimension": 8}, "dimension 16, manifest says 8"),
        ({"index_kind": "hnsw"}, "manifest says hnsw"),
        ({"next_segment_id": 3}, "segment id 6 >= next id 3"),
    ],
)
def test_counts_or_facts_disagreeing(
    filled: Library, lib_path: Path, changes, message: str
) -> None:
    _rewrite_manifest(lib_path, **changes)
    with pytest.raises(LibraryCorruptError, match=message):
        Library.open(lib_path)


def test_schema_version_mismatch(filled: Library, lib_path: Path) -> None:
    _rewrite_manifest(lib_path, schema_version=999)
    with pytest.raises(LibraryMismatchError, match="schema version 999"):
        Library.open(lib_path)


def test_missing_files(filled: Library, lib_path: Path) -> None:
    (lib_path / "segments.parquet").unlink()
    with pytest.raises(
        LibraryCorruptError, match="segments.parquet is missing.*ingest the videos again"
    ):
        Library.open(lib_path)
    (lib_path / "manifest.json").unlink()
    with pytest.raises(LibraryCorruptError, match="manifest.json is missing"):
        Library.open(lib_path)


def test_rebuild_vectors_repairs_a_damaged_vectors_file(filled: Library, lib_path: Path) -> None:
    (lib_path / "vectors.faiss").write_bytes(b"\0" * 10)
    with pytest.raises(LibraryCorruptError):
        Library.open(lib_path)
    repaired = rebuild_vectors(lib_path, HashEmbedder(), batch_size=2)
    assert repaired.embedder_id == "hash-16"
    assert repaired.segments.equals(filled.segments) and repaired.catalog.equals(filled.catalog)
    hits = repaired.search(HashEmbedder().embed(["scene 2"])[0], k=1, merge_gap_seconds=None)
    assert hits["caption"][0] == "scene 2"
    # new segments continue after the old ids
    ids = repaired.upsert_video(_entry("v4"), [Segment(0, 1, "x")], HashEmbedder().embed(["x"]))
    assert ids[0] == filled.manifest.next_segment_id


def _entry(video_id: str) -> VideoEntry:
    return VideoEntry(video_id=video_id, path=f"/v/{video_id}.mp4", size_bytes=1, status="ok")


def test_rebuild_vectors_without_a_readable_manifest(filled: Library, lib_path: Path) -> None:
    (lib_path / "manifest.json").write_text("garbage")
    repaired = rebuild_vectors(lib_path, HashEmbedder())
    assert repaired.segments.height == 7 and repaired.manifest.next_segment_id == 7


def test_rebuild_refuses_when_segments_are_damaged(filled: Library, lib_path: Path) -> None:
    (lib_path / "segments.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(
        LibraryCorruptError, match="segments.parquet.*ingest the videos again"
    ) as info:
        rebuild_vectors(lib_path, HashEmbedder())
    assert not info.value.rebuildable


def test_rebuild_switches_embedder(filled: Library, lib_path: Path) -> None:
    rebuild_vectors(lib_path, HashEmbedder())
    assert Library.open(lib_path, embedder_id="hash-16").dimension == DIM


# ----- crashes ---------------------------------------------------------------------------------


def _snapshot(lib: Library) -> tuple[list[str], int]:
    return sorted(lib.catalog["video_id"].to_list()), lib.segments.height


def test_crash_while_writing_temp_files_keeps_old_library(
    filled: Library, lib_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(filled)
    calls = {"n": 0}
    real = journal.write_temp

    def dying_write_temp(path, write):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(path, write)

    monkeypatch.setattr(journal, "write_temp", dying_write_temp)
    filled.remove_video("v1")
    with pytest.raises(OSError, match="disk full"):
        filled.commit()
    monkeypatch.undo()
    assert _snapshot(Library.open(lib_path)) == before
    assert not [p for p in os.listdir(lib_path) if p.endswith(".tmp")]


def test_crash_after_journal_rolls_forward(
    filled: Library, lib_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):  # noqa: ANN001, ANN202
        # the journal itself is renamed first (call 1); die after one data file (call 2)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("power cut (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(journal.os, "replace", dying_replace)
    filled.remove_video("v1")
    with pytest.raises(KeyboardInterrupt):
        filled.commit()
    monkeypatch.undo()
    assert (lib_path / journal.JOURNAL_NAME).exists()
    reopened = Library.open(lib_path)
    assert _snapshot(reopened) == (["v2", "v3"], 3)
    assert not (lib_path / journal.JOURNAL_NAME).exists()


def test_crash_before_journal_is_complete_keeps_old_library(
    filled: Library, lib_path: Path
) -> None:
    before = _snapshot(filled)
    (lib_path / ".catalog.parquet.abc123.tmp").write_bytes(b"half written")
    (lib_path / ".commit-journal.json.def456.tmp").write_bytes(b'{"renames": [["')
    assert _snapshot(Library.open(lib_path)) == before
    assert sorted(os.listdir(lib_path)) == [
        "catalog.parquet",
        "manifest.json",
        "segments.parquet",
        "vectors.faiss",
    ]


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from index import Library, Segment, VideoEntry
    lib = Library.open(sys.argv[1])
    rng = np.random.default_rng(0)
    n = 0
    while True:
        n += 1
        vid = f"w{n % 5}"
        segs = [Segment(float(i), i + 1.0, f"{vid} seg {i}") for i in range(n % 7 + 1)]
        lib.upsert_video(VideoEntry(video_id=vid, path=f"/v/{vid}.mp4", size_bytes=n, status="ok"),
                         segs, rng.normal(size=(len(segs), 16)))
        lib.commit()
        print(n, flush=True)
    """
)


def test_real_kill_mid_commit_leaves_a_consistent_library(filled: Library, lib_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for extra_seconds in (0.0, 0.13, 0.31):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(lib_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Kill only once the writer is committing (its start-up time depends on machine load),
        # at varying points into the following commits.
        first = proc.stdout.readline()
        time.sleep(extra_seconds)
        os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
        out = first + out
        assert proc.returncode == -signal.SIGKILL, err
        lib = Library.open(lib_path)  # recovers, then checks every invariant
        commits = [int(x) for x in out.split()]
        assert commits, f"the writer never committed: {err}"
        # the last reported commit is durable (a later, unreported one may be too)
        last = commits[-1]
        row = lib.entry(f"w{last % 5}")
        assert row is not None and row["size_bytes"] >= last
        for vid in lib.catalog["video_id"]:
            assert lib.segments_of(vid)["segment_id"].is_unique().all()
