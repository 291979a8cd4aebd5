"""Plumbing shared by the library commands of ``app.cli``: options, exit codes, printing.

Unusual here: every library command runs inside ``exit_codes()``, which turns the errors a
user can cause into one line on stderr and a documented exit code (README "Exit codes"):
0 ok, 1 some files failed, 2 usage (bad path, unknown video, no library, bad model), 3 the
library cannot be used as is (damaged, or built with another embedder), with how to fix it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from tqdm import tqdm

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_LIBRARY = 0, 1, 2, 3

LIBRARY_HELP = (
    "Library folder; default $VIDLM_LIBRARY, else the per-user data folder "
    "(Linux: ~/.local/share/vidlm/library)."
)
MODEL_HELP = "Model folder or hub id; default the built-in model."
EMBEDDER_HELP = (
    "Qwen3-VL-Embedding folder or hub id: the library's vectors embed each segment's clip with its "
    "caption, and queries search what the videos show (default: the offline MiniLM caption embedder). "
    "A library keeps the embedder it was built with; name the same one on every command."
)


def error(message: str, code: int) -> typer.Exit:
    """Print ``message`` on stderr and return the ``typer.Exit`` to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def exit_codes(library: Path | None) -> Iterator[None]:
    """Map user-caused errors to a message on stderr and an exit code."""
    import index
    import ingest
    from vidlm import CheckpointError

    try:
        yield
    except index.LibraryCorruptError as err:
        hint = (
            f" From the command line: vidlm rebuild{_library_flag(library)}."
            if err.rebuildable
            else ""
        )
        raise error(f"{err}{hint}", EXIT_LIBRARY) from err
    except index.LibraryMismatchError as err:
        raise error(str(err), EXIT_LIBRARY) from err
    except ingest.VideoError as err:
        raise error(str(err), EXIT_FAILED_FILES) from err
    except index.LibraryNotFoundError as err:
        hint = f" Create it with: vidlm ingest FOLDER{_library_flag(library)}."
        raise error(f"{err}.{hint}", EXIT_USAGE) from err
    except (CheckpointError, FileNotFoundError, NotADirectoryError) as err:
        raise error(str(err), EXIT_USAGE) from err
    except KeyError as err:
        raise error(str(err.args[0]) if err.args else str(err), EXIT_USAGE) from err
    except ValueError as err:
        raise error(str(err), EXIT_USAGE) from err


def _library_flag(library: Path | None) -> str:
    return f" --library {library}" if library is not None else ""


def make_pipeline(
    *,
    model: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    library: Path | None = None,
    embedder: str | None = None,
    **options: Any,
):  # noqa: ANN201 - app.pipeline.Pipeline, imported lazily to keep --help instant
    """A ``Pipeline`` with the command's options (None options keep the defaults)."""
    from app.pipeline import Pipeline, PipelineOptions

    chosen = {k: v for k, v in options.items() if v is not None}
    return Pipeline(
        model=model, device=device, dtype=dtype, library=library, options=PipelineOptions(**chosen),
        embedder_model=embedder,
    )


COMPILE_HELP = (
    "Decode through torch.compile: the first answer waits for the compiler (tens of seconds, a few "
    "once cached), then tokens come faster. For ingest runs and the web app; needs a C++ compiler on CPU "
    "(without one, decoding stays eager with a warning)."
)
ENGINE_HELP = "local (this process) or ray (a Ray cluster; needs the vidlm[ray] extra)."
ADDRESS_HELP = "Ray cluster to use (auto, ray://HEAD:10001); default: start a local Ray for the run."
WORKERS_HELP = "Ray: model replicas for ingest, parallel tasks for export (default: what the cluster holds)."
GPUS_HELP = "Ray: GPUs per model replica (default 1 when the cluster has GPUs, else 0)."


def ray_options(
    engine: str,
    *,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
):  # noqa: ANN201 - app.ray_engine.RayOptions | None, imported only for --engine ray
    """The Ray engine's options for ``--engine ray``; None for the local engine.

    Raises:
        typer.BadParameter: an unknown engine, or Ray options with the local engine.
        typer.Exit: Ray is not installed (exit 2, with the install command).
    """
    if engine not in ("local", "ray"):
        raise typer.BadParameter(f"--engine {engine!r}: expected 'local' or 'ray'")
    if engine == "local":
        given = [
            flag
            for flag, value in (
                ("--address", address),
                ("--workers", workers),
                ("--gpus-per-worker", gpus_per_worker),
            )
            if value is not None
        ]
        if given:
            raise typer.BadParameter(f"{', '.join(given)} only apply with --engine ray")
        return None
    try:
        from app.ray_engine import RayOptions
    except ImportError as err:
        raise error(str(err), EXIT_USAGE) from err
    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker)


def file_progress(bar: tqdm):  # noqa: ANN201 - an app.pipeline.PipelineProgress
    """Map pipeline events to a files bar (the current file and window in the postfix)."""

    def update(event) -> None:  # noqa: ANN001 - app.results.PipelineEvent
        if event.stage == "file":
            bar.total = int(event.total)
            bar.update(int(event.done) - bar.n)
            bar.set_postfix_str(f"{event.path.name}: {event.detail}")
        elif event.stage == "caption" and event.path is not None:
            bar.set_postfix_str(f"{event.path.name}: window {int(event.done)}/{int(event.total)}")

    return update


def print_json(value: dict[str, Any]) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False))


def print_failures(failures: list[dict[str, Any]]) -> None:
    """List failed files on stderr, one per line: ``FAILED <path>: <reason>``."""
    for f in failures:
        print(f"FAILED {f['path']}: {f['error'] or f['status']}", file=sys.stderr)


def seconds(value: float) -> str:
    return f"{value:.1f}"
