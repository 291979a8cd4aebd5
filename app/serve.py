"""``vidlm serve`` and ``vidlm demo``: start the web app on loopback.

``serve`` runs ``streamlit run app/ui_server.py`` (the app plus its video route) headless on
127.0.0.1, passing the library and model through environment variables
(``VIDLM_LIBRARY``, ``VIDLM_MODEL``). ``demo`` first writes a folder of synthetic-world
videos (once), ingests it with the pipeline into a demo library, then serves that library.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import platformdirs

from app.ui_backend import MODEL_ENV

LIBRARY_ENV = "VIDLM_LIBRARY"
DEFAULT_PORT = 8501
DEMO_VIDEOS = 6
DEMO_SEED = 7


def server_script() -> Path:
    """The file ``streamlit run`` is given."""
    return Path(__file__).with_name("ui_server.py")


def streamlit_command(port: int, *, address: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line: headless, loopback, no telemetry, no file watcher."""
    return [
        sys.executable, "-m", "streamlit", "run", str(server_script()),
        "--server.headless", "true",
        "--server.address", address,
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--browser.serverAddress", address,
        "--client.toolbarMode", "minimal",
        "--theme.primaryColor", "#e4572e",
    ]


def server_env(library: str | os.PathLike[str] | None, model: str | None,
               extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the app reads its library and model from."""
    env = dict(os.environ)
    if library is not None:
        env[LIBRARY_ENV] = str(Path(library).expanduser().absolute())
    if model is not None:
        env[MODEL_ENV] = str(model)
    env.update(extra or {})
    return env


def serve(library: str | os.PathLike[str] | None = None, model: str | None = None, port: int = DEFAULT_PORT,
          *, extra_env: Mapping[str, str] | None = None) -> int:
    """Run the web app until interrupted; returns streamlit's exit code."""
    print(f"vidlm web app on http://127.0.0.1:{port}  (Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(streamlit_command(port), env=server_env(library, model, extra_env))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def default_demo_dir() -> Path:
    """Where ``vidlm demo`` keeps its videos and library (per user)."""
    return Path(platformdirs.user_data_dir("vidlm", appauthor=False)) / "demo"


def write_demo_videos(folder: Path, *, videos: int = DEMO_VIDEOS, seed: int = DEMO_SEED,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Synthetic-world videos (and events.jsonl) in ``folder``, written only if absent."""
    events = folder / "events.jsonl"
    if events.is_file() and any(folder.glob("*.mp4")):
        return folder
    from recipe.data import SampleSpec
    from recipe.synth import write_dataset

    # The built-in model's world (slow actions), shorter and less crowded, at a watchable size.
    params = dataclasses.replace(SampleSpec().world, size_px=256, max_seconds=30.0, max_objects=3)
    write_dataset(folder, videos=videos, seed=seed, params=params, progress=progress)
    return folder


def prepare_demo(demo_dir: Path, *, model: str | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Write the demo videos (once) and ingest them; returns the demo library folder."""
    videos, library = demo_dir / "videos", demo_dir / "library"
    log(f"demo videos: {videos}")
    write_demo_videos(videos, progress=lambda done, total: log(f"  wrote video {done}/{total}"))
    from app.pipeline import Pipeline

    log(f"ingesting into {library} (skips what is already there)")
    report = Pipeline(model=model, library=library).ingest_folder(videos, progress=_ingest_logger(log))
    log("ingest: " + ", ".join(f"{n} {a}" for a, n in report.counts().items() if n))
    for failure in report.failures:
        log(f"  failed: {failure.path}: {failure.error}")
    return library


def _ingest_logger(log: Callable[[str], None]) -> Callable[[object], None]:
    def on_event(event: object) -> None:
        if getattr(event, "stage", None) == "file":
            log(f"  {event.done:g}/{event.total:g} {Path(str(event.path)).name}: {event.detail}")  # type: ignore[attr-defined]

    return on_event


def demo(port: int = DEFAULT_PORT, demo_dir: str | os.PathLike[str] | None = None, model: str | None = None) -> int:
    """Prepare the demo library and serve it."""
    from vidlm import CheckpointError

    folder = Path(demo_dir).expanduser() if demo_dir is not None else default_demo_dir()
    try:
        library = prepare_demo(folder, model=model)
    except CheckpointError as err:
        print(f"error: the model is missing or cannot be loaded: {err}", file=sys.stderr)
        return 1
    return serve(library=library, model=model, port=port)
