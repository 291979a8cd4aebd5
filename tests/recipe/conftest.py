"""Make the top-level ``recipe/`` package importable under a plain ``pytest`` run.

``recipe/`` is deliberately not part of the installed distribution (pyproject's package list
names the product packages only), so an editable install does not expose it and importlib
mode does not add the repository root to ``sys.path``; these tests add it themselves.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[2])


def pytest_configure() -> None:
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
