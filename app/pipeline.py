"""The product's flow: folder -> frames -> dense grounded captions -> library; question -> answer.

This is the one module that composes ``vidlm`` (the model), ``ingest`` (frames with their
seconds) and ``index`` (the library). Unusual here:

- Times are absolute everywhere: a window's frames carry their own seconds from the stream
  start, so the model's ``<t seconds>`` prompt text and therefore its answers are already in
  video time; spans are only clamped to the window they came from, never shifted.
- The sampling policy comes from the model's processor config (per-frame tokens capped at what
  the model was trained for), so a tiny model never sees frames larger than it knows.
- Each video is committed on its own: a crash loses at most the video being ingested.
- Decoded frames are kept in an LRU keyed by (video id, plan, model id); the model's own
  ``VideoLM.visual_cache`` (memory, then ``<library>/cache/visual`` on disk) then recognises
  the identical pixels, so a follow-up question about the same video skips both decoding and
  the vision tower, and its prefix cache lets it prefill only the question's tokens.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

import index
import ingest
from app.ingesting import ingest_paths
from app.paths import default_library_path
from app.prompts import question_messages
from app.results import (
    AskResult,
    IngestReport,
    LibraryStatus,
    LocalizedSpan,
    PipelineEvent,
    SpanResult,
)
from recipe.tasks import grounding_question

if TYPE_CHECKING:
    import vidlm
    from app.ray_engine import RayOptions

log = logging.getLogger(__name__)

_HUGE = 10**9

PipelineProgress = Callable[[PipelineEvent], None]
LibraryArg = str | os.PathLike[str] | None


@dataclass(frozen=True)
class PipelineOptions:
    """Knobs of the pipeline (all have working defaults).

    Attributes:
        fps: target frames per second (lowered when a budget binds).
        max_frames: most frames per plan.
        max_video_tokens: visual-token budget of one prompt (a window at ingest, the whole
            video or the retrieved windows at ask); also capped by the model's context.
        min_tokens_per_frame: smallest per-frame-pair size in merged tokens (capped by the
            model's ``video_max_tokens_per_frame``; small videos are upscaled at most to that).
        window_seconds: videos longer than this are cut at shot boundaries into windows of at
            most this length, each captioned on its own.
        caption_max_new_tokens / answer_max_new_tokens: generation lengths.
        retrieve_k: windows retrieved for a question when the whole video does not fit.
        retrieve_pad_seconds: context added around each retrieved span.
        frame_cache_size: decoded videos kept for follow-up questions.
        visual_disk_cache: keep vision-tower outputs under ``<library>/cache/visual``, keyed by
            (patch content = video content + plan, model id), so re-asking skips the tower.
        prefix_cache_bytes: memory for prompt KV caches of recent questions (0 disables), so a
            follow-up question about the same video prefills only its own tokens.
        search_k: spans returned by ``localize``.
        localize_ground: videos in which ``localize`` asks the model to ground the query itself
            (the best by caption search; 0: caption search only).
        clip_fps, clip_max_frames, clip_max_tokens, clip_min_seconds: how a multimodal
            embedder (``embedder_model``) sees a segment: its span widened to at least
            ``clip_min_seconds``, sampled at ``clip_fps`` within those frame and token budgets.
        compile_decoding: decode through ``torch.compile`` (``vidlm.load``'s option): the first
            answer waits for the compiler, then tokens come faster; for ingest runs and servers.
    """

    fps: float = 2.0
    max_frames: int = 2048
    max_video_tokens: int = 224 * 1024
    min_tokens_per_frame: int = 128
    window_seconds: float = 60.0
    caption_max_new_tokens: int = 512
    answer_max_new_tokens: int = 128
    retrieve_k: int = 3
    retrieve_pad_seconds: float = 5.0
    frame_cache_size: int = 8
    search_k: int = 10
    localize_ground: int = 5
    visual_disk_cache: bool = True
    prefix_cache_bytes: int = 1 << 30
    clip_fps: float = 2.0
    clip_max_frames: int = 64
    clip_max_tokens: int = 4096
    clip_min_seconds: float = 2.0
    compile_decoding: bool = False

    def __post_init__(self) -> None:
        for name in ("fps", "window_seconds", "retrieve_pad_seconds", "clip_fps", "clip_min_seconds"):
            if not getattr(self, name) >= 0 or (
                name != "retrieve_pad_seconds" and getattr(self, name) == 0
            ):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "max_frames",
            "max_video_tokens",
            "min_tokens_per_frame",
            "caption_max_new_tokens",
            "answer_max_new_tokens",
            "retrieve_k",
            "frame_cache_size",
            "search_k",
            "clip_max_frames",
            "clip_max_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.localize_ground < 0:
            raise ValueError(f"localize_ground must be >= 0, got {self.localize_ground}")


def sampling_policy(
    processor_config: Any, options: PipelineOptions, *, context_tokens: int
) -> ingest.SamplingPolicy:
    """The ``ingest.SamplingPolicy`` a model can take: its patch geometry and per-frame cap.

    Args:
        processor_config: the model's ``vidlm.ProcessorConfig``.
        options: the pipeline's knobs.
        context_tokens: the model's context length; the visual budget keeps 1/8 of it for text.
    """
    per_pair = int(processor_config.video_max_tokens_per_frame)
    budget = min(options.max_video_tokens, context_tokens - context_tokens // 8)
    return ingest.SamplingPolicy(
        fps=options.fps,
        max_frames=options.max_frames,
        max_video_tokens=max(budget, per_pair),
        min_tokens_per_pair=min(options.min_tokens_per_frame, per_pair),
        max_tokens_per_pair=per_pair,
        size_factor=int(processor_config.factor),
        temporal_patch_size=int(processor_config.temporal_patch_size),
    )


class FrameCache:
    """LRU of decoded ``FrameBatch``es keyed by (video id, plan, model id)."""

    def __init__(self, *, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[tuple, ingest.FrameBatch] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(plan: ingest.SamplingPlan, model_id: str) -> tuple:
        return (plan.video_id, plan.seconds, plan.width, plan.height, plan.stream_index, model_id)

    def get_or_decode(
        self, plan: ingest.SamplingPlan, model_id: str, decode: Callable[[], ingest.FrameBatch]
    ) -> ingest.FrameBatch:
        """The cached frames of ``plan`` or ``decode()``'s, stored."""
        key = self.key(plan, model_id)
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        batch = decode()
        self._items[key] = batch
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
        return batch


class Pipeline:
    """Ingest folders into a library, ask questions about videos, localize events, export.

    The model and the embedder load on first use.

    Args:
        model: checkpoint folder or hub id; None for the built-in model.
        device, dtype: passed to ``vidlm.load`` (and ``vidlm.load_embedder``).
        library: default library folder (``app.paths.default_library_path()`` when None).
        options: pipeline knobs.
        lm, embedder: already-loaded objects to use instead of loading (tests, the web app).
        embedder_model: a Qwen3-VL-Embedding checkpoint (folder or hub id) to embed segments
            from their clips and captions (``app.embedders.ClipEmbedder``); None: the offline
            MiniLM caption embedder.
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        library: LibraryArg = None,
        options: PipelineOptions | None = None,
        lm: vidlm.VideoLM | None = None,
        embedder: index.Embedder | None = None,
        embedder_model: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model_name = model
        self.device = device
        self.dtype = dtype
        self.library_path = Path(library) if library is not None else default_library_path()
        self.options = options or PipelineOptions()
        self._lm = lm
        self._embedder = embedder
        self.embedder_model = embedder_model
        self.frames = FrameCache(max_items=self.options.frame_cache_size)
        self._probes: dict[tuple[str, int, int], ingest.VideoInfo] = {}

    # ----- lazily loaded parts -------------------------------------------------------------

    @property
    def lm(self) -> vidlm.VideoLM:
        """The model (loaded on first use, with ingest's decoder as its video reader)."""
        if self._lm is None:
            import vidlm

            cache_dir = self.library_path / "cache" / "visual" if self.options.visual_disk_cache else None
            self._lm = vidlm.load(
                self.model_name, device=self.device, dtype=self.dtype, video_reader=self.read_video,
                cache_dir=cache_dir, prefix_cache_bytes=self.options.prefix_cache_bytes,
                compile_decoding=self.options.compile_decoding,
            )
        return self._lm

    @property
    def embedder(self) -> index.Embedder:
        """The library's embedder: the clip embedder of ``embedder_model``, else offline MiniLM."""
        if self._embedder is None:
            if self.embedder_model is None:
                self._embedder = index.MiniLMEmbedder()
            else:
                self._embedder = self._clip_embedder(self.embedder_model)
        return self._embedder

    @property
    def model_id(self) -> str:
        return self.lm.model_id

    def policy(self) -> ingest.SamplingPolicy:
        """The sampling policy for the loaded model."""
        context = int(self.lm.model.config.text.max_position_embeddings)
        return sampling_policy(self.lm.processor.config, self.options, context_tokens=context)

    # ----- frames --------------------------------------------------------------------------

    def probe(self, path: str | os.PathLike[str]) -> ingest.VideoInfo:
        """``ingest.probe`` remembered per (path, size, mtime)."""
        p = Path(path).absolute()
        stat = p.stat()
        key = (str(p), stat.st_size, stat.st_mtime_ns)
        if key not in self._probes:
            self._probes[key] = ingest.probe(p)
        return self._probes[key]

    def frames_for(self, plan: ingest.SamplingPlan) -> ingest.FrameBatch:
        """Decoded frames of a plan, through the LRU."""
        return self.frames.get_or_decode(
            plan, self.model_id, lambda: ingest.decode(plan.path, plan)
        )

    def read_video(self, path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
        """``vidlm``'s video reader: the whole video under the policy, [T, H, W, 3] + seconds."""
        batch = self.frames_for(ingest.plan(self.probe(path), self.policy()))
        return batch.to_hwc(), batch.seconds

    def read_clip(
        self, path: str | os.PathLike[str], start_seconds: float, end_seconds: float, *, policy: ingest.SamplingPolicy
    ) -> ingest.FrameBatch:
        """A segment's frames under ``policy``, its span widened to ``options.clip_min_seconds``.

        Raises:
            ingest.VideoError: the file cannot be probed or decoded.
            OSError: the file is gone.
        """
        info = self.probe(path)
        lo, hi = ingest.widen_span(start_seconds, end_seconds, min_seconds=self.options.clip_min_seconds,
                                   last_seconds=info.last_frame_seconds)
        return ingest.decode(info.path, ingest.plan(info, policy, start_seconds=lo, end_seconds=hi))

    def _clip_embedder(self, name: str | os.PathLike[str]) -> index.Embedder:
        """``ClipEmbedder`` of a Qwen3-VL-Embedding checkpoint, its clips sampled by ``clip_*``."""
        import vidlm
        from app.embedders import ClipEmbedder

        model = vidlm.load_embedder(name, device=self.device, dtype=self.dtype)
        knobs = replace(self.options, fps=self.options.clip_fps, max_frames=self.options.clip_max_frames,
                        max_video_tokens=self.options.clip_max_tokens)
        context = int(model.model.config.text.max_position_embeddings)
        policy = sampling_policy(model.processor.config, knobs, context_tokens=context)
        return ClipEmbedder(model, partial(self.read_clip, policy=policy))

    # ----- ingest --------------------------------------------------------------------------

    def ingest_folder(
        self,
        folder: str | os.PathLike[str],
        *,
        library: LibraryArg = None,
        progress: PipelineProgress | None = None,
        retry_failed: bool = False,
        ray_options: RayOptions | None = None,
    ) -> IngestReport:
        """Ingest every video under ``folder`` into the library, committing after each file.

        Unchanged files are skipped (a file with only a new mtime gets its row updated);
        catalog rows of files under ``folder`` that are gone are removed; a bad file becomes
        a catalog row with status "error" and its reason, and the batch goes on.

        Args:
            folder: the folder to scan (recursively).
            library: the library folder (created if absent); the pipeline's default when None.
            progress: called with ``PipelineEvent``s.
            retry_failed: ingest unchanged files whose last ingest failed again.
            ray_options: run on Ray (``app.ray_engine``, the ``ray`` extra) instead of in this
                process; the same library comes out, committed in batches.

        Raises:
            NotADirectoryError: ``folder`` is not a folder.
            index.LibraryError: the library is damaged or built with another embedder.
        """
        if ray_options is not None:
            from app.ray_engine import ingest_folder_ray

            return ingest_folder_ray(
                self,
                folder,
                library=library,
                progress=progress,
                retry_failed=retry_failed,
                options=ray_options,
            )
        root = Path(folder).absolute()
        paths = ingest.discover(root)
        lib = self.open_library(library, create=True)
        outcomes = ingest_paths(
            self, lib, root, paths, progress=progress, retry_failed=retry_failed
        )
        return IngestReport(library=lib.path, model_id=self.model_id, files=tuple(outcomes))

    # ----- questions -----------------------------------------------------------------------

    def ask(
        self, video: str | os.PathLike[str], question: str, *, library: LibraryArg = None
    ) -> AskResult:
        """Answer ``question`` about ``video`` (a file, or a video id of the library).

        The whole video goes in context when its plan at the target fps fits the visual
        budget; otherwise the best windows for the question are retrieved from the library
        (when the video is in it) and the model grounds in them, each with its absolute
        times; without a library the whole video is sampled more sparsely.

        Raises:
            FileNotFoundError: no such file and no such video id in the library.
            ValueError: an empty question.
        """
        return self._ask(video, question, self.open_library(library, create=False, missing_ok=True))

    def _ask(self, video: str | os.PathLike[str], question: str, lib: index.Library | None) -> AskResult:
        """``ask`` in an opened library (None: none)."""
        info, path, video_id, batches, mode = self._question_context(video, question, lib)
        answer = self.lm.answer(
            question_messages(batches, question),
            max_new_tokens=self.options.answer_max_new_tokens,
            do_sample=False,
        )
        spans = index.parse_spans(answer.text, duration_seconds=info.duration_seconds)
        return AskResult(
            video_id=video_id,
            path=str(path),
            question=question,
            answer=answer.text,
            spans=tuple(SpanResult(s.start_seconds, s.end_seconds, s.caption) for s in spans),
            mode=mode,
            windows=tuple((float(b.seconds[0]), float(b.seconds[-1])) for b in batches if len(b)),
            model_id=self.model_id,
            confidence=answer.confidence,
        )

    def ask_stream(
        self, video: str | os.PathLike[str], question: str, *, library: LibraryArg = None
    ) -> vidlm.AnswerStream:
        """``ask``'s answer text in pieces as the model writes it (parse spans from the joined
        text); once all are read, the stream's ``answer`` has the answer's confidence.

        Raises (on the call, before any piece): as ``ask``.
        """
        lib = self.open_library(library, create=False, missing_ok=True)
        _, _, _, batches, _ = self._question_context(video, question, lib)
        return self.lm.stream(
            question_messages(batches, question),
            max_new_tokens=self.options.answer_max_new_tokens,
            do_sample=False,
        )

    def _question_context(
        self, video: str | os.PathLike[str], question: str, lib: index.Library | None
    ) -> tuple[ingest.VideoInfo, Path, str, list[ingest.FrameBatch], str]:
        """Probe facts, path, video id, the frame batches to show and the mode, for a question."""
        if not question.strip():
            raise ValueError("question must not be empty")
        path, video_id = resolve_video(video, lib)
        info = self.probe(path)
        plans, mode = self._plans_for_question(info, question, lib, video_id)
        return info, path, video_id, [self.frames_for(p) for p in plans], mode

    def _plans_for_question(
        self, info: ingest.VideoInfo, question: str, lib: index.Library | None, video_id: str
    ) -> tuple[list[ingest.SamplingPlan], str]:
        policy = self.policy()
        full = ingest.plan(info, replace(policy, max_frames=_HUGE, max_video_tokens=_HUGE))
        if full.tokens <= policy.max_video_tokens and full.num_frames <= policy.max_frames:
            return [full], "whole"
        spans = self._retrieved_spans(info, question, lib, video_id)
        if not spans:
            return [ingest.plan(info, policy)], "downsampled"
        share = replace(
            policy,
            max_video_tokens=max(policy.max_video_tokens // len(spans), policy.max_tokens_per_pair),
            max_frames=max(policy.max_frames // len(spans), policy.temporal_patch_size),
        )
        return [
            ingest.plan(info, share, start_seconds=s, end_seconds=e) for s, e in spans
        ], "retrieved"

    def _retrieved_spans(
        self, info: ingest.VideoInfo, question: str, lib: index.Library | None, video_id: str
    ) -> list[tuple[float, float]]:
        if lib is None or lib.entry(video_id) is None or lib.segments_of(video_id).height == 0:
            return []
        self._check_embedder(lib)
        query = index.query_vectors(self.embedder, [question])[0]
        hits = lib.search(query, self.options.retrieve_k, video_id=video_id)
        pad = self.options.retrieve_pad_seconds
        last = info.last_frame_seconds
        raw = [
            (max(0.0, s - pad), min(last, e + pad))
            for s, e in zip(hits["start_seconds"], hits["end_seconds"], strict=True)
        ]
        return merge_spans([(s, e) for s, e in raw if s <= e])

    def localize(
        self,
        query: str,
        *,
        video: str | os.PathLike[str] | None = None,
        k: int | None = None,
        ground: int | None = None,
        library: LibraryArg = None,
    ) -> list[LocalizedSpan]:
        """Ranked spans across the library (or one video of it) for the event ``query`` describes.

        Retrieve, then ground, as moment-retrieval systems do: the stored captions are searched
        by embedding, then the model is asked when the event happens in each of the ``ground``
        videos whose captions matched best (default ``options.localize_ground``; every video
        when the library has no more; 0: captions only). A video whose answer gives a span
        gets that span as a hit (``grounded``), ahead of every caption hit; grounded hits rank
        by the answer's confidence (the probability of its least likely token: a model that
        cannot place the event in a video guesses at its times), then by the video's best
        caption score. That video's caption hits that overlap the span are dropped. A video
        whose answer has no span (the model finds no such event) keeps only its caption hits.

        Raises:
            index.LibraryNotFoundError: no library there.
            FileNotFoundError: ``video`` is neither a file nor a video id of the library.
            KeyError: ``video`` is a file that is not in the library.
            ValueError: an empty query or a negative ``ground``.
        """
        if not query.strip():
            raise ValueError("query must not be empty")
        ground = self.options.localize_ground if ground is None else ground
        if ground < 0:
            raise ValueError(f"ground must be >= 0, got {ground}")
        lib = self.open_library(library, create=False)
        self._check_embedder(lib)
        video_id = resolve_video(video, lib)[1] if video is not None else None
        k = k or self.options.search_k
        vector = index.query_vectors(self.embedder, [query])[0]
        hits = lib.search(vector, k, video_id=video_id).to_dicts()
        grounded = sorted(
            (g for v in self._videos_to_ground(lib, hits, video_id, ground)
             if (g := self._ground_in(lib, v, query, hits)) is not None),
            key=lambda g: (-g["confidence"], -g["score"]),
        )
        found = {g["video_id"]: (g["start_seconds"], g["end_seconds"]) for g in grounded}
        rows = grounded + [
            {**h, "grounded": False} for h in hits
            if h["video_id"] not in found
            or not _overlap(found[h["video_id"]], (h["start_seconds"], h["end_seconds"]))
        ]
        return [
            LocalizedSpan(
                rank=rank,
                video_id=r["video_id"],
                path=r["path"],
                start_seconds=float(r["start_seconds"]),
                end_seconds=float(r["end_seconds"]),
                score=float(r["score"]),
                caption=r["caption"],
                grounded=r["grounded"],
                confidence=r.get("confidence"),
            )
            for rank, r in enumerate(rows[:k], start=1)
        ]

    def _videos_to_ground(
        self, lib: index.Library, hits: list[dict[str, Any]], video_id: str | None, ground: int
    ) -> list[str]:
        """The videos ``localize`` grounds its query in: those of the best caption hits, in
        their order, topped up from the library's other searchable videos when it has few."""
        if ground == 0:
            return []
        if video_id is not None:
            return [video_id]
        order = list(dict.fromkeys(h["video_id"] for h in hits))
        ok = lib.catalog.filter(pl.col("status") != "error").sort("path")["video_id"].to_list()
        return (order + [v for v in ok if v not in order])[:ground]

    def _ground_in(
        self, lib: index.Library, video_id: str, query: str, hits: list[dict[str, Any]]
    ) -> dict[str, Any] | None:
        """``video_id``'s first answer span for the query's grounding question, as a hit row
        scored by the video's best caption hit (None when the answer gives no span, or when
        the file is gone or no longer decodes: its caption hits stand)."""
        try:
            result = self._ask(video_id, grounding_question(query), lib)
        except (FileNotFoundError, ingest.VideoError) as err:
            log.warning("localize: not grounding in %s: %s", video_id, err)
            return None
        if not result.spans:
            log.info("localize: the model finds no %r in %s (%r)", query, result.path, result.answer)
            return None
        span = result.spans[0]
        own = [h for h in hits if h["video_id"] == video_id]
        return {
            "video_id": video_id, "path": result.path, "start_seconds": span.start_seconds,
            "end_seconds": span.end_seconds, "score": max((h["score"] for h in own), default=0.0),
            "caption": result.answer, "grounded": True, "confidence": result.confidence,
        }

    # ----- library chores ------------------------------------------------------------------

    def export(
        self,
        out: str | os.PathLike[str],
        *,
        format: index.export.ExportFormat | None = None,
        video: str | os.PathLike[str] | None = None,
        library: LibraryArg = None,
        ray_options: RayOptions | None = None,
    ) -> list[Path]:
        """Write grounded captions (jsonl, srt, vtt or parquet); see ``index.export_captions``.

        With ``ray_options`` each video's captions are rendered by a Ray task; same files.
        """
        if ray_options is not None:
            from app.ray_engine import export_ray

            return export_ray(
                self, out, format=format, video=video, library=library, options=ray_options
            )
        lib = self.open_library(library, create=False)
        video_id = resolve_video(video, lib)[1] if video is not None else None
        return index.export_captions(lib, out, format=format, video_id=video_id)

    def clip(
        self,
        video: str | os.PathLike[str],
        start_seconds: float,
        end_seconds: float,
        out: str | os.PathLike[str],
    ) -> Path:
        """Cut ``[start, end)`` seconds of a video file into a playable mp4."""
        return ingest.cut_clip(video, start_seconds, end_seconds, out)

    def status(self, *, library: LibraryArg = None) -> LibraryStatus:
        """What is in the library, with every failure and its reason."""
        return library_status(self.open_library(library, create=False))

    def rebuild(self, *, library: LibraryArg = None) -> LibraryStatus:
        """Re-embed every segment with this pipeline's embedder and rewrite vectors + manifest
        (after a damaged vectors file, or to switch the library to another embedder)."""
        folder = Path(library) if library is not None else self.library_path
        return library_status(index.rebuild_vectors(folder, self.embedder))

    def open_library(
        self, library: LibraryArg, *, create: bool, missing_ok: bool = False
    ) -> index.Library | None:
        """Open the library (the pipeline's default when ``library`` is None).

        Raises:
            index.LibraryNotFoundError: absent, ``create`` and ``missing_ok`` False.
        """
        folder = Path(library) if library is not None else self.library_path
        if missing_ok and not (folder / "manifest.json").exists():
            return None
        if create:
            emb = self.embedder
            return index.Library.open(folder, create=True, embedder_id=emb.id, dimension=emb.dim)
        return index.Library.open(folder)

    def _check_embedder(self, lib: index.Library) -> None:
        if lib.embedder_id != self.embedder.id or lib.dimension != self.embedder.dim:
            from app.embedders import EMBEDDER_ID_PREFIX

            how = (f"pass --embedder {lib.embedder_id.removeprefix(EMBEDDER_ID_PREFIX)}"
                   if lib.embedder_id.startswith(EMBEDDER_ID_PREFIX) else "use that embedder")
            raise index.LibraryMismatchError(
                f"library {lib.path} was built with embedder {lib.embedder_id!r}, this pipeline "
                f"uses {self.embedder.id!r}; {how}, or run `vidlm rebuild` to re-embed it with this one"
            )


# ----- small pure helpers --------------------------------------------------------------------


def resolve_video(video: str | os.PathLike[str], lib: index.Library | None) -> tuple[Path, str]:
    """(file path, library video id) for a file path or a video id of the library.

    Raises:
        FileNotFoundError: neither an existing file nor a known video id.
    """
    path = Path(video)
    if path.is_file():
        return path.absolute(), index.video_id_for_path(path)
    entry = lib.entry(str(video)) if lib is not None else None
    if entry is not None and Path(str(entry["path"])).is_file():
        return Path(str(entry["path"])), str(entry["video_id"])
    where = f" nor a video id of library {lib.path}" if lib is not None else ""
    raise FileNotFoundError(f"{video}: not a video file{where}")


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def merge_spans(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping spans merged, in time order."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def library_status(lib: index.Library) -> LibraryStatus:
    """``LibraryStatus`` of an open library."""
    counts = lib.segments.group_by("video_id").len()
    catalog = lib.catalog.join(counts, on="video_id", how="left").with_columns(
        pl.col("len").fill_null(0)
    )
    entries = tuple(
        {
            "video_id": r["video_id"],
            "path": r["path"],
            "status": r["status"],
            "error": r["error_message"],
            "duration_seconds": r["duration_seconds"],
            "segments": int(r["len"]),
            "model_id": r["model_id"],
            "ingested_at": r["ingest_finished_at"].isoformat() if r["ingest_finished_at"] else None,
        }
        for r in catalog.sort("path").iter_rows(named=True)
    )
    return LibraryStatus(
        library=lib.path,
        embedder_id=lib.embedder_id,
        index_kind=lib.index_kind,
        segments=lib.segments.height,
        entries=entries,
    )
