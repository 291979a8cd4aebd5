"""Test videos generated with PyAV whose every frame's true time and content are known.

Frame i is a solid colour that encodes i in base 16 (R = 5 * low digit mod 16, G = high digit,
B fixed), with 14 code values between levels so lossy codecs and colour conversion cannot flip
a digit; the factor 5 makes consecutive frames differ a lot, so no encoder treats one as a
repeat of the previous frame.
`index_of` reads it back from a decoded `[3, H, W]` frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

SHARED_VIDEOS = Path(__file__).resolve().parents[2].parent / "shared/testdata/videos"
LEVEL0, LEVEL_STEP = 24, 14
QUADRANT_COLOURS = {  # top-left, top-right, bottom-left, bottom-right of the coded picture
    "tl": (230, 30, 30),
    "tr": (30, 230, 30),
    "bl": (30, 30, 230),
    "br": (230, 230, 230),
}


def index_colour(i: int) -> tuple[int, int, int]:
    return (LEVEL0 + LEVEL_STEP * (5 * i % 16), LEVEL0 + LEVEL_STEP * ((i // 16) % 16), 128)


def index_of(frame_chw: np.ndarray) -> int:
    """Frame number encoded by `index_colour`, read from the mean colour."""
    r, g = frame_chw[:2].reshape(2, -1).mean(axis=1)
    low = 13 * int(round((r - LEVEL0) / LEVEL_STEP)) % 16  # 13 = 5^-1 mod 16
    return low + 16 * int(round((g - LEVEL0) / LEVEL_STEP))


def quadrant_image(width: int, height: int) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    img[:h2, :w2], img[:h2, w2:] = QUADRANT_COLOURS["tl"], QUADRANT_COLOURS["tr"]
    img[h2:, :w2], img[h2:, w2:] = QUADRANT_COLOURS["bl"], QUADRANT_COLOURS["br"]
    return img


def write_video(
    path: Path,
    times_seconds: Sequence[float],
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (64, 48),
    pix_fmt: str = "yuv420p",
    time_base: Fraction = Fraction(1, 90000),
    rate: int = 10,
    options: dict[str, str] | None = None,
    rotation: int | None = None,
    hflip: bool = False,
    image: Callable[[int, int, int], np.ndarray] | None = None,
    container_options: dict[str, str] | None = None,
    container_format: str | None = None,
) -> Path:
    """Encode one frame per entry of `times_seconds` (its PTS), frame i showing `index_colour(i)`."""
    width, height = size
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=rate, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        for i, t in enumerate(times_seconds):
            if image is None:
                pixels = np.empty((height, width, 3), np.uint8)
                pixels[:] = index_colour(i)
            else:
                pixels = image(i, width, height)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = round(t / time_base), time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_audio(path: Path, *, seconds: float = 1.0, codec: str = "aac") -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=44100)
        samples = int(seconds * 44100)
        tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 44100)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def all_frame_times(path: Path) -> list[float]:
    """Every frame's time from a plain PyAV pass, relative to the first frame."""
    with av.open(str(path), metadata_errors="ignore") as c:
        times = [float(f.time) for f in c.decode(video=0)]
    return [t - times[0] for t in times]


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    if not SHARED_VIDEOS.is_dir():
        pytest.skip(f"shared test videos not found at {SHARED_VIDEOS}")
    return SHARED_VIDEOS


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def cfr_video(gen_dir: Path) -> tuple[Path, list[float]]:
    """A 6 s, 10 fps H.264 mp4 (60 index-coded frames)."""
    times = [i / 10 for i in range(60)]
    return write_video(gen_dir / "cfr_10fps.mp4", times, size=(96, 64)), times


@pytest.fixture(scope="session")
def video_tools():
    """The generator helpers, for tests that build their own files."""

    class Tools:
        write_video = staticmethod(write_video)
        write_audio = staticmethod(write_audio)
        index_of = staticmethod(index_of)
        quadrant_image = staticmethod(quadrant_image)
        all_frame_times = staticmethod(all_frame_times)
        QUADRANT_COLOURS = QUADRANT_COLOURS

    return Tools
