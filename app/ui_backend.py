"""What the web app needs from the product: a small typed protocol, a fake, and the real adapter.

The Streamlit pages talk only to an ``AppBackend``; they never touch the model, the library or
search. ``PipelineBackend`` adapts ``app.pipeline.Pipeline``; ``FakeBackend`` answers from
fixed data (AppTest tests, browser tests, trying the UI without a model).

Unusual here: every failure a person can cause or fix (a bad folder, an empty library, a
missing model) is raised as a ``BackendError`` whose message is written for the page; the
pages show it with ``st.error``/``st.info`` instead of a traceback.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import polars as pl

import index

if TYPE_CHECKING:
    import vidlm
    from app.pipeline import Pipeline
    from app.results import PipelineEvent

ExportFormat = Literal["jsonl", "srt", "vtt", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "srt", "vtt", "parquet")
Progress = Callable[[float, str], None]

BACKEND_ENV = "VIDLM_UI_BACKEND"  # "pipeline" (default) or "fake"
MODEL_ENV = "VIDLM_MODEL"  # model folder or hub id; unset = the built-in model
EMBEDDER_ENV = "VIDLM_EMBEDDER"  # Qwen3-VL-Embedding folder or hub id; unset = the MiniLM caption embedder
COMPILE_ENV = "VIDLM_COMPILE"  # "1"/"true": decode through torch.compile (PipelineOptions.compile_decoding)
FAKE_DIR_ENV = "VIDLM_UI_FAKE_DIR"  # folder of videos the fake backend shows
FAKE_SCENARIO_ENV = "VIDLM_UI_FAKE_SCENARIO"  # "", "empty" or "no-model"

VIDEO_COLUMNS = {"video_id": pl.String, "path": pl.String, "duration_seconds": pl.Float64,
                 "status": pl.String, "error": pl.String, "segments": pl.Int64}
SEGMENT_COLUMNS = {"start_seconds": pl.Float64, "end_seconds": pl.Float64, "caption": pl.String}
HIT_COLUMNS = {"rank": pl.Int64, "video_id": pl.String, "path": pl.String,
               "start_seconds": pl.Float64, "end_seconds": pl.Float64, "score": pl.Float64,
               "caption": pl.String, "grounded": pl.Boolean, "confidence": pl.Float64}


class BackendError(Exception):
    """A problem the person can fix; ``str(err)`` is the message for the page."""


class BadFolderError(BackendError):
    """The folder to ingest does not exist or is not a folder."""


class EmptyLibraryError(BackendError):
    """No library yet, or nothing ingested in it."""


class ModelMissingError(BackendError):
    """The model cannot be found or loaded."""


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did: counts per action and the files that failed with their reasons."""

    counts: dict[str, int]
    failures: tuple[tuple[str, str], ...] = ()  # (path, reason)


@dataclass(frozen=True)
class ExportFile:
    """A file for ``st.download_button``."""

    name: str
    data: bytes
    mime: str


@runtime_checkable
class AppBackend(Protocol):
    """Everything the pages call. Tables are polars frames with the ``*_COLUMNS`` schemas."""

    def version(self) -> str:
        """Changes whenever the library changes (a cache key for tables)."""
        ...

    def describe(self) -> str:
        """One line naming the library and the model, for the sidebar."""
        ...

    def videos(self) -> pl.DataFrame:
        """Every catalog row: video_id, path, duration_seconds, status, error, segments."""
        ...

    def failures(self) -> pl.DataFrame:
        """The rows of ``videos()`` whose status is not "ok"."""
        ...

    def ingest(self, folder: str, progress: Progress) -> IngestSummary:
        """Ingest a folder; ``progress(fraction 0..1, text)`` as it goes."""
        ...

    def ask_stream(self, video_id: str, question: str) -> vidlm.AnswerStream:
        """The answer to a question about one video, in pieces as they are generated; once
        all are read, the stream's ``answer`` (``confidence``: how sure the model was)."""
        ...

    def spans(self, answer: str, duration_seconds: float | None) -> list[tuple[float, float]]:
        """The time spans written in an answer, clamped to the video."""
        ...

    def captions(self, video_id: str) -> pl.DataFrame:
        """The video's grounded captions: start_seconds, end_seconds, caption (time order)."""
        ...

    def search(self, query: str, k: int) -> pl.DataFrame:
        """Ranked spans across the library (``HIT_COLUMNS``), best first."""
        ...

    def export(self, format: ExportFormat, video_id: str | None) -> ExportFile:
        """Grounded captions of one video (or all) in a format."""
        ...

    def thumbnail(self, video_id: str) -> bytes | None:
        """A small JPEG of the video, or None."""
        ...

    def video_path(self, video_id: str) -> Path | None:
        """The video's file on disk, or None when it is gone."""
        ...


