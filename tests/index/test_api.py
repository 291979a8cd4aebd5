"""The public surface: everything in index.__all__ exists, and importing index stays light
(no torch until MiniLMEmbedder is touched)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import index

ROOT = Path(__file__).resolve().parents[2]


def test_all_names_resolve() -> None:
    missing = [name for name in index.__all__ if not hasattr(index, name)]
    assert not missing


def test_import_does_not_load_torch() -> None:
    code = "import sys, index; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
