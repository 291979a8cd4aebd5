"""The ``vidlm`` command line.

Each subcommand parses its arguments and calls one function of the library; no logic lives here.
Heavy imports (torch, PyAV) happen inside the commands so that ``vidlm --help`` is instant.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from tqdm import tqdm

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


@cli.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the videos and events.jsonl into."),
    videos: int = typer.Option(10, "--videos", min=1, help="Number of videos."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same events.jsonl)."),
) -> None:
    """Write synthetic event-world videos with their true events (events.jsonl)."""
    from recipe.synth import write_dataset

    with tqdm(total=videos, unit="video", desc="synth") as bar:
        events = write_dataset(out_dir, videos=videos, seed=seed, progress=_bar_callback(bar))
    typer.echo(str(events))


@cli.command()
def train(
    out_dir: Path = typer.Argument(..., help="Checkpoint folder to write (released format)."),
    init: Path | None = typer.Option(None, "--init", help="Checkpoint folder to fine-tune; default a fresh tiny model."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Optimiser steps."),
    accumulation: int = typer.Option(8, "--accumulation", min=1, help="Samples per optimiser step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    frame_px: int = typer.Option(64, "--frame-px", help="Frame side in pixels (a multiple of 32)."),
    max_seconds: float = typer.Option(40.0, "--max-seconds", help="Longest synthetic video."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bf16 autocast)."),
) -> None:
    """Fine-tune for temporal grounding on the synthetic world (SFT, loss on answers only)."""
    from recipe.data import SampleSpec
    from recipe.train import TrainConfig
    from recipe.train import train as run_training
    from recipe.world import WorldParams

    spec = SampleSpec(frame_px=frame_px, world=WorldParams(min_seconds=8.0, max_seconds=max_seconds))
    cfg = TrainConfig(steps=steps, accumulation=accumulation, lr=lr, seed=seed, sample=spec)
    with tqdm(total=steps, unit="step", desc="train") as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(step - bar.n)

        run_training(out_dir, init=init, cfg=cfg, device=device, progress=progress)
    typer.echo(str(out_dir))


@cli.command("eval")
def evaluate(
    model: str | None = typer.Option(None, "--model", help="Model folder or hub id; default the built-in model."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Evaluate on held-out synthetic videos."),
    seed: int = typer.Option(12345, "--seed", help="Seed of the synthetic set (differs from training)."),
    videos: int = typer.Option(20, "--videos", min=1, help="Synthetic videos to evaluate on."),
    annotations: Path | None = typer.Option(None, "--annotations", help="Charades-STA-style file: 'video start end##query' lines."),
    videos_dir: Path | None = typer.Option(None, "--videos-dir", help="Folder with the annotated videos."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Score grounding (R1@0.3/0.5/0.7, mIoU), timestamped QA and dense captions."""
    import json

    import vidlm
    from app.evaluate import evaluate_annotations, evaluate_synthetic

    if synthetic == (annotations is not None):
        raise typer.BadParameter("pass exactly one of --synthetic or --annotations FILE --videos-dir DIR")
    if annotations is not None and videos_dir is None:
        raise typer.BadParameter("--annotations needs --videos-dir")
    lm = vidlm.load(model, device=device, dtype=dtype)
    with tqdm(unit="video" if synthetic else "query", desc="eval") as bar:
        if synthetic:
            result = evaluate_synthetic(lm, seed=seed, videos=videos, progress=_bar_callback(bar))
        else:
            result = evaluate_annotations(lm, annotations, videos_dir, progress=_bar_callback(bar))
    result["model"] = str(lm.path)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>20}  {value:.3f}" if isinstance(value, float) else f"{key:>20}  {value}")


def _bar_callback(bar: tqdm):
    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update


def main() -> None:
    """Console-script entry point."""
    cli()
