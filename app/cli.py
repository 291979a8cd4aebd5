"""The ``vidlm`` command line.

Each subcommand parses its arguments and calls one function of the library; no logic lives here.
Heavy imports (torch, PyAV) happen inside the commands so that ``vidlm --help`` is instant.
"""

from __future__ import annotations

import logging

import typer

cli = typer.Typer(
    name="vidlm",
    help="Video understanding with temporal grounding on Qwen3-VL.",
    no_args_is_help=True,
    add_completion=False,
)


@cli.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
def version() -> None:
    """Print the installed vidlm version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("vidlm"))


def main() -> None:
    """Console-script entry point."""
    cli()