def parse_answer_spans(answer: str, duration_seconds: float | None) -> list[tuple[float, float]]:
    """Spans in an answer via ``index.parse_spans``; never raises."""
    spans = index.parse_spans(answer, duration_seconds=duration_seconds)
    return [(float(s.start_seconds), float(s.end_seconds)) for s in spans]


def subtitles_vtt(captions: pl.DataFrame) -> str:
    """WebVTT text of a captions table (escaped, milliseconds)."""
    cues = [(float(r["start_seconds"]), float(r["end_seconds"]), str(r["caption"]))
            for r in captions.iter_rows(named=True)]
    return index.to_webvtt(cues)


def jpeg_thumbnail(path: Path, *, at_seconds: float = 1.0, width: int = 160, timeout: float = 20.0) -> bytes | None:
    """One JPEG frame of a video via the ffmpeg binary, or None when it cannot be read."""
    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-ss", f"{at_seconds:.3f}", "-i", str(path),
           "-frames:v", "1", "-vf", f"scale={width}:-2", "-f", "image2pipe", "-vcodec", "mjpeg", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout:
        return None if at_seconds == 0 else jpeg_thumbnail(path, at_seconds=0.0, width=width, timeout=timeout)
    return out.stdout


def _typed(rows: list[dict], columns: dict[str, pl.DataType]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=columns, orient="row") if rows else pl.DataFrame(schema=columns)
    return frame.select(list(columns))


# ----- the fake ------------------------------------------------------------------------------


class _VideoFiles:
    """Thumbnail and file lookups shared by the backends (both list videos with ``videos()``)."""

    def videos(self) -> pl.DataFrame:  # pragma: no cover - provided by the backend
        raise NotImplementedError

    def thumbnail(self, video_id: str) -> bytes | None:
        path = self.video_path(video_id)
        return jpeg_thumbnail(path) if path is not None else None

    def video_path(self, video_id: str) -> Path | None:
        rows = self.videos().filter(pl.col("video_id") == video_id)
        if rows.is_empty():
            return None
        path = Path(str(rows["path"][0]))
        return path if path.is_file() else None


