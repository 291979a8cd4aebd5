"""Serving video files to the browser without reading them into memory on every rerun.

``vidlm serve`` runs the app as an ``st.App`` (``app.ui_server``) with one extra route,
``/app/static/vidlm-media/<token>.<ext>``: a Starlette ``FileResponse`` that streams the file
from disk and answers HTTP range requests (what the player needs to seek). Pages register a
video's path and pass the returned same-origin URL to ``st.video``.

Unusual here: only registered files are served (the token is a digest of the path, looked
up in an in-process table), so the route cannot be used to read arbitrary files; and when
the route is not mounted (plain ``streamlit run app/streamlit_app.py``, AppTest) ``video_source``
falls back to the path itself, which Streamlit reads into its media store.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

MEDIA_PREFIX = "/app/static/vidlm-media/"
ROUTE_ENV = "VIDLM_UI_MEDIA_ROUTE"  # "1" once the route is mounted in this process

_files: dict[str, Path] = {}
_lock = threading.Lock()


def token_for(path: Path) -> str:
    """A stable, opaque name for a file path."""
    return hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:24]


def register(path: str | os.PathLike[str]) -> str:
    """Allow ``path`` to be served; returns its URL path (same origin as the app)."""
    p = Path(path).absolute()
    token = token_for(p)
    with _lock:
        _files[token] = p
    return f"{MEDIA_PREFIX}{token}{p.suffix.lower()}"


def lookup(name: str) -> Path | None:
    """The registered file behind ``<token>.<ext>``, or None."""
    token = name.split(".", 1)[0]
    with _lock:
        path = _files.get(token)
    return path if path is not None and path.is_file() else None


def route_mounted() -> bool:
    """Whether this process serves ``MEDIA_PREFIX`` (the app runs under ``app.ui_server``)."""
    return os.environ.get(ROUTE_ENV) == "1"


def video_source(path: str | os.PathLike[str]) -> str:
    """What to pass to ``st.video``: the media URL when the route is mounted, else the path."""
    return register(path) if route_mounted() else str(path)


async def serve_media(request: Request) -> Response:
    """GET handler: stream a registered file (range requests supported)."""
    from starlette.exceptions import HTTPException
    from starlette.responses import FileResponse

    path = lookup(str(request.path_params.get("name", "")))
    if path is None:
        raise HTTPException(status_code=404, detail="File not found")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type)


def media_routes() -> list[Route]:
    """The route to mount in ``st.App``; marks this process as serving media."""
    from starlette.routing import Route

    os.environ[ROUTE_ENV] = "1"
    return [Route(MEDIA_PREFIX + "{name}", serve_media, methods=["GET"])]
