"""The ``vidlm`` command line.

Each subcommand parses its arguments and calls one function of the library; no logic lives here.
Heavy imports (torch, PyAV) happen inside the commands so that ``vidlm --help`` is instant.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import typer
from tqdm import tqdm

from app import cli_support

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
    min_seconds: float = typer.Option(4.0, "--min-seconds", min=1.0, help="Shortest video."),
    max_seconds: float = typer.Option(240.0, "--max-seconds", min=1.0, help="Longest video."),
    action_scale: float = typer.Option(3.0, "--action-scale", help="Slowness of actions and fades (3: the built-in model's world; 1: brisk)."),
) -> None:
    """Write synthetic event-world videos with their true events (events.jsonl)."""
    from recipe.synth import write_dataset
    from recipe.world import WorldParams

    try:
        params = WorldParams(min_seconds=min_seconds, max_seconds=max_seconds, action_scale=action_scale)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    with tqdm(total=videos, unit="video", desc="synth") as bar:
        events = write_dataset(out_dir, videos=videos, seed=seed, params=params, progress=_bar_callback(bar))
    typer.echo(str(events))


@cli.command()
def train(
    out_dir: Path = typer.Argument(..., help="Checkpoint folder to write (released format)."),
    init: Path | None = typer.Option(None, "--init", help="Checkpoint folder to fine-tune; default a fresh tiny model."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Optimiser steps."),
    accumulation: int = typer.Option(8, "--accumulation", min=1, help="Samples per optimiser step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    frame_px: int = typer.Option(64, "--frame-px", help="Frame side in pixels (a multiple of 32)."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", help="Longest synthetic video."),
    questions: int = typer.Option(8, "--questions", min=1, help="Questions per video (they share its prefix)."),
    max_offset: float = typer.Option(
        0.0, "--max-offset", min=0.0,
        help="Show most samples as windows of longer videos: timestamps start at a random offset up to this many seconds.",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (bf16 autocast)."),
    workers: int | None = typer.Option(
        None, "--workers", min=0,
        help="Processes rendering samples ahead of the model (same run, faster on a GPU). Default 0; with --recipe, each stage's own.",
    ),
    batch_videos: int | None = typer.Option(
        None, "--batch-videos", min=1,
        help="Videos per forward pass (the same run up to float rounding; faster on a GPU, not on a CPU). Default 1; with --recipe, each stage's own.",
    ),
    freeze_tower: bool = typer.Option(
        False, "--freeze-tower",
        help="Keep the vision tower's patch embedding, position table and blocks fixed (its mergers train).",
    ),
    recipe: str | None = typer.Option(
        None, "--recipe",
        help="'builtin': the exact schedule of the built-in model (other options ignored, except --device, --workers and --batch-videos).",
    ),
) -> None:
    """Fine-tune for temporal grounding on the synthetic world (SFT, loss on answers only)."""
    from recipe.data import SampleSpec
    from recipe.train import TrainConfig, train_builtin, with_speed
    from recipe.train import train as run_training

    if recipe not in (None, "builtin"):
        raise typer.BadParameter(f"--recipe {recipe!r}: the only named recipe is 'builtin'")
    try:
        world = dataclasses.replace(SampleSpec().world, max_seconds=max_seconds)
        spec = SampleSpec(frame_px=frame_px, world=world, questions=questions, max_offset_seconds=max_offset)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    with tqdm(unit="step", desc="train") as bar:

        def progress(step: int, total: int, loss: float) -> None:
            if step == 1:
                bar.reset(total=total)
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(step - bar.n)

        if recipe == "builtin":
            train_builtin(out_dir, device=device, progress=progress, workers=workers, batch_videos=batch_videos)
        else:
            cfg = TrainConfig(steps=steps, accumulation=accumulation, lr=lr, seed=seed, freeze_tower=freeze_tower, sample=spec)
            cfg = with_speed(cfg, workers=workers, batch_videos=batch_videos)
            run_training(out_dir, init=init, cfg=cfg, device=device, progress=progress)
    typer.echo(str(out_dir))


@cli.command("train-embedder")
def train_embedder_command(
    out_dir: Path = typer.Argument(..., help="Embedder checkpoint folder to write (released format)."),
    init: Path | None = typer.Option(None, "--init", help="Checkpoint to start from (its vision tower and tokenizer); default the built-in model."),
    steps: int = typer.Option(900, "--steps", min=1, help="Optimiser steps."),
    batch_items: int = typer.Option(24, "--batch-items", min=2, help="Event clips (and queries) per step."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate."),
    keep_decoder: bool = typer.Option(False, "--keep-decoder", help="Start from the checkpoint's decoder instead of a fresh one."),
    eval_videos: int = typer.Option(10, "--eval-videos", min=0, help="Held-out videos scored after training (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
) -> None:
    """Train a clip/query embedder on the synthetic world (contrastive; use it with --embedder)."""
    import vidlm
    from recipe.embedder import EmbedderConfig, evaluate_embedder, train_embedder

    base = Path(init) if init is not None else vidlm.api.builtin_checkpoint()
    cfg = EmbedderConfig(steps=steps, batch_items=batch_items, lr=lr, fresh_decoder=not keep_decoder, seed=seed)
    with tqdm(total=steps, unit="step", desc="train-embedder") as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(step - bar.n)

        train_embedder(out_dir, init=base, cfg=cfg, device=device, progress=progress)
    if eval_videos:
        cli_support.print_json(evaluate_embedder(out_dir, cfg, seeds=range(900_000, 900_000 + eval_videos)))
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


# ----- the library: ingest, ask, localize, export, clip, status, rebuild ---------------------
# Each command parses its options and calls one app.pipeline.Pipeline method; exit codes and
# printing helpers live in app.cli_support.

_LIBRARY = typer.Option(None, "--library", help=cli_support.LIBRARY_HELP)
_MODEL = typer.Option(None, "--model", help=cli_support.MODEL_HELP)
_EMBEDDER = typer.Option(None, "--embedder", envvar="VIDLM_EMBEDDER", help=cli_support.EMBEDDER_HELP)
_DEVICE = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto.")
_DTYPE = typer.Option("float32", "--dtype", help="float32, bfloat16, float16 or auto.")
_COMPILE = typer.Option(None, "--compile/--no-compile", envvar="VIDLM_COMPILE", help=cli_support.COMPILE_HELP)
_JSON = typer.Option(False, "--json", help="Print one JSON object (schema in the README).")
_ENGINE = typer.Option("local", "--engine", help=cli_support.ENGINE_HELP)
_ADDRESS = typer.Option(None, "--address", help=cli_support.ADDRESS_HELP)
_WORKERS = typer.Option(None, "--workers", min=1, help=cli_support.WORKERS_HELP)


@cli.command()
def ingest(
    folder: Path = typer.Argument(..., help="Folder of videos (searched recursively)."),
    library: Path | None = _LIBRARY,
    model: str | None = _MODEL,
    embedder: str | None = _EMBEDDER,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Caption tokens per window (default 512)."),
    window_seconds: float | None = typer.Option(None, "--window-seconds", min=1.0, help="Longer videos are captioned in shot-aligned windows of at most this (default 60)."),
    fps: float | None = typer.Option(None, "--fps", min=0.01, help="Frames per second shown to the model (default 2)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Ingest unchanged files that failed before again."),
    compile_decoding: bool | None = _COMPILE,
    as_json: bool = _JSON,
    engine: str = _ENGINE,
    address: str | None = _ADDRESS,
    workers: int | None = _WORKERS,
    gpus_per_worker: float | None = typer.Option(None, "--gpus-per-worker", min=0.0, help=cli_support.GPUS_HELP),
) -> None:
    """Ingest a folder into the library: captions with times, searchable. Exit 1 if files failed."""
    on_ray = cli_support.ray_options(engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    pipe = cli_support.make_pipeline(model=model, device=device, dtype=dtype, library=library, embedder=embedder,
                                     caption_max_new_tokens=max_new_tokens, window_seconds=window_seconds, fps=fps,
                                     compile_decoding=compile_decoding)
    with cli_support.exit_codes(library), tqdm(unit="file", desc="ingest", disable=None) as bar:
        report = pipe.ingest_folder(folder, progress=cli_support.file_progress(bar), retry_failed=retry_failed,
                                    ray_options=on_ray)
    result = report.to_json()
    if as_json:
        cli_support.print_json(result)
    else:
        counts = ", ".join(f"{n} {action}" for action, n in result["counts"].items() if n)
        typer.echo(f"{counts or 'nothing to do'} -> {report.library}")
    cli_support.print_failures(result["failures"])
    raise typer.Exit(cli_support.EXIT_FAILED_FILES if report.failures else cli_support.EXIT_OK)


@cli.command()
def ask(
    video: str = typer.Argument(..., help="A video file, or a video id of the library."),
    question: str = typer.Argument(..., help="The question, e.g. 'When does the dog jump?'."),
    library: Path | None = _LIBRARY,
    model: str | None = _MODEL,
    embedder: str | None = _EMBEDDER,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Answer tokens (default 128)."),
    compile_decoding: bool | None = _COMPILE,
    as_json: bool = _JSON,
) -> None:
    """Answer a question about one video, with the time spans found in the answer."""
    pipe = cli_support.make_pipeline(model=model, device=device, dtype=dtype, library=library, embedder=embedder,
                                     answer_max_new_tokens=max_new_tokens, compile_decoding=compile_decoding)
    with cli_support.exit_codes(library):
        result = pipe.ask(video, question)
    if as_json:
        cli_support.print_json(result.to_json())
        return
    typer.echo(result.answer.strip())
    for span in result.spans:
        typer.echo(f"  [{cli_support.seconds(span.start_seconds)} - {cli_support.seconds(span.end_seconds)} s]")
    typer.echo(f"  ({result.confidence:.0%} sure)")


@cli.command()
def localize(
    query: str = typer.Argument(..., help="What to find, e.g. 'the red circle enters'."),
    video: str | None = typer.Option(None, "--video", help="Search one video (file or video id)."),
    k: int = typer.Option(10, "--k", min=1, help="Most spans to return."),
    ground: int | None = typer.Option(
        None, "--ground", min=0,
        help="Ask the model when the event happens in this many of the best-matching videos "
        "(default 5; 0: caption search only).",
    ),
    library: Path | None = _LIBRARY,
    model: str | None = _MODEL,
    embedder: str | None = _EMBEDDER,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
    compile_decoding: bool | None = _COMPILE,
    as_json: bool = _JSON,
) -> None:
    """Find the spans of the library (or one video) that match a description, best first."""
    pipe = cli_support.make_pipeline(model=model, device=device, dtype=dtype, library=library, embedder=embedder,
                                     compile_decoding=compile_decoding)
    with cli_support.exit_codes(library):
        spans = pipe.localize(query, video=video, k=k, ground=ground)
    if as_json:
        cli_support.print_json({"query": query, "results": [s.to_json() for s in spans]})
        return
    for s in spans:
        found = f"model {s.confidence:4.0%}" if s.grounded and s.confidence is not None else " " * 10
        typer.echo(f"{s.rank:>3}  {s.score:.3f}  {found}  {cli_support.seconds(s.start_seconds)}-"
                   f"{cli_support.seconds(s.end_seconds)} s  {s.path}  {s.caption}")


@cli.command()
def export(
    out: Path = typer.Argument(..., help="File to write; for srt/vtt of the whole library, a folder."),
    format: str | None = typer.Option(None, "--format", help="jsonl, srt, vtt or parquet; default from OUT's suffix."),
    video: str | None = typer.Option(None, "--video", help="Export one video (file or video id)."),
    library: Path | None = _LIBRARY,
    engine: str = _ENGINE,
    address: str | None = _ADDRESS,
    workers: int | None = _WORKERS,
    gpus_per_worker: float | None = typer.Option(
        None, "--gpus-per-worker", min=0.0,
        help="Accepted as for ingest so one Ray command line serves both; export renders on CPUs and asks for no GPU.",
    ),
) -> None:
    """Export the grounded captions (JSONL QVHighlights-style, SRT, WebVTT, parquet)."""
    on_ray = cli_support.ray_options(engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker)
    pipe = cli_support.make_pipeline(library=library)
    with cli_support.exit_codes(library):
        written = pipe.export(out, format=format, video=video, ray_options=on_ray)
    for path in written:
        typer.echo(str(path))


@cli.command()
def clip(
    video: Path = typer.Argument(..., help="Source video file."),
    start: float = typer.Argument(..., help="Span start, seconds."),
    end: float = typer.Argument(..., help="Span end, seconds."),
    out: Path = typer.Argument(..., help="The mp4 to write."),
) -> None:
    """Cut a span of a video into a playable mp4 (re-encoded, exact start)."""
    pipe = cli_support.make_pipeline()
    with cli_support.exit_codes(None):
        typer.echo(str(pipe.clip(video, start, end, out)))


@cli.command()
def status(library: Path | None = _LIBRARY, as_json: bool = _JSON) -> None:
    """What is in the library; failed files with their reasons (exit 1 when there are any)."""
    pipe = cli_support.make_pipeline(library=library)
    with cli_support.exit_codes(library):
        result = pipe.status().to_json()
    if as_json:
        cli_support.print_json(result)
    else:
        counts = result["counts"]
        typer.echo(f"{result['library']}: {result['videos']} videos ({counts['ok']} ok, {counts['partial']} "
                   f"partial, {counts['error']} error), {result['segments']} segments")
        for e in result["entries"]:
            typer.echo(f"  {e['status']:<8} {e['segments']:>4} seg  {e['path']}" + (f"  ({e['error']})" if e["error"] else ""))
    cli_support.print_failures(result["failures"])
    raise typer.Exit(cli_support.EXIT_FAILED_FILES if result["failures"] else cli_support.EXIT_OK)


@cli.command()
def rebuild(
    library: Path | None = _LIBRARY,
    embedder: str | None = _EMBEDDER,
    device: str = _DEVICE,
    dtype: str = _DTYPE,
) -> None:
    """Re-embed every segment and rewrite the vectors and manifest (a damaged library, or another embedder)."""
    pipe = cli_support.make_pipeline(library=library, embedder=embedder, device=device, dtype=dtype)
    with cli_support.exit_codes(library):
        result = pipe.rebuild().to_json()
    typer.echo(f"{result['library']}: rebuilt {result['segments']} vectors")


# ----- the web app: serve, demo (logic in app.serve) -------------------------------------------


@cli.command()
def serve(
    library: Path | None = typer.Option(None, "--library", help="Library folder; default $VIDLM_LIBRARY or the per-user library."),
    model: str | None = typer.Option(None, "--model", help="Model folder or hub id; default the built-in model."),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
    embedder: str | None = _EMBEDDER,
    compile_decoding: bool | None = _COMPILE,
) -> None:
    """Start the web app (Library, Watch & ask, Search, Export) on http://127.0.0.1:PORT."""
    from app.serve import serve as run_server

    extra = {"VIDLM_EMBEDDER": embedder} if embedder else {}
    if compile_decoding is not None:
        extra["VIDLM_COMPILE"] = "1" if compile_decoding else "0"
    raise typer.Exit(run_server(library=library, model=model, port=port, extra_env=extra or None))


@cli.command()
def demo(
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
    demo_dir: Path | None = typer.Option(None, "--dir", help="Folder for the demo videos and library; default a per-user folder."),
    model: str | None = typer.Option(None, "--model", help="Model folder or hub id; default the built-in model."),
) -> None:
    """Write synthetic sample videos (once), ingest them, and start the web app on them."""
    from app.serve import demo as run_demo

    raise typer.Exit(run_demo(port=port, demo_dir=demo_dir, model=model))


def main() -> None:
    """Console-script entry point."""
    cli()
