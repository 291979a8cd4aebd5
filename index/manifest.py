"""The library manifest: what the vectors mean and which exact file contents belong together.

Unusual here: the manifest carries the sha256 and size of every data file and a checksum of
its own canonical JSON, so a truncated faiss file, a parquet file from another commit, or a
hand-edited manifest are all caught on load instead of giving silently wrong search results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import LibraryCorruptError

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class FileFacts:
    """Size and sha256 of one data file as committed."""

    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Manifest:
    """What a library folder holds. ``files`` maps file name -> its committed facts."""

    schema_version: int
    dimension: int
    metric: str
    embedder_id: str
    index_kind: str
    video_count: int
    segment_count: int
    vector_count: int
    next_segment_id: int
    updated_at: str
    files: dict[str, FileFacts] = field(default_factory=dict)

    def to_json(self) -> str:
        body = asdict(self)
        body["checksum"] = _checksum(body)
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, folder: Path) -> Manifest:
        """Parse and self-check a manifest; any damage raises ``LibraryCorruptError``."""
        try:
            body = json.loads(text)
            if not isinstance(body, dict):
                raise ValueError("top level is not an object")
            stored = body.pop("checksum")
            if stored != _checksum(body):
                raise ValueError("its checksum does not match its content (edited by hand?)")
            body["files"] = {k: FileFacts(**v) for k, v in body["files"].items()}
            return cls(**body)
        except (ValueError, KeyError, TypeError) as exc:
            raise LibraryCorruptError(
                folder, f"{MANIFEST_NAME} is unreadable: {exc}", rebuildable=True
            ) from exc


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def facts_of(data: bytes) -> FileFacts:
    return FileFacts(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def read_checked(folder: Path, name: str, expected: FileFacts, *, rebuildable: bool) -> bytes:
    """Read ``folder/name`` and verify it against the manifest's facts.

    Raises:
        LibraryCorruptError: missing file, wrong size (truncated) or wrong sha256.
    """
    path = folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise LibraryCorruptError(folder, f"{name} is missing", rebuildable=rebuildable) from exc
    if len(data) != expected.size_bytes:
        raise LibraryCorruptError(
            folder,
            f"{name} has {len(data)} bytes, the manifest says {expected.size_bytes} (truncated?)",
            rebuildable=rebuildable,
        )
    if hashlib.sha256(data).hexdigest() != expected.sha256:
        raise LibraryCorruptError(
            folder, f"{name} content differs from the manifest's sha256", rebuildable=rebuildable
        )
    return data
