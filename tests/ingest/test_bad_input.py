"""Every kind of bad input raises its own VideoError naming the file and the reason, and a
folder mixing good and bad files ingests all the good ones."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from av.stream import Disposition
from PIL import Image

import ingest

TIMES = [i / 10 for i in range(30)]


def expect(error: type[ingest.VideoError], path: Path, match: str) -> ingest.VideoError:
    with pytest.raises(error, match=match) as caught:
        ingest.probe(path)
    err = caught.value
    assert err.path == path and err.reason and str(path) in str(err)
    return err


def test_missing_and_empty(tmp_path) -> None:
    expect(ingest.MissingFileError, tmp_path / "nope.mp4", "does not exist")
    expect(ingest.MissingFileError, tmp_path, "cannot be read")
    (tmp_path / "zero.mp4").write_bytes(b"")
    assert expect(ingest.EmptyFileError, tmp_path / "zero.mp4", "empty").kind == "empty"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12345\n", "Git LFS pointer"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML"),
        (b"just some notes about the trip\n" * 20, "text file"),
        ("jpeg", "JPEG image"),
        ("png", "PNG image"),
    ],
)
def test_renamed_non_videos(tmp_path, content, match) -> None:
    path = tmp_path / "video.mp4"
    if isinstance(content, str):
        buf = io.BytesIO()
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(buf, format=content.upper())
        content = buf.getvalue()
    path.write_bytes(content)
    assert expect(ingest.NotAVideoError, path, match).kind == "not_video"


def test_truncated_mp4_without_index(tmp_path, video_tools) -> None:
    good = video_tools.write_video(tmp_path / "good.mp4", TIMES)  # moov at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expect(ingest.TruncatedVideoError, cut, "cut short")


def test_header_only_mp4(tmp_path, video_tools) -> None:
    good = video_tools.write_video(tmp_path / "fast.mp4", TIMES, container_options={"movflags": "faststart"})
    data = good.read_bytes()
    mdat = data.index(b"mdat") - 4
    header_only = tmp_path / "header_only.mp4"
    header_only.write_bytes(data[: mdat + 8])
    expect(ingest.TruncatedVideoError, header_only, "header")


def test_corrupt(tmp_path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    path = tmp_path / "noise.mp4"
    path.write_bytes(b"\x00\x00\x01\xba" + noise)  # looks like MPEG-PS, is noise
    expect(ingest.CorruptVideoError, path, "FFmpeg|decoded")


def test_encrypted(tmp_path, video_tools) -> None:
    opts = {
        "encryption_scheme": "cenc-aes-ctr",
        "encryption_key": "76a6c65c5ea762046bd749a2e632ccbb",
        "encryption_kid": "a7e61c373e219033c21091fa607bf3b8",
    }
    path = video_tools.write_video(tmp_path / "drm.mp4", TIMES, container_options=opts)
    assert expect(ingest.EncryptedVideoError, path, "encrypted").kind == "encrypted"


def test_audio_only(tmp_path, video_tools) -> None:
    path = video_tools.write_audio(tmp_path / "song.mp4")
    expect(ingest.NoVideoStreamError, path, "audio only")


def test_cover_art_is_not_a_video(tmp_path) -> None:
    path = tmp_path / "album.mp4"
    with av.open(str(path), "w") as out:
        audio = out.add_stream("aac", rate=8000)
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 32, 32, "yuvj420p"
        cover.disposition = Disposition.attached_pic
        frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        frame.pts = 0
        for packet in cover.encode(frame):
            out.mux(packet)
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp", layout="mono")
        samples.sample_rate, samples.pts = 8000, 0
        for packet in [*audio.encode(samples), *audio.encode()]:
            out.mux(packet)
    expect(ingest.NoVideoStreamError, path, "cover art")


def test_unsupported_codec(tmp_path, video_tools) -> None:
    good = video_tools.write_video(tmp_path / "good.mkv", TIMES)
    data = good.read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    path = tmp_path / "alien.mkv"
    path.write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/AVC"))
    assert expect(ingest.UnsupportedCodecError, path, "codec").kind == "unsupported_codec"


def test_decode_raises_video_errors_too(tmp_path, cfr_video) -> None:
    path, _ = cfr_video
    p = ingest.plan(ingest.probe(path))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ingest.EmptyFileError):
        ingest.decode(empty, p)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, video_tools) -> Path:
    root = tmp_path_factory.mktemp("library")
    (root / "trip" / "day1").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    video_tools.write_video(root / "trip" / "day1" / "a.mp4", TIMES)
    video_tools.write_video(root / "b.mkv", TIMES)
    video_tools.write_video(root / ".thumbnails" / "hidden.mp4", TIMES)
    video_tools.write_video(root / "trip" / "no_extension", TIMES, container_format="mp4")  # found by content
    (root / "trip" / "._a.mp4").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (root / "trip" / "a.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    (root / "notes.txt").write_text("not a video")
    (root / "zero.mp4").write_bytes(b"")
    (root / "lfs.mov").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    video_tools.write_audio(root / "voice.m4v")
    return root


def test_discover_skips_hidden_and_sidecars(mixed_folder) -> None:
    found = [p.relative_to(mixed_folder).as_posix() for p in ingest.discover(mixed_folder)]
    assert found == ["b.mkv", "lfs.mov", "trip/day1/a.mp4", "trip/no_extension", "voice.m4v", "zero.mp4"]


def test_folder_with_good_and_bad_files(mixed_folder) -> None:
    events: list[ingest.ProgressEvent] = []
    results = {r.path.name: r for r in ingest.ingest_folder(mixed_folder, progress=events.append)}
    statuses = {name: r.status for name, r in results.items()}
    assert statuses == {
        "b.mkv": "ok", "a.mp4": "ok", "no_extension": "ok",
        "lfs.mov": "not_video", "voice.m4v": "no_video_stream", "zero.mp4": "empty",
    }
    for name in ("b.mkv", "a.mp4", "no_extension"):
        batch = results[name].batch
        assert batch is not None and len(batch) == 6 and batch.video_id == results[name].info.video_id
    assert any(e.stage == "decode" for e in events)


def test_video_ids_are_content_hashes(mixed_folder, tmp_path) -> None:
    a = mixed_folder / "trip" / "day1" / "a.mp4"
    copy = tmp_path / "renamed.mp4"
    copy.write_bytes(a.read_bytes())
    assert ingest.video_id(a) == ingest.video_id(copy) != ingest.video_id(mixed_folder / "b.mkv")
    assert len(ingest.video_id(a)) == 16
