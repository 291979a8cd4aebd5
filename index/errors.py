"""Typed errors of the library store. Each message names the folder or file and the reason,
and the corruption errors say how to get a working library back."""

from __future__ import annotations

from pathlib import Path


class LibraryError(Exception):
    """Base class of every error the library store raises on purpose."""


class LibraryNotFoundError(LibraryError):
    """The folder holds no library (no manifest.json) and creation was not asked for."""


class LibraryCorruptError(LibraryError):
    """A library file is missing, truncated, edited, or disagrees with the manifest.

    ``path`` is the library folder, ``reason`` what was found, ``rebuildable`` whether the
    vectors can be re-embedded from an intact segments table with ``index.rebuild_vectors``.
    """

    def __init__(self, path: Path, reason: str, *, rebuildable: bool) -> None:
        self.path = Path(path)
        self.reason = reason
        self.rebuildable = rebuildable
        if rebuildable:
            fix = (
                "The segments table is intact: rebuild the vectors with "
                f"index.rebuild_vectors({str(self.path)!r}, embedder), which re-embeds every "
                "caption (or delete the folder and ingest again)."
            )
        else:
            fix = (
                "The catalog or segments table cannot be trusted: move the folder aside and "
                "ingest the videos again (visual-token caches make this faster)."
            )
        super().__init__(f"library {self.path} is damaged: {reason}. {fix}")


class LibraryMismatchError(LibraryError):
    """The library was built with another embedder, dimension or schema than the caller's."""


class EmbedderError(Exception):
    """An embedder cannot load: missing package or files, or weights failing their hash."""