@dataclass
class FakeBackend(_VideoFiles):
    """A backend with fixed answers, for tests and for looking at the UI without a model.

    Args:
        video_dir: when given, its ``*.mp4`` files are the library (durations from ``durations``
            or 20 s); otherwise two made-up videos whose files do not exist.
        scenario: "" (normal), "empty" (nothing ingested) or "no-model" (questions and ingest
            fail as when the model is missing).
        answer: the answer every question gets (streamed word by word).
    """

    video_dir: Path | None = None
    scenario: str = ""
    answer: str = "The red circle enters from 12.0 to 15.5 seconds, and leaves at <17.0 seconds>."
    durations: dict[str, float] = field(default_factory=dict)
    ingested: int = 0
    asked: list[tuple[str, str]] = field(default_factory=list)

    def version(self) -> str:
        return f"fake-{self.scenario}-{self.ingested}"

    def describe(self) -> str:
        return "fake backend (no model)"

    def _rows(self) -> list[dict]:
        if self.scenario == "empty" and not self.ingested:
            return []
        if self.video_dir is not None:
            files = sorted(Path(self.video_dir).glob("*.mp4"))
            return [{"video_id": f.stem, "path": str(f), "duration_seconds": self.durations.get(f.stem, 20.0),
                     "status": "ok", "error": None, "segments": 3} for f in files]
        return [
            {"video_id": "red", "path": "/videos/red.mp4", "duration_seconds": 20.0, "status": "ok",
             "error": None, "segments": 3},
            {"video_id": "blue", "path": "/videos/blue.mp4", "duration_seconds": 12.0, "status": "ok",
             "error": None, "segments": 3},
            {"video_id": "broken", "path": "/videos/broken.mp4", "duration_seconds": None,
             "status": "error", "error": "not a video: text file", "segments": 0},
        ]

    def videos(self) -> pl.DataFrame:
        return _typed(self._rows(), VIDEO_COLUMNS)

    def failures(self) -> pl.DataFrame:
        return self.videos().filter(pl.col("status") != "ok")

    def ingest(self, folder: str, progress: Progress) -> IngestSummary:
        if self.scenario == "no-model":
            raise ModelMissingError("The model is missing: the built-in checkpoint is not installed.")
        if not Path(folder).expanduser().is_dir():
            raise BadFolderError(f"{folder}: no such folder")
        for step in range(1, 4):
            progress(step / 3, f"file {step} of 3")
        self.ingested += 1
        return IngestSummary({"ingested": 2, "skipped": 0, "failed": 1},
                             (("/videos/broken.mp4", "not a video: text file"),))

    def ask_stream(self, video_id: str, question: str) -> vidlm.AnswerStream:
        import vidlm

        def pieces() -> Generator[str, None, vidlm.Answer]:
            if self.scenario == "no-model":
                raise ModelMissingError("The model is missing: the built-in checkpoint is not installed.")
            self.asked.append((video_id, question))
            for word in self.answer.split(" "):
                yield word + " "
            return vidlm.Answer(self.answer, (0,), (math.log(0.62),))

        return vidlm.AnswerStream(pieces())

    def spans(self, answer: str, duration_seconds: float | None) -> list[tuple[float, float]]:
        return parse_answer_spans(answer, duration_seconds)

    def captions(self, video_id: str) -> pl.DataFrame:
        rows = [
            {"start_seconds": 2.0, "end_seconds": 5.5, "caption": "the red circle enters from the left"},
            {"start_seconds": 6.0, "end_seconds": 8.0, "caption": "the background turns <blue> & green"},
            {"start_seconds": 9.0, "end_seconds": 11.0, "caption": "the red circle leaves"},
        ]
        return _typed(rows if video_id in set(self.videos()["video_id"]) else [], SEGMENT_COLUMNS)

    def search(self, query: str, k: int) -> pl.DataFrame:
        ok = self.videos().filter(pl.col("status") == "ok")
        rows = []
        for rank, video in enumerate(ok.iter_rows(named=True), start=1):
            rows.append({"rank": rank, "video_id": video["video_id"], "path": video["path"],
                         "start_seconds": 2.0 * rank, "end_seconds": 2.0 * rank + 3.0,
                         "score": round(0.9 / rank, 3), "caption": f"{query} ({video['video_id']})",
                         "grounded": rank == 1, "confidence": 0.62 if rank == 1 else None})
        return _typed(rows[:k], HIT_COLUMNS)

    def export(self, format: ExportFormat, video_id: str | None) -> ExportFile:
        if self.videos().is_empty():
            raise EmptyLibraryError("Nothing is ingested yet: ingest a folder on the Library page.")
        caps = self.captions(video_id or str(self.videos()["video_id"][0]))
        stem = video_id or "library"
        if format == "vtt":
            return ExportFile(f"{stem}.vtt", subtitles_vtt(caps).encode(), "text/vtt")
        cues = [(r["start_seconds"], r["end_seconds"], r["caption"]) for r in caps.iter_rows(named=True)]
        if format == "srt":
            return ExportFile(f"{stem}.srt", index.to_srt(cues).encode(), "application/x-subrip")
        if format == "parquet":
            buf = io.BytesIO()
            caps.write_parquet(buf)
            return ExportFile(f"{stem}.parquet", buf.getvalue(), "application/octet-stream")
        lines = "".join(f'{{"vid": "{stem}", "query": "{c}"}}\n' for _, _, c in cues)
        return ExportFile(f"{stem}.jsonl", lines.encode(), "application/jsonl")


