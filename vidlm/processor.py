"""Processor: chat messages with images and videos -> token ids, patches and grids.

What is unusual here:
- Videos arrive as the frames to use plus each frame's time in seconds. No frame sampling happens
  here; the times are printed as given (``<12.3 seconds>``, the midpoint of each frame pair), so the
  caller chooses their origin.
- The per-video pixel budget (``video_min/max_pixels``) is a *total* over all frames; with
  ``cap_pixels_per_frame`` each frame is additionally capped (the Qwen-authored behaviour).
- Two prompt layouts for a video (reference §6.5): ``"qwen"`` replaces the template's whole
  ``<|vision_start|><|video_pad|><|vision_end|>`` with one ``<t seconds><|vision_start|>pads<|vision_end|>``
  group per frame pair; ``"transformers"`` replaces only ``<|video_pad|>`` and keeps the outer pair.
- The expanded prompt is built as a string and tokenized as a whole, as the reference does, so
  the timestamp text merges with neighbouring text exactly as it would there.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from vidlm.image_ops import (
    PixelNorm,
    image_to_rgb_array,
    normalize_image,
    patchify,
    resize_image_bicubic,
    smart_resize_image,
    smart_resize_video,
    video_max_total_pixels,
    video_to_patches,
    video_to_tchw,
)
from vidlm.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

VideoPromptLayout = Literal["qwen", "transformers"]
VideoPixelDType = Literal["float32", "uint8"]
PaddingSide = Literal["left", "right"]
MM_TEXT, MM_IMAGE, MM_VIDEO = 0, 1, 2
_LAYOUTS = ("qwen", "transformers")
_PIXEL_DTYPES = ("float32", "uint8")
_PADDING_SIDES = ("left", "right")

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"


@dataclass(frozen=True)
class ProcessorConfig:
    """Pixel and layout settings; defaults are the released checkpoints' values."""

    patch_size: int = 16
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_min_pixels: int = 65536
    image_max_pixels: int = 16777216
    video_min_pixels: int = 4096  # total over all frames of one video
    video_max_pixels: int = 25165824  # total over all frames of one video
    cap_pixels_per_frame: bool = True
    video_max_tokens_per_frame: int = 768  # the per-frame cap, in merged tokens
    video_max_pixels_per_frame: int | None = None  # optional extra per-frame ceiling
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    video_prompt_layout: VideoPromptLayout = "qwen"
    # "uint8": video patch rows stay uint8 (4x fewer bytes) and the vision tower normalises them
    # per chunk with ``pixel_norm``; "float32": normalised here, the reference's output.
    video_pixel_dtype: VideoPixelDType = "float32"

    def __post_init__(self) -> None:
        for name in (
            "patch_size",
            "temporal_patch_size",
            "merge_size",
            "video_max_tokens_per_frame",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; must be >= 1")
        for low, high in (
            ("image_min_pixels", "image_max_pixels"),
            ("video_min_pixels", "video_max_pixels"),
        ):
            if not 0 < getattr(self, low) <= getattr(self, high):
                raise ValueError(
                    f"{low}={getattr(self, low)}, {high}={getattr(self, high)}; need 0 < {low} <= {high}"
                )
        if self.video_prompt_layout not in _LAYOUTS:
            raise ValueError(
                f"video_prompt_layout={self.video_prompt_layout!r}; allowed: {_LAYOUTS}"
            )
        if self.video_pixel_dtype not in _PIXEL_DTYPES:
            raise ValueError(f"video_pixel_dtype={self.video_pixel_dtype!r}; allowed: {_PIXEL_DTYPES}")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name}={getattr(self, name)}; expected 3 values (RGB)")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std={self.image_std}; values must be > 0")

    @property
    def pixel_norm(self) -> PixelNorm:
        """The normalisation of pixel values (what a model fed uint8 video rows must apply)."""
        return PixelNorm(self.image_mean, self.image_std, self.rescale_factor)

    @property
    def factor(self) -> int:
        """Side multiple of a resized frame: one merged token covers factor x factor pixels."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dir(cls, path: str | Path, **overrides: Any) -> ProcessorConfig:
        """Read ``preprocessor_config.json`` / ``video_preprocessor_config.json`` when present.

        Missing files or keys keep the defaults; ``overrides`` (field names) win over both.

        Raises:
            ValueError: the two files disagree on patch/merge sizes, or an override is unknown.
        """
        folder = Path(path)
        values: dict[str, Any] = {}
        image = _read_json(folder / "preprocessor_config.json")
        video = _read_json(folder / "video_preprocessor_config.json")
        if image is not None:
            values.update(_pixel_fields(image, prefix="image"))
            values.update(_shared_fields(image))
        if video is not None:
            values.update(_pixel_fields(video, prefix="video"))
            _check_shared_agree(values, _shared_fields(video))
            values.update(_shared_fields(video))
            if video.get("cap_pixels_per_frame") is not None:
                values["cap_pixels_per_frame"] = bool(video["cap_pixels_per_frame"])
            if video.get("max_video_tokens") is not None:
                values["video_max_tokens_per_frame"] = int(video["max_video_tokens"])
        unknown = set(overrides) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ProcessorConfig fields {sorted(unknown)}")
        return cls(**{**values, **overrides})


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _pixel_fields(d: Mapping[str, Any], *, prefix: str) -> dict[str, int]:
    """min/max pixels from ``size`` (shortest/longest_edge), overridden by ``min/max_pixels``."""
    size = d.get("size") or {}
    low = d.get("min_pixels") or size.get("shortest_edge")
    high = d.get("max_pixels") or size.get("longest_edge")
    out = {}
    if low is not None:
        out[f"{prefix}_min_pixels"] = int(low)
    if high is not None:
        out[f"{prefix}_max_pixels"] = int(high)
    return out


def _shared_fields(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("patch_size", "temporal_patch_size", "merge_size"):
        if d.get(key) is not None:
            out[key] = int(d[key])
    for key in ("image_mean", "image_std"):
        if d.get(key) is not None:
            out[key] = tuple(float(v) for v in d[key])
    if d.get("rescale_factor") is not None:
        out["rescale_factor"] = float(d["rescale_factor"])
    return out


def _check_shared_agree(image_values: Mapping[str, Any], video_values: Mapping[str, Any]) -> None:
    for key in ("patch_size", "temporal_patch_size", "merge_size"):
        if key in image_values and key in video_values and image_values[key] != video_values[key]:
            raise ValueError(
                f"{key} differs: preprocessor_config.json has {image_values[key]}, "
                f"video_preprocessor_config.json has {video_values[key]}"
            )


# ------------------------------------------------------------------------------ timestamps
def frame_pair_seconds(timestamps: Sequence[float], *, temporal_patch_size: int = 2) -> list[float]:
    """Midpoint time of each frame group: ``(first + last) / 2`` in float64.

    An incomplete last group is padded with its last time (a lone last frame gives its own time).
    """
    seconds = [float(t) for t in timestamps]
    if not seconds:
        raise ValueError("timestamps is empty; one time in seconds per frame is required")
    seconds += [seconds[-1]] * (-len(seconds) % temporal_patch_size)
    step = temporal_patch_size
    return [(seconds[i] + seconds[i + step - 1]) / 2 for i in range(0, len(seconds), step)]


def timestamp_text(seconds: float) -> str:
    """``<{seconds:.1f} seconds>`` (Python formatting: half-to-even on the binary value)."""
    return f"<{seconds:.1f} seconds>"


# ---------------------------------------------------------------------------- pixel inputs
@dataclass(frozen=True)
class VisualInput:
    """One processed image or video: patches ``[N, C*tp*p*p]``, grid and pair times."""

    patches: torch.Tensor
    grid_thw: tuple[int, int, int]
    pair_seconds: tuple[float, ...] = field(default=())


def process_image(image: Any, config: ProcessorConfig) -> VisualInput:
    """An image (PIL or uint8 ``[H, W, C]``) -> patches and ``(1, h/p, w/p)``."""
    rgb = image_to_rgb_array(image)
    height, width = smart_resize_image(
        rgb.shape[0],
        rgb.shape[1],
        factor=config.factor,
        min_pixels=config.image_min_pixels,
        max_pixels=config.image_max_pixels,
    )
    rgb = resize_image_bicubic(rgb, height, width)
    chw = normalize_image(
        rgb, mean=config.image_mean, std=config.image_std, rescale_factor=config.rescale_factor
    )
    patches, grid = _patchify(chw[None], config)
    return VisualInput(patches, grid)


def process_video(frames: Any, timestamps: Sequence[float], config: ProcessorConfig) -> VisualInput:
    """Video frames (uint8 ``[T, H, W, 3]``) with times in seconds -> patches, grid, pair times.

    Raises:
        ValueError: the number of timestamps differs from the number of frames.
    """
    tchw = video_to_tchw(frames)
    num_frames = tchw.shape[0]
    if len(timestamps) != num_frames:
        raise ValueError(f"len(timestamps)={len(timestamps)} but the video has {num_frames} frames")
    max_total = video_max_total_pixels(
        num_frames,
        min_pixels=config.video_min_pixels,
        max_pixels=config.video_max_pixels,
        cap_pixels_per_frame=config.cap_pixels_per_frame,
        max_tokens_per_frame=config.video_max_tokens_per_frame,
        factor=config.factor,
        max_pixels_per_frame=config.video_max_pixels_per_frame,
    )
    height, width = smart_resize_video(
        num_frames,
        tchw.shape[2],
        tchw.shape[3],
        factor=config.factor,
        temporal_factor=config.temporal_patch_size,
        min_pixels=config.video_min_pixels,
        max_pixels=max_total,
    )
    logger.debug("video %s -> %dx%d per frame", tuple(tchw.shape), height, width)
    patches, grid = video_to_patches(
        tchw,
        height,
        width,
        norm=config.pixel_norm if config.video_pixel_dtype == "float32" else None,
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        merge_size=config.merge_size,
    )
    pair_seconds = frame_pair_seconds(timestamps, temporal_patch_size=config.temporal_patch_size)
    return VisualInput(patches, grid, tuple(pair_seconds))


def _patchify(
    frames: torch.Tensor, config: ProcessorConfig
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    return patchify(
        frames,
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        merge_size=config.merge_size,
    )


# ------------------------------------------------------------------------------- prompts
def video_placeholder_text(
    pair_seconds: Sequence[float],
    tokens_per_pair: int,
    *,
    vision_start: str = VISION_START_TOKEN,
    video_token: str = VIDEO_TOKEN,
    vision_end: str = VISION_END_TOKEN,
) -> str:
    """``<t seconds><|vision_start|><|video_pad|>*n<|vision_end|>`` for every frame pair."""
    group = vision_start + video_token * tokens_per_pair + vision_end
    return "".join(timestamp_text(t) + group for t in pair_seconds)


def _collect_visuals(
    conversation: Sequence[Mapping[str, Any]],
) -> list[tuple[str, Mapping[str, Any]]]:
    """(kind, part) for each image/video part, in the order the template emits placeholders."""
    found = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, str) or content is None:
            continue
        for part in content:
            kind = part.get("type")
            if kind == "image" or "image" in part or "image_url" in part:
                if "image" not in part:
                    raise ValueError(
                        "an image part needs the key 'image' (PIL image or uint8 [H, W, 3])"
                    )
                found.append(("image", part))
            elif kind == "video" or "video" in part:
                if "video" not in part or "timestamps" not in part:
                    raise ValueError(
                        "a video part needs 'video' (uint8 [T, H, W, 3]) and 'timestamps' (seconds [T])"
                    )
                found.append(("video", part))
    return found


class Processor:
    """Turns chat messages with images and videos into the model's input tensors.

    Args:
        tokenizer: the checkpoint's tokenizer (chat template included).
        config: pixel and layout settings (defaults: the released checkpoints' values).
        image_token_id, video_token_id, vision_start_token_id, vision_end_token_id: placeholder
            ids; each defaults to the tokenizer's id of the standard token string.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        config: ProcessorConfig | None = None,
        *,
        image_token_id: int | None = None,
        video_token_id: int | None = None,
        vision_start_token_id: int | None = None,
        vision_end_token_id: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config if config is not None else ProcessorConfig()

        def resolve(token_id: int | None, default: str) -> int:
            return tokenizer.token_to_id(default) if token_id is None else int(token_id)

        self.image_token_id = resolve(image_token_id, IMAGE_TOKEN)
        self.video_token_id = resolve(video_token_id, VIDEO_TOKEN)
        self.vision_start_token_id = resolve(vision_start_token_id, VISION_START_TOKEN)
        self.vision_end_token_id = resolve(vision_end_token_id, VISION_END_TOKEN)
        self.image_token = tokenizer.id_to_token(self.image_token_id)
        self.video_token = tokenizer.id_to_token(self.video_token_id)
        self.vision_start_token = tokenizer.id_to_token(self.vision_start_token_id)
        self.vision_end_token = tokenizer.id_to_token(self.vision_end_token_id)

    def with_config(self, **changes: Any) -> Processor:
        """This processor (same tokenizer and token ids) with ``changes`` to its config."""
        other = copy.copy(self)
        other.config = replace(self.config, **changes)
        return other

    @classmethod
    def from_dir(cls, path: str | Path, **config_overrides: Any) -> Processor:
        """Tokenizer and pixel settings from a checkpoint folder (``config_overrides`` are
        ``ProcessorConfig`` fields, e.g. ``video_prompt_layout="transformers"``)."""
        return cls(Tokenizer.from_dir(path), ProcessorConfig.from_dir(path, **config_overrides))

    def __call__(
        self,
        messages_or_batch: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        *,
        add_generation_prompt: bool = True,
        add_vision_id: bool = False,
        padding_side: PaddingSide = "left",
    ) -> dict[str, torch.Tensor]:
        """Tokenize one conversation or a batch of them, with their images and videos.

        Returns:
            ``input_ids`` / ``attention_mask`` / ``mm_token_type_ids`` int64 ``[B, L]`` (pad id on
            ``padding_side``; types 0 text, 1 image, 2 video), and when present ``pixel_values``
            float32 ``[N, 3*tp*p*p]`` + ``image_grid_thw`` int64 ``[n_images, 3]``,
            ``pixel_values_videos`` (float32, or uint8 with ``video_pixel_dtype="uint8"``) +
            ``video_grid_thw`` ``[n_videos, 3]``.

        Raises:
            ValueError: bad padding_side, an empty batch, malformed parts, or placeholders in the
                rendered prompt that do not match the images/videos given.
        """
        if padding_side not in _PADDING_SIDES:
            raise ValueError(f"padding_side={padding_side!r}; allowed: {_PADDING_SIDES}")
        batch = _as_batch(messages_or_batch)
        texts, images, videos = [], [], []
        for conversation in batch:
            conv_images, conv_videos = self._process_visuals(conversation)
            texts.append(
                self.prompt_text(
                    conversation,
                    conv_images,
                    conv_videos,
                    add_generation_prompt=add_generation_prompt,
                    add_vision_id=add_vision_id,
                )
            )
            images += conv_images
            videos += conv_videos
        out = self._pad(self.tokenizer.encode_batch(texts), padding_side)
        if images:
            out["pixel_values"] = torch.cat([v.patches for v in images])
            out["image_grid_thw"] = torch.tensor([v.grid_thw for v in images], dtype=torch.int64)
        if videos:
            out["pixel_values_videos"] = torch.cat([v.patches for v in videos])
            out["video_grid_thw"] = torch.tensor([v.grid_thw for v in videos], dtype=torch.int64)
        return out

    def _process_visuals(
        self, conversation: Sequence[Mapping[str, Any]]
    ) -> tuple[list[VisualInput], list[VisualInput]]:
        images, videos = [], []
        for kind, part in _collect_visuals(conversation):
            if kind == "image":
                images.append(process_image(part["image"], self.config))
            else:
                videos.append(process_video(part["video"], part["timestamps"], self.config))
        return images, videos

    def prompt_text(
        self,
        conversation: Sequence[Mapping[str, Any]],
        images: Sequence[VisualInput],
        videos: Sequence[VisualInput],
        *,
        add_generation_prompt: bool = True,
        add_vision_id: bool = False,
    ) -> str:
        """The rendered chat template with every image/video placeholder expanded."""
        rendered = self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id
        )
        return self.expand_placeholders(rendered, images, videos)

    def expand_placeholders(
        self, text: str, images: Sequence[VisualInput], videos: Sequence[VisualInput]
    ) -> str:
        """Replace the template's placeholders, in order, by one pad token per merged token.

        Raises:
            ValueError: the number of placeholders differs from the number of images/videos.
        """
        video_pattern = self.video_token
        if self.config.video_prompt_layout == "qwen":
            video_pattern = self.vision_start_token + self.video_token + self.vision_end_token
        pattern = re.compile(f"({re.escape(self.image_token)})|({re.escape(video_pattern)})")
        merge_area = self.config.merge_size**2
        image_iter, video_iter = iter(images), iter(videos)
        counts = {"image": 0, "video": 0}

        def expand(match: re.Match[str]) -> str:
            kind = "image" if match.group(1) else "video"
            counts[kind] += 1
            item = next(image_iter if kind == "image" else video_iter, None)
            if item is None:
                return match.group(0)  # counted; reported as a mismatch below
            t, h, w = item.grid_thw
            if kind == "image":
                return self.image_token * (t * h * w // merge_area)
            body = video_placeholder_text(
                item.pair_seconds,
                h * w // merge_area,
                vision_start=self.vision_start_token,
                video_token=self.video_token,
                vision_end=self.vision_end_token,
            )
            return body

        expanded = pattern.sub(expand, text)
        if counts["image"] != len(images) or counts["video"] != len(videos):
            raise ValueError(
                f"the rendered prompt has {counts['image']} image and {counts['video']} video "
                f"placeholders (video_prompt_layout={self.config.video_prompt_layout!r} looks for "
                f"{video_pattern!r}) but {len(images)} images and {len(videos)} videos were given"
            )
        return expanded

    def _pad(self, ids: list[list[int]], padding_side: PaddingSide) -> dict[str, torch.Tensor]:
        longest = max(len(row) for row in ids)
        if any(len(row) != longest for row in ids) and self.tokenizer.pad_token_id is None:
            raise ValueError("the batch needs padding but the tokenizer has no pad_token")
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.int64)
        attention_mask = torch.zeros((len(ids), longest), dtype=torch.int64)
        for row, seq in enumerate(ids):
            cols = (
                slice(longest - len(seq), longest) if padding_side == "left" else slice(0, len(seq))
            )
            input_ids[row, cols] = torch.tensor(seq, dtype=torch.int64)
            attention_mask[row, cols] = 1
        mm_types = torch.zeros_like(input_ids)
        mm_types[(input_ids == self.image_token_id) & (attention_mask == 1)] = MM_IMAGE
        mm_types[(input_ids == self.video_token_id) & (attention_mask == 1)] = MM_VIDEO
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_types,
        }


def _as_batch(
    messages_or_batch: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
) -> list[Sequence[Mapping[str, Any]]]:
    if len(messages_or_batch) == 0:
        raise ValueError("messages_or_batch is empty; pass a conversation or a list of them")
    first = messages_or_batch[0]
    if isinstance(first, Mapping):
        return [messages_or_batch]  # type: ignore[list-item]
    if any(len(conversation) == 0 for conversation in messages_or_batch):
        raise ValueError("a conversation in the batch is empty")
    return list(messages_or_batch)  # type: ignore[arg-type]
