"""Library store: round trips, upsert/remove semantics, search, index kinds, change detection."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pytest

from index import (
    CATALOG_SCHEMA,
    SEGMENTS_SCHEMA,
    Library,
    LibraryMismatchError,
    LibraryNotFoundError,
    Segment,
    VideoEntry,
    content_hash,
    video_id_for_path,
)

DIM = 16


def test_create_commit_reopen_round_trip(filled: Library, lib_path: Path) -> None:
    again = Library.open(lib_path, embedder_id="random-16", dimension=DIM)
    assert again.catalog.schema == CATALOG_SCHEMA
    assert again.segments.schema == SEGMENTS_SCHEMA
    assert again.catalog.equals(filled.catalog)
    assert again.segments.equals(filled.segments)
    assert again.manifest == filled.manifest
    assert sorted(os.listdir(lib_path)) == [
        "catalog.parquet",
        "manifest.json",
        "segments.parquet",
        "vectors.faiss",
    ]
    # faiss ids are the segment ids, and the stored vectors are the normalised inputs
    ids = faiss.vector_to_array(again._index.id_map)
    assert sorted(ids.tolist()) == sorted(again.segments["segment_id"].to_list())
    norms = np.linalg.norm(again._index.index.reconstruct_n(0, again._index.ntotal), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_catalog_row_keeps_probe_facts_and_times(lib_path: Path, rng: np.random.Generator) -> None:
    lib = Library.open(lib_path, create=True, embedder_id="e", dimension=DIM)
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    e = VideoEntry(
        video_id="a",
        path="/v/a.mov",
        size_bytes=12345,
        mtime_ns=99,
        content_hash="ab" * 32,
        status="partial",
        error_message="window 3 failed to decode",
        duration_seconds=61.5,
        fps=29.97,
        width=1920,
        height=1080,
        rotation_degrees=90,
        codec="h264",
        probe={"container": "mov", "audio": True},
        plan_description="2 fps, 120 frames",
        model_id="tiny",
        ingest_started_at=started,
        ingest_finished_at=started,
    )
    lib.upsert_video(e, [Segment(0.0, 1.5, "x")], rng.normal(size=(1, DIM)))
    lib.commit()
    row = Library.open(lib_path).entry("a")
    assert row is not None
    assert (row["rotation_degrees"], row["codec"], row["fps"], row["status"]) == (
        90,
        "h264",
        29.97,
        "partial",
    )
    assert row["probe_json"] == '{"audio": true, "container": "mov"}'
    assert row["ingest_started_at"] == started
    assert Library.open(lib_path).failures()["error_message"].to_list() == [
        "window 3 failed to decode"
    ]


def test_upsert_replaces_old_segments_and_vectors(
    filled: Library, lib_path: Path, rng, make_entry
) -> None:
    old_ids = filled.segments_of("v1")["segment_id"].to_list()
    new_ids = filled.upsert_video(
        make_entry("v1"), [Segment(1, 2, "only one")], rng.normal(size=(1, DIM))
    )
    filled.commit()
    again = Library.open(lib_path)
    assert again.segments_of("v1")["caption"].to_list() == ["only one"]
    assert again.catalog.height == 3 and again.segments.height == 4
    assert not set(old_ids) & set(new_ids.tolist()), "segment ids are never reused"
    assert again._index.ntotal == 4
    for stale in old_ids:
        with pytest.raises(RuntimeError):
            again._index.reconstruct(int(stale))


def test_remove_video_and_update_entry(filled: Library, lib_path: Path, make_entry) -> None:
    assert filled.remove_video("v2") is True
    assert filled.remove_video("nope") is False
    filled.update_entry(make_entry("v1", status="error", error_message="re-ingest failed"))
    filled.commit()
    again = Library.open(lib_path)
    assert sorted(again.catalog["video_id"].to_list()) == ["v1", "v3"]
    assert again.segments_of("v2").height == 0
    assert again.segments_of("v1").height == 4, "update_entry keeps what was indexed"
    assert set(again.failures()["video_id"]) == {"v1", "v3"}
    with pytest.raises(KeyError, match="'zz' is not in library"):
        again.update_entry(make_entry("zz"))


def test_staged_changes_are_not_on_disk_until_commit(filled: Library, lib_path: Path) -> None:
    filled.remove_video("v1")
    assert filled.has_uncommitted_changes
    assert Library.open(lib_path).entry("v1") is not None
    before = (lib_path / "manifest.json").read_bytes()
    Library.open(lib_path).commit()  # nothing staged: no write
    assert (lib_path / "manifest.json").read_bytes() == before


def test_open_errors(tmp_path: Path, filled: Library, lib_path: Path) -> None:
    with pytest.raises(LibraryNotFoundError, match="no library at .*create=True"):
        Library.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="needs embedder_id and a positive dimension"):
        Library.open(tmp_path / "new", create=True)
    with pytest.raises(
        LibraryMismatchError, match="built with embedder 'random-16'.*rebuild_vectors"
    ):
        Library.open(lib_path, embedder_id="other")
    with pytest.raises(LibraryMismatchError, match="dimension 16"):
        Library.open(lib_path, dimension=384)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (None, "2 segments need 2 vectors"),
        (np.ones((3, DIM)), "2 segments but 3 vectors"),
        (np.ones((2, 5)), r"shape \[N, 16\]"),
        (np.full((2, DIM), np.nan), "NaN or infinity"),
        (np.zeros((2, DIM)), "row 0 is all zeros"),
    ],
)
def test_upsert_rejects_bad_vectors(filled: Library, make_entry, vectors, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        filled.upsert_video(make_entry("v9"), [Segment(0, 1, "a"), Segment(1, 2, "b")], vectors)
    assert filled.entry("v9") is None


def test_bad_entries_and_segments_raise() -> None:
    with pytest.raises(ValueError, match="status must be one of"):
        VideoEntry(video_id="a", path="p", size_bytes=1, status="fine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0 <= start <= end"):
        Segment(5.0, 2.0, "backwards")


def test_search_merges_adjacent_hits_and_joins_metadata(lib_path: Path, make_entry) -> None:
    lib = Library.open(lib_path, create=True, embedder_id="e", dimension=4)
    basis = np.eye(4, dtype=np.float32)
    dog = basis[0] + 0.1 * basis[1]
    segs = [
        Segment(0, 2, "dog runs"),
        Segment(2, 4, "dog jumps"),
        Segment(4.5, 6, "dog lands"),
        Segment(20, 22, "cat sleeps"),
        Segment(30, 32, "dog again"),
    ]
    vecs = np.stack([dog, basis[0], dog, basis[2], basis[0] + 0.3 * basis[3]])
    lib.upsert_video(make_entry("a", path="/v/a.mp4", duration_seconds=40.0), segs, vecs)
    lib.upsert_video(
        make_entry("b", path="/v/b.mp4"),
        [Segment(0, 3, "dog elsewhere")],
        (basis[0] + basis[1])[None],
    )
    lib.commit()

    hits = Library.open(lib_path).search(basis[0], k=5)
    first = hits.row(0, named=True)
    assert (first["video_id"], first["path"], first["start_seconds"], first["end_seconds"]) == (
        "a",
        "/v/a.mp4",
        0.0,
        6.0,
    )
    assert first["caption"] == "dog jumps" and first["score"] == pytest.approx(1.0)
    assert first["captions"] == ["dog runs", "dog jumps", "dog lands"]
    assert first["duration_seconds"] == 40.0
    assert hits["rank"].to_list() == list(range(1, hits.height + 1))
    assert hits["score"].is_sorted(descending=True)
    assert hits.height == 3  # 5 hits -> [0,6] in a, [30,32] in a, [0,3] in b

    apart = lib.search(basis[0], k=5, merge_gap_seconds=None)
    assert apart.height == 5
    tight = lib.search(basis[0], k=5, merge_gap_seconds=0.0)  # 4 -> 4.5 gap is not merged
    assert tight.filter(pl.col("video_id") == "a")["end_seconds"].to_list()[0] == 4.0


def test_search_one_video_and_small_k(filled: Library, rng: np.random.Generator) -> None:
    q = rng.normal(size=DIM)
    only = filled.search(q, k=10, video_id="v2", merge_gap_seconds=None)
    assert set(only["video_id"]) == {"v2"} and only.height == 3
    assert filled.search(q, k=1, merge_gap_seconds=None).height == 1
    with pytest.raises(KeyError, match="'nope' is not in library"):
        filled.search(q, k=3, video_id="nope")
    with pytest.raises(ValueError, match="k must be positive"):
        filled.search(q, k=0)
    # exact search: the best hit is the true arg-max of cosine similarity
    all_ids = filled.segments["segment_id"].to_numpy()
    vecs = np.stack([filled._index.reconstruct(int(i)) for i in all_ids])
    best = all_ids[np.argmax(vecs @ (q / np.linalg.norm(q)))]
    top = filled.search(q, k=1, merge_gap_seconds=None).row(0, named=True)
    assert top["segment_ids"] == [best]


def test_large_library_switches_to_hnsw_and_back(
    lib_path: Path, rng: np.random.Generator, make_entry
) -> None:
    lib = Library.open(lib_path, create=True, embedder_id="e", dimension=DIM, approximate_above=50)
    x = rng.normal(size=(60, DIM)).astype(np.float32)
    segs = [Segment(float(i), i + 0.5, f"c{i}") for i in range(60)]
    lib.upsert_video(make_entry("big"), segs, x)
    lib.commit()
    again = Library.open(lib_path, approximate_above=50)
    assert again.index_kind == "hnsw" and again.manifest.index_kind == "hnsw"
    hits = again.search(x[17], k=1, merge_gap_seconds=None)
    assert hits["captions"][0].to_list() == ["c17"]
    # removal from HNSW rebuilds it; dropping under the threshold makes it exact again
    again.upsert_video(make_entry("big"), segs[:10], x[:10])
    again.commit()
    small = Library.open(lib_path, approximate_above=50)
    assert small.index_kind == "flat" and small._index.ntotal == 10


def test_file_changes_helper(tmp_path: Path, lib_path: Path) -> None:
    files = {
        name: tmp_path / f"{name}.mp4" for name in ("same", "edited", "touched", "gone", "fresh")
    }
    for name, path in files.items():
        path.write_bytes(name.encode() * 100)
    lib = Library.open(lib_path, create=True, embedder_id="e", dimension=DIM)
    for name in ("same", "edited", "touched", "gone"):
        p = files[name]
        st = p.stat()
        lib.upsert_video(
            VideoEntry(
                video_id=video_id_for_path(p),
                path=str(p),
                size_bytes=st.st_size,
                mtime_ns=st.st_mtime_ns,
                content_hash=content_hash(p),
                status="ok",
            )
        )
    lib.commit()
    files["edited"].write_bytes(b"new content!")
    os.utime(files["touched"], ns=(1, 1))
    files["gone"].unlink()
    found = [files[n] for n in ("same", "edited", "touched", "fresh")]
    changes = {Path(r["path"]).stem: r["change"] for r in lib.changes(found).iter_rows(named=True)}
    assert changes == {
        "same": "unchanged",
        "edited": "changed",
        "touched": "touched",
        "fresh": "new",
        "gone": "missing",
    }
    never = {
        Path(r["path"]).stem: r["change"]
        for r in lib.changes(found, hash_policy="never").iter_rows(named=True)
    }
    assert never["touched"] == "changed"
    assert video_id_for_path(files["same"]) == video_id_for_path(str(files["same"]))