# ----- the real pipeline ---------------------------------------------------------------------


class PipelineBackend(_VideoFiles):
    """``AppBackend`` over ``app.pipeline.Pipeline`` (one per server, shared by all sessions).

    Model calls are serialised by a lock: one model, many browser tabs.

    Args:
        library: the library folder (the pipeline's default when None).
        model: checkpoint folder or hub id; None for the built-in model.
        pipeline: an already-built pipeline (tests).
        embedder_model: Qwen3-VL-Embedding checkpoint for the library's vectors; None: MiniLM.
        compile_decoding: decode through ``torch.compile`` (a server answers many questions).
    """

    def __init__(self, *, library: str | os.PathLike[str] | None = None, model: str | None = None,
                 pipeline: Pipeline | None = None, embedder_model: str | None = None,
                 compile_decoding: bool = False) -> None:
        from app.pipeline import Pipeline, PipelineOptions

        self.pipe = pipeline or Pipeline(model=model, library=library, embedder_model=embedder_model,
                                         options=PipelineOptions(compile_decoding=compile_decoding))
        self.model = model
        self._lock = threading.Lock()

    @property
    def library_path(self) -> Path:
        return Path(self.pipe.library_path)

    def version(self) -> str:
        manifest = self.library_path / "manifest.json"
        return str(manifest.stat().st_mtime_ns) if manifest.exists() else "none"

    def describe(self) -> str:
        return f"library {self.library_path} · model {self.model or 'built-in'}"

    def _library(self) -> index.Library:
        try:
            return index.Library.open(self.library_path)
        except index.LibraryNotFoundError as err:
            raise EmptyLibraryError(
                f"Nothing is ingested yet (no library at {self.library_path}): ingest a folder on the Library page."
            ) from err
        except index.LibraryError as err:
            raise BackendError(f"The library cannot be opened: {err}") from err

    def videos(self) -> pl.DataFrame:
        try:
            status = self.pipe.status()
        except index.LibraryNotFoundError:
            return _typed([], VIDEO_COLUMNS)
        except index.LibraryError as err:
            raise BackendError(f"The library cannot be opened: {err}") from err
        return _typed([{k: e.get(k) for k in VIDEO_COLUMNS} for e in status.entries], VIDEO_COLUMNS)

    def failures(self) -> pl.DataFrame:
        return self.videos().filter(pl.col("status") != "ok")

    def ingest(self, folder: str, progress: Progress) -> IngestSummary:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise BadFolderError(f"{folder}: no such folder")
        with self._lock, _model_errors():
            report = self.pipe.ingest_folder(root, progress=_pipeline_progress(progress))
        progress(1.0, "done")
        return IngestSummary(report.counts(), tuple((f.path, f.error or f.status or "") for f in report.failures))

    def ask_stream(self, video_id: str, question: str) -> vidlm.AnswerStream:
        import vidlm

        def pieces() -> Generator[str, None, vidlm.Answer | None]:
            if not question.strip():
                raise BackendError("Type a question first.")
            with self._lock, _model_errors():
                stream = self.pipe.ask_stream(video_id, question)
                yield from stream
                return stream.answer

        return vidlm.AnswerStream(pieces())

    def spans(self, answer: str, duration_seconds: float | None) -> list[tuple[float, float]]:
        return parse_answer_spans(answer, duration_seconds)

    def captions(self, video_id: str) -> pl.DataFrame:
        segments = self._library().segments_of(video_id).sort("start_seconds", "end_seconds")
        return segments.select(list(SEGMENT_COLUMNS)).cast(SEGMENT_COLUMNS)

    def search(self, query: str, k: int) -> pl.DataFrame:
        if not query.strip():
            raise BackendError("Type what to look for first.")
        self._library()
        with self._lock, _model_errors():
            hits = self.pipe.localize(query, k=k)
        return _typed([h.to_json() | {"score": h.score} for h in hits], HIT_COLUMNS)

    def export(self, format: ExportFormat, video_id: str | None) -> ExportFile:
        if self.videos().filter(pl.col("status") != "error").is_empty():
            raise EmptyLibraryError("Nothing is ingested yet: ingest a folder on the Library page.")
        stem = video_id or "library"
        with tempfile.TemporaryDirectory(prefix="vidlm-export-") as tmp:
            target = Path(tmp) / f"{stem}.{format}"
            written = self.pipe.export(target, format=format, video=video_id)
            if len(written) == 1 and written[0].is_file():
                return ExportFile(written[0].name if video_id else target.name,
                                  written[0].read_bytes(), _MIMES[format])
            return ExportFile(f"{stem}-{format}.zip", _zip(written), "application/zip")


