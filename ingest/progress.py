"""Progress reporting through a plain callback.

Library code never draws progress bars; it calls `progress(ProgressEvent(...))` and the caller
maps that to tqdm, `st.progress` or a log line. `done` and `total` share a unit named by `unit`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Stage = Literal["discover", "probe", "decode", "shots", "clip"]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update."""

    stage: Stage
    path: Path | None
    done: float
    total: float
    unit: Literal["frames", "files", "seconds"]

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressCallback = Callable[[ProgressEvent], None]
