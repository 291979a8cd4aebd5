"""Where the library lives by default.

Unusual here: nothing beyond the rule itself. ``VIDLM_LIBRARY`` wins; otherwise the per-user
data folder of ``platformdirs`` (Linux: ``~/.local/share/vidlm/library``, macOS:
``~/Library/Application Support/vidlm/library``, Windows: ``%LOCALAPPDATA%\\vidlm\\library``).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

LIBRARY_ENV = "VIDLM_LIBRARY"


def default_library_path() -> Path:
    """The library folder used when none is given (``$VIDLM_LIBRARY`` or the user data dir)."""
    configured = os.environ.get(LIBRARY_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("vidlm", appauthor=False)) / "library"
