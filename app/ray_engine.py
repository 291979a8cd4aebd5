"""The Ray engine: ``vidlm ingest`` / ``vidlm export`` with ``--engine ray`` on a Ray cluster.

Imported only for ``--engine ray`` (the local engine never imports Ray). Unusual here:

- Ingest is one Ray Data pipeline: the files to do (decided on the driver exactly as the
  local engine decides) -> probe, shot windows, plan and decode as CPU tasks, one row per
  decoded window plus one closing row per file -> dense captions and their vectors in a fixed
  pool of actors, each loading the model and the caption embedder once. The pipeline executes
  inside one ``DatasetStream`` actor on the cluster (Ray Data cannot execute in a Ray Client
  driver); the driver pulls the result rows, reassembles each file and hands it to
  ``app.ray_shards`` (a parquet shard at once, merged into the library with the ordinary
  journaled commit in batches). Frames never reach the driver.
- The per-file logic is the local engine's own (``app.ingesting``): the same windows, plans,
  prompts, greedy captions, clamping and catalog rows, so both engines build the same library.
  A bad file (``ingest.VideoError``) becomes its error row inside the decoding task; it never
  fails the job. Only a dead worker process is retried (tasks ``max_retries``, actors
  ``max_restarts`` / ``max_task_retries``); any other exception is a bug and stops the run
  with everything finished before it merged.
- Without an address a local Ray is started for the run with at least enough logical CPUs
  for the model replicas plus one decoding task, so the actors can never starve decoding.
"""

from __future__ import annotations

import io
import logging
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

try:
    import ray
    import ray.data
except ImportError as exc:  # the optional extra is not installed
    raise ImportError("the Ray engine needs Ray: pip install 'vidlm[ray]'") from exc

import index
import ingest
from app.ingesting import (
    missing_under,
    needs_ingest,
    remove_missing,
    skip_file,
)
from app.pipeline import (
    LibraryArg,
    Pipeline,
    PipelineOptions,
    PipelineProgress,
    resolve_video,
    sampling_policy,
)
from app.ray_shards import FileResult, ShardStore
from app.ray_stages import Assembler, CaptionWorker, DatasetStream, decode_files, render_captions
from app.results import FileOutcome, IngestReport, PipelineEvent

log = logging.getLogger(__name__)

