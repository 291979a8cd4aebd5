"""What the pipeline returns: small frozen dataclasses with a stable ``to_json()``.

Unusual here: ``to_json()`` is the CLI's ``--json`` output, so its keys are a public,
documented contract (README "JSON output"); add keys, never rename or remove them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ingest import ProgressEvent

IngestAction = Literal["ingested", "skipped", "touched", "removed", "failed"]
AskMode = Literal["whole", "retrieved", "downsampled"]


@dataclass(frozen=True)
class SpanResult:
    """A time span in seconds from the video stream start, with its caption if any."""

    start_seconds: float
    end_seconds: float
    caption: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "start_seconds": round(self.start_seconds, 3),
            "end_seconds": round(self.end_seconds, 3),
            "caption": self.caption,
        }


@dataclass(frozen=True)
class FileOutcome:
    """What ingest did with one file (or one catalog row whose file is gone)."""

    path: str
    video_id: str
    action: IngestAction
    status: (
        str | None
    )  # the catalog status after this run ("ok", "partial", "error"), None if removed
    error: str | None = None
    segments: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "video_id": self.video_id,
            "action": self.action,
            "status": self.status,
            "error": self.error,
            "segments": self.segments,
        }


@dataclass(frozen=True)
class IngestReport:
    """The outcome of ``Pipeline.ingest_folder``: one ``FileOutcome`` per file."""

    library: Path
    model_id: str
    files: tuple[FileOutcome, ...]

    @property
    def failures(self) -> tuple[FileOutcome, ...]:
        """Files of this folder whose catalog status is not "ok" after the run."""
        return tuple(f for f in self.files if f.status in ("error", "partial"))

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in ("ingested", "skipped", "touched", "removed", "failed")}
        for f in self.files:
            out[f.action] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "library": str(self.library),
            "model_id": self.model_id,
            "counts": self.counts(),
            "files": [f.to_json() for f in self.files],
            "failures": [f.to_json() for f in self.failures],
        }


@dataclass(frozen=True)
class AskResult:
    """An answer about one video, with the spans parsed from it (absolute seconds)."""

    video_id: str
    path: str
    question: str
    answer: str
    spans: tuple[SpanResult, ...]
    mode: AskMode  # whole video in context, retrieved windows, or the whole video downsampled
    windows: tuple[tuple[float, float], ...]  # the spans of the video the model saw
    model_id: str
    confidence: float = 1.0  # the probability of the answer's least likely token (vidlm.Answer)

    def to_json(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "path": self.path,
            "question": self.question,
            "answer": self.answer,
            "spans": [s.to_json() for s in self.spans],
            "mode": self.mode,
            "windows": [[round(s, 3), round(e, 3)] for s, e in self.windows],
            "model_id": self.model_id,
            "confidence": round(self.confidence, 4),
        }


@dataclass(frozen=True)
class LocalizedSpan:
    """One ranked search hit: a span of a video with its caption and cosine score.

    ``grounded``: the span is the model's answer to when the query happens in that video
    (``caption`` is the answer; ``score`` the video's best caption score; ``confidence`` the
    answer's, see ``AskResult``); otherwise a stored caption's span that matched the query
    (``confidence`` None).
    """

    rank: int
    video_id: str
    path: str
    start_seconds: float
    end_seconds: float
    score: float
    caption: str
    grounded: bool = False
    confidence: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "video_id": self.video_id,
            "path": self.path,
            "start_seconds": round(self.start_seconds, 3),
            "end_seconds": round(self.end_seconds, 3),
            "score": round(self.score, 6),
            "caption": self.caption,
            "grounded": self.grounded,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
        }


@dataclass(frozen=True)
class LibraryStatus:
    """What is in a library: counts, every catalog row, and the failures."""

    library: Path
    embedder_id: str
    index_kind: str
    segments: int
    entries: tuple[dict[str, Any], ...] = field(default=())

    @property
    def failures(self) -> tuple[dict[str, Any], ...]:
        return tuple(e for e in self.entries if e["status"] != "ok")

    def counts(self) -> dict[str, int]:
        out = {"ok": 0, "partial": 0, "error": 0}
        for e in self.entries:
            out[e["status"]] = out.get(e["status"], 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "library": str(self.library),
            "embedder_id": self.embedder_id,
            "index_kind": self.index_kind,
            "videos": len(self.entries),
            "segments": self.segments,
            "counts": self.counts(),
            "entries": list(self.entries),
            "failures": list(self.failures),
        }


@dataclass(frozen=True)
class PipelineEvent:
    """Progress of a pipeline call: per-file steps, plus the decoder's own events.

    ``stage`` is "file" (done/total in files, ``detail`` the action), "caption" (done/total in
    windows of the current file), or ``ingest``'s stages in ``inner``.
    """

    stage: Literal["file", "caption", "ingest"]
    path: Path | None
    done: float
    total: float
    detail: str = ""
    inner: ProgressEvent | None = None