_MIMES: dict[str, str] = {"jsonl": "application/jsonl", "srt": "application/x-subrip",
                          "vtt": "text/vtt", "parquet": "application/octet-stream"}


def _zip(files: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            archive.write(f, arcname=f.name)
    return buf.getvalue()


class _model_errors:
    """Turns a missing/unloadable model into ``ModelMissingError``."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: object) -> bool:
        if err is None or isinstance(err, BackendError):
            return False
        from vidlm import CheckpointError

        if isinstance(err, CheckpointError):
            raise ModelMissingError(f"The model is missing or cannot be loaded: {err}") from err
        if isinstance(err, index.LibraryNotFoundError):
            raise EmptyLibraryError("Nothing is ingested yet: ingest a folder on the Library page.") from err
        if isinstance(err, (index.LibraryError, FileNotFoundError, KeyError, ValueError, NotADirectoryError)):
            raise BackendError(str(err)) from err
        return False


def _pipeline_progress(progress: Progress) -> Callable[[PipelineEvent], None]:
    """Maps pipeline events to (fraction, text): whole files, plus the current file's windows."""
    state = {"files_done": 0.0, "files": 0.0, "last": time.monotonic()}

    def on_event(event: PipelineEvent) -> None:
        name = Path(event.path).name if event.path is not None else ""
        if event.stage == "file":
            state["files_done"], state["files"] = float(event.done), float(event.total)
            progress(min(1.0, event.done / max(event.total, 1.0)), f"{name}: {event.detail}")
            return
        if time.monotonic() - state["last"] < 0.2:
            return
        state["last"] = time.monotonic()
        inner = min(1.0, event.done / event.total) if event.total else 0.0
        total = state["files"] or 1.0
        fraction = min(0.99, (state["files_done"] + inner) / total) if state["files"] else inner * 0.99
        progress(fraction, f"{name}: {event.stage} {event.done:g}/{event.total:g}")

    return on_event


def backend_from_env() -> AppBackend:
    """The backend the environment asks for (``VIDLM_UI_BACKEND``, ``VIDLM_LIBRARY``, ``VIDLM_MODEL``,
    ``VIDLM_EMBEDDER``, ``VIDLM_COMPILE``)."""
    kind = os.environ.get(BACKEND_ENV, "pipeline")
    if kind == "fake":
        folder = os.environ.get(FAKE_DIR_ENV)
        return FakeBackend(video_dir=Path(folder) if folder else None,
                           scenario=os.environ.get(FAKE_SCENARIO_ENV, ""))
    if kind != "pipeline":
        raise BackendError(f"{BACKEND_ENV}={kind!r}: expected 'pipeline' or 'fake'")
    return PipelineBackend(library=os.environ.get("VIDLM_LIBRARY") or None, model=os.environ.get(MODEL_ENV) or None,
                           embedder_model=os.environ.get(EMBEDDER_ENV) or None,
                           compile_decoding=env_flag(COMPILE_ENV))


def env_flag(name: str) -> bool:
    """A yes/no environment variable: "1", "true", "yes", "on" (any case) mean yes."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def backend_key() -> tuple[str, ...]:
    """The environment values that pick a backend (a cache key: new values, new backend)."""
    names = (BACKEND_ENV, FAKE_DIR_ENV, FAKE_SCENARIO_ENV, "VIDLM_LIBRARY", MODEL_ENV, EMBEDDER_ENV, COMPILE_ENV)
    return tuple(os.environ.get(n, "") for n in names)