_FILE_FIELDS = ("path", "video_id", "change", "size_bytes", "mtime_ns", "content_hash")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs.

    Attributes:
        address: an existing cluster ("auto", "ray://head:10001", "head:6379"); None starts a
            local Ray on this machine for the run.
        workers: model replicas (actors) for ingest, concurrent tasks for export; None: as
            many as the cluster's GPUs (or CPUs) allow.
        gpus_per_worker: GPUs per model replica; None: 1 when the cluster has GPUs, else 0.
        cpus_per_worker: CPUs reserved per model replica (Ray gives it as many torch threads).
        cpus_per_task: CPUs reserved per decoding or export task.
        max_retries: retries of a task, and restarts of a replica and retries of its calls,
            after a worker process dies.
        commit_every_seconds: merge finished files into the library at least this often.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    cpus_per_task: float = 1.0
    max_retries: int = 3
    commit_every_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.gpus_per_worker is not None and not self.gpus_per_worker >= 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        for name in ("cpus_per_worker", "cpus_per_task"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.commit_every_seconds >= 0:
            raise ValueError(f"commit_every_seconds must be >= 0, got {self.commit_every_seconds}")


@dataclass(frozen=True)
class _Resources:
    workers: int
    gpus_per_worker: float


# ----- the Ray session -----------------------------------------------------------------------


@contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Connect to ``options.address`` (or start a local Ray) for the block; reuse a running one.

    Raises:
        ValueError: no Ray cluster can be reached at ``options.address``.
    """
    if ray.is_initialized():
        yield
        return
    level = logging.INFO if log.isEnabledFor(logging.INFO) else logging.WARNING
    try:
        if options.address is None:
            # A Ray started for one command has no business reporting usage statistics.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=_local_cpus(options), include_dashboard=False, logging_level=level)
        else:
            _check_reachable(options.address)
            ray.init(address=options.address, logging_level=level)
    except ConnectionError as err:
        raise ValueError(f"--address {options.address}: no Ray cluster reachable ({err})") from err
    try:
        yield
    finally:
        ray.shutdown()


def _check_reachable(address: str, *, timeout_seconds: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (``ray.init`` would retry for minutes).

    Raises:
        ValueError: nothing accepts connections there.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", "local": Ray resolves those itself and fails fast
    try:
        socket.create_connection((host, int(port)), timeout=timeout_seconds).close()
    except OSError as err:
        raise ValueError(f"--address {address}: no Ray cluster reachable ({err})") from err


def _local_cpus(options: RayOptions) -> int:
    cores = os.cpu_count() or 1
    if options.workers is None:
        return cores
    return max(cores, math.ceil(options.workers * options.cpus_per_worker + options.cpus_per_task))


def _resources(options: RayOptions, *, actors: bool, device: str = "cpu") -> _Resources:
    """Workers and GPUs per worker for this cluster.

    Raises:
        ValueError: the cluster cannot hold what was asked.
    """
    available = ray.cluster_resources()
    cpus, gpus = float(available.get("CPU", 0)), float(available.get("GPU", 0))
    per_gpu = options.gpus_per_worker
    if per_gpu is None:
        per_gpu = 1.0 if actors and gpus >= 1 else 0.0
    workers = options.workers
    if workers is None:
        spare = (cpus - options.cpus_per_task) // options.cpus_per_worker if actors else cpus
        workers = max(1, int(gpus // per_gpu if per_gpu > 0 else spare))
    if actors:
        if per_gpu * workers > gpus:
            raise ValueError(
                f"{workers} workers x {per_gpu:g} GPUs need {per_gpu * workers:g} GPUs; the Ray "
                f"cluster has {gpus:g} (lower --workers or --gpus-per-worker)"
            )
        if per_gpu == 0 and device.startswith("cuda"):
            raise ValueError(
                f"--device {device} with --engine ray needs GPUs on the workers: pass "
                "--gpus-per-worker 1 (Ray decides which GPU each worker sees)"
            )
        needed = workers * options.cpus_per_worker + options.cpus_per_task
        if needed > cpus:
            raise ValueError(
                f"{workers} workers x {options.cpus_per_worker:g} CPUs plus {options.cpus_per_task:g} "
                f"for decoding need {needed:g} CPUs; the Ray cluster has {cpus:g} (lower --workers)"
            )
    return _Resources(workers, per_gpu)


def _cluster_rows(build: Callable[[], ray.data.Dataset]) -> Iterator[dict]:
    """The rows of the dataset ``build()`` makes, executed on the cluster by a ``DatasetStream``.

    Killing the stream (when the caller stops early or fails) stops the whole pipeline: its
    tasks and actors belong to it.
    """
    actor = ray.remote(num_cpus=0, max_restarts=0)(DatasetStream)
    stream = actor.remote(build, verbose=log.isEnabledFor(logging.INFO))
    try:
        while (rows := ray.get(stream.next_rows.remote())) is not None:
            yield from rows
    finally:
        ray.kill(stream)


# ----- ingest ----------------------------------------------------------------------------------


def ingest_folder_ray(
    pipe: Pipeline,
    folder: str | os.PathLike[str],
    *,
    library: LibraryArg,
    progress: PipelineProgress | None,
    retry_failed: bool,
    options: RayOptions,
) -> IngestReport:
    """``Pipeline.ingest_folder`` on Ray: same decisions, same library, files in parallel.

    Raises:
        NotADirectoryError: ``folder`` is not a folder.
        index.LibraryError: the library is damaged or built with another embedder.
        vidlm.CheckpointError: the model cannot be found.
        ValueError: no cluster at the address, or the cluster cannot hold the workers.
    """
    root = Path(folder).absolute()
    paths = ingest.discover(root)
    lib = pipe.open_library(library, create=True)
    model_id, policy = model_facts(pipe.model_name, pipe.options)
    store = ShardStore(lib, commit_every_seconds=options.commit_every_seconds)
    store.recover()
    changes = lib.changes(paths)
    removed = [remove_missing(lib, row) for row in missing_under(changes, root)]
    todo = changes.filter(pl.col("change") != "missing").to_dicts()
    outcomes: dict[str, FileOutcome] = {}
    work = []
    for row in todo:
        previous = lib.entry(row["video_id"])
        if needs_ingest(previous, row["change"], model_id, retry_failed=retry_failed):
            work.append(row)
        else:
            touched = row["change"] == "touched"
            outcomes[row["video_id"]] = skip_file(lib, row, previous, touched=touched)
    lib.commit()
    report = _ProgressReport(progress, total=len(todo))
    for outcome in outcomes.values():
        report.file(outcome)
    if work:
        log.info("ray: %d files to ingest, %d skipped", len(work), len(outcomes))
        with ray_session(options):
            try:
                for result in _ingest_results(pipe, work, model_id, policy, options, lib.dimension):
                    store.add(result)
                    outcomes[result.entry.video_id] = result.outcome()
                    report.file(outcomes[result.entry.video_id])
            finally:
                store.flush()
    files = tuple(removed) + tuple(outcomes[row["video_id"]] for row in todo)
    return IngestReport(library=lib.path, model_id=model_id, files=files)


def model_facts(
    model: str | os.PathLike[str] | None, options: PipelineOptions
) -> tuple[str, ingest.SamplingPolicy]:
    """(model id, sampling policy) from the checkpoint's config files, without its weights.

    Raises:
        vidlm.CheckpointError: no such checkpoint.
    """
    import vidlm
    from vidlm.api import builtin_checkpoint
    from vidlm.weights import read_config, resolve_checkpoint

    folder = builtin_checkpoint() if model is None else resolve_checkpoint(model)
    config, _ = read_config(folder)
    processor = vidlm.ProcessorConfig.from_dir(folder)
    context = int(config.text.max_position_embeddings)
    return folder.name, sampling_policy(processor, options, context_tokens=context)


def _worker_model(model: str | os.PathLike[str] | None) -> str | None:
    """The model as the workers should name it: local folders absolute, hub ids as given."""
    if model is None:
        return None
    path = Path(model).expanduser()
    return str(path.absolute()) if path.exists() else str(model)


def _ingest_results(
    pipe: Pipeline,
    work: list[dict],
    model_id: str,
    policy: ingest.SamplingPolicy,
    options: RayOptions,
    dimension: int,
) -> Iterator[FileResult]:
    """Each file of ``work`` ingested on the cluster, in the order they finish."""
    resources = _resources(options, actors=True, device=pipe.device)
    items = [{k: row[k] for k in _FILE_FIELDS} for row in work]
    decode_args = {
        "policy": policy,
        "window_seconds": pipe.options.window_seconds,
        "model_id": model_id,
    }
    worker_args = {
        "model": _worker_model(pipe.model_name),
        "model_id": model_id,
        "device": "cuda" if resources.gpus_per_worker > 0 else pipe.device,
        "dtype": pipe.dtype,
        "options": pipe.options,
        "embedder_id": pipe.embedder.id,
        "embedder_model": _worker_model(pipe.embedder_model),
    }
    log.info("ray: %d model workers, %g GPUs each", resources.workers, resources.gpus_per_worker)
    build = partial(_ingest_dataset, items, decode_args, worker_args, resources, options)
    assembler = Assembler(dimension)
    for row in _cluster_rows(build):
        result = assembler.add(row)
        if result is not None:
            yield result
    assembler.check_done()


def _ingest_dataset(
    items: list[dict],
    decode_args: dict,
    worker_args: dict,
    resources: _Resources,
    options: RayOptions,
) -> ray.data.Dataset:
    """Files -> decoded windows (CPU tasks) -> captions and vectors (the model actors)."""
    with warnings.catch_warnings():
        # Ray 2.60 takes retry settings only as (deprecated) extra remote arguments.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            decode_files,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs=decode_args,
            num_cpus=options.cpus_per_task,
            max_retries=options.max_retries,
        )
        return ds.map_batches(
            CaptionWorker,
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=resources.workers),
            fn_constructor_kwargs=worker_args,
            num_cpus=options.cpus_per_worker,
            num_gpus=resources.gpus_per_worker or None,
            max_restarts=options.max_retries,
            max_task_retries=options.max_retries,
        )


class _ProgressReport:
    def __init__(self, progress: PipelineProgress | None, *, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def file(self, outcome: FileOutcome) -> None:
        self.done += 1
        if self.progress is not None:
            event = PipelineEvent(
                "file", Path(outcome.path), self.done, self.total, detail=outcome.action
            )
            self.progress(event)


# ----- export ----------------------------------------------------------------------------------


def export_ray(
    pipe: Pipeline,
    out: str | os.PathLike[str],
    *,
    format: str | None,
    video: str | os.PathLike[str] | None,
    library: LibraryArg,
    options: RayOptions,
    min_cue_seconds: float = 0.5,
) -> list[Path]:
    """``Pipeline.export`` on Ray: each video's captions rendered by a task; the same files.

    Raises:
        index.LibraryNotFoundError: no library there.
        FileNotFoundError: ``video`` is neither a file nor a video id of the library.
        ValueError: unknown format; no cluster at the address.
    """
    lib = pipe.open_library(library, create=False)
    video_id = resolve_video(video, lib)[1] if video is not None else None
    target = Path(out)
    fmt = index.export.export_format(target, format)
    rows = index.export.caption_rows(lib, video_id=video_id)
    if video_id is not None:
        units = [(target.name, rows)]
    elif fmt in ("srt", "vtt"):
        units = index.export.per_video_files(rows, fmt)
    else:
        units = [
            (str(i), g) for i, g in enumerate(rows.partition_by("video_id", maintain_order=True))
        ]
    payloads: list[bytes] = []
    if units:
        with ray_session(options):
            payloads = _rendered(units, fmt, min_cue_seconds, options)
    written = _write_export(target, fmt, units, payloads, empty=rows, single=video_id is not None)
    log.info("exported %d %s files to %s with Ray", len(written), fmt, target)
    return written


def _rendered(
    units: list[tuple[str, pl.DataFrame]], fmt: str, min_cue_seconds: float, options: RayOptions
) -> list[bytes]:
    resources = _resources(options, actors=False)
    items = [{"order": i, "rows": _parquet_bytes(group)} for i, (_, group) in enumerate(units)]
    build = partial(_export_dataset, items, fmt, min_cue_seconds, resources, options)
    by_order = {row["order"]: row["payload"] for row in _cluster_rows(build)}
    return [by_order[i] for i in range(len(units))]


def _export_dataset(
    items: list[dict], fmt: str, min_cue_seconds: float, resources: _Resources, options: RayOptions
) -> ray.data.Dataset:
    """Each video's caption rows -> its rendered bytes (CPU tasks)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            render_captions,
            batch_size=1,
            batch_format="pyarrow",
            fn_kwargs={"fmt": fmt, "min_cue_seconds": min_cue_seconds},
            num_cpus=options.cpus_per_task,
            compute=ray.data.TaskPoolStrategy(size=resources.workers),
            max_retries=options.max_retries,
        )


def _write_export(
    target: Path,
    fmt: str,
    units: list[tuple[str, pl.DataFrame]],
    payloads: list[bytes],
    *,
    empty: pl.DataFrame,
    single: bool,
) -> list[Path]:
    """Write the rendered pieces as the local export would: the same files, atomically."""
    if fmt == "parquet":
        frames = [pl.read_parquet(io.BytesIO(p)) for p in payloads]
        table = pl.concat(frames).rechunk() if frames else empty
        return [index.atomic_write_parquet(target, table)]
    if fmt == "jsonl":
        with index.atomic_open(target, "wb") as f:
            for payload in payloads:
                f.write(payload)
        return [target]
    if single:
        return [index.atomic_write_bytes(target, payloads[0])]
    target.mkdir(parents=True, exist_ok=True)
    return [
        index.atomic_write_bytes(target / name, p)
        for (name, _), p in zip(units, payloads, strict=True)
    ]


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
