"""Ingesting a whole folder: every good file yields frames, every bad one an error row.

`ingest_folder` is a generator so a large library never holds more than one video's frames;
one bad file never stops the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ingest.decode import decode
from ingest.discover import discover
from ingest.errors import VideoError
from ingest.frames import FrameBatch
from ingest.plan import SamplingPolicy, plan
from ingest.probe import VideoInfo, probe
from ingest.progress import ProgressCallback, ProgressEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """The outcome for one file: `batch` when it decoded, `error` when it did not."""

    path: Path
    info: VideoInfo | None
    batch: FrameBatch | None
    error: VideoError | None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        """ "ok", "partial" or the error's kind (for a catalog row)."""
        if self.error is not None:
            return self.error.kind
        return "partial" if self.batch is not None and self.batch.partial else "ok"


def ingest_folder(
    folder: str | Path,
    *,
    policy: SamplingPolicy | None = None,
    budget_seconds: float | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[IngestResult]:
    """Discover, probe, plan and decode every video under `folder`, one result per file."""
    paths = discover(folder)
    for done, path in enumerate(paths, start=1):
        yield ingest_file(path, policy=policy, budget_seconds=budget_seconds, progress=progress)
        if progress is not None:
            progress(ProgressEvent("probe", path, done, len(paths), "files"))


def ingest_file(
    path: str | Path,
    *,
    policy: SamplingPolicy | None = None,
    budget_seconds: float | None = None,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Probe, plan and decode one file; a `VideoError` becomes the result's `error`."""
    path = Path(path)
    info = None
    try:
        info = probe(path)
        batch = decode(path, plan(info, policy), budget_seconds=budget_seconds, progress=progress)
    except VideoError as err:
        log.warning("%s", err)
        return IngestResult(path=path, info=info, batch=None, error=err)
    return IngestResult(path=path, info=info, batch=batch, error=None)
