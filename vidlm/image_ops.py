"""Pure pixel functions of the processor: smart_resize, RGB conversion, resize, normalise, patchify.

What is unusual here:
- Images and videos are resized by different code on purpose. Images go through PIL (bicubic,
  PIL's own antialiasing, uint8 in and out), which is what the reference image processor does when
  no torchvision is installed, so our pixels match it to float rounding. Videos are resized in
  bulk with ``F.interpolate(bicubic, antialias=True)`` exactly as torchvision v2 ``resize`` does
  for uint8 frames: its native fixed-point uint8 kernel on CPU, float32 rounded back to uint8
  values elsewhere.
- The two smart_resize rules differ: the video one budgets pixels over *all* frames and first
  upscales frames whose shorter side is below the factor; the image one does neither.
- Rounding uses Python's ``round`` (ties to even), exactly like the reference.
- Image rescaling is done in float64 and cast to float32 before normalising, as the reference
  does; videos use the fused ``(x - 255*mean) / (255*std)`` in float32 like the reference's
  tensor backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

MAX_ASPECT_RATIO = 200
# Resize this many frames at a time: float32 1080p frames are 25 MB each.
VIDEO_RESIZE_CHUNK_FRAMES = 16


# ---------------------------------------------------------------------------- smart_resize
def _check_aspect(height: int | float, width: int | float) -> None:
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio of height={height}, width={width} is {ratio:.1f}; "
            f"must be at most {MAX_ASPECT_RATIO}"
        )


def smart_resize_image(
    height: int, width: int, *, factor: int = 32, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Target (height, width) of an image: multiples of ``factor``, area in [min, max] pixels.

    Raises:
        ValueError: aspect ratio above 200.
    """
    _check_aspect(height, width)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def smart_resize_video(
    num_frames: int,
    height: int,
    width: int,
    *,
    factor: int = 32,
    temporal_factor: int = 2,
    min_pixels: int,
    max_pixels: int,
) -> tuple[int, int]:
    """Target (height, width) of every frame; ``min/max_pixels`` bound the sum over all frames.

    Raises:
        ValueError: fewer than ``temporal_factor`` frames, or aspect ratio above 200.
    """
    if num_frames < temporal_factor:
        raise ValueError(
            f"num_frames={num_frames}; a video needs at least {temporal_factor} frames"
        )
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    _check_aspect(height, width)
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def video_max_total_pixels(
    num_frames: int,
    *,
    min_pixels: int,
    max_pixels: int,
    cap_pixels_per_frame: bool,
    max_tokens_per_frame: int = 768,
    factor: int = 32,
    max_pixels_per_frame: int | None = None,
) -> int:
    """The total pixel ceiling handed to ``smart_resize_video`` for ``num_frames`` frames.

    With ``cap_pixels_per_frame`` each frame gets ``max(min(tokens*factor², max//n), int(1.05*min))``
    pixels (the reference's opt-in cap), so short clips do not spend the whole budget on few frames.
    ``max_pixels_per_frame`` can only lower the result further.
    """
    total = max_pixels
    if cap_pixels_per_frame:
        frame_cap = max_tokens_per_frame * factor * factor
        per_frame = max(min(frame_cap, max_pixels // num_frames), int(min_pixels * 1.05))
        total = per_frame * num_frames
    if max_pixels_per_frame is not None:
        total = min(total, max_pixels_per_frame * num_frames)
    return total


# ------------------------------------------------------------------------------- images
def image_to_rgb_array(image: Any) -> np.ndarray:
    """An image as uint8 ``[H, W, 3]``; alpha is composited on white, gray is repeated.

    Accepts a PIL image (any mode) or a uint8 array/tensor ``[H, W]``, ``[H, W, 1|3|4]``.

    Raises:
        ValueError: wrong dtype or shape.
    """
    if isinstance(image, PIL.Image.Image):
        return _pil_to_rgb(image)
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image dtype={array.dtype}; expected uint8 (or a PIL image)")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"image shape={tuple(array.shape)}; expected [H, W], or [H, W, C] with C in 1, 3, 4"
        )
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.shape[-1] == 4:
        alpha = array[..., 3:4] / 255  # float64, like the reference's numpy compositing
        return np.round(alpha * array[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def _pil_to_rgb(image: PIL.Image.Image) -> np.ndarray:
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if not has_alpha:
        return np.asarray(image.convert("RGB"))
    rgba = image.convert("RGBA")
    white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(PIL.Image.alpha_composite(white, rgba).convert("RGB"))


def resize_image_bicubic(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """PIL bicubic resize of uint8 ``[H, W, 3]`` to ``[height, width, 3]`` (uint8)."""
    resized = PIL.Image.fromarray(rgb).resize(
        (width, height), resample=PIL.Image.Resampling.BICUBIC
    )
    return np.asarray(resized)


def normalize_image(
    rgb: np.ndarray, *, mean: Sequence[float], std: Sequence[float], rescale_factor: float
) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]``: ``(x * rescale - mean) / std``."""
    chw = np.moveaxis(rgb, -1, 0)
    scaled = (chw.astype(np.float64) * rescale_factor).astype(np.float32)
    mean_arr = np.asarray(mean, dtype=np.float32)[:, None, None]
    std_arr = np.asarray(std, dtype=np.float32)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray((scaled - mean_arr) / std_arr))


# ------------------------------------------------------------------------------- videos
def video_to_tchw(frames: Any) -> torch.Tensor:
    """Frames as a uint8 tensor ``[T, 3, H, W]``.

    Accepts numpy or torch uint8 ``[T, H, W, 3]`` (the processor's documented layout) or
    ``[T, 3, H, W]`` (used when the last dim is not 3).

    Raises:
        ValueError: wrong dtype or shape.
    """
    tensor = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.asarray(frames))
    if tensor.dtype != torch.uint8:
        raise ValueError(f"video dtype={tensor.dtype}; expected uint8")
    if tensor.ndim != 4 or 3 not in (tensor.shape[-1], tensor.shape[1]):
        raise ValueError(
            f"video shape={tuple(tensor.shape)}; expected [T, H, W, 3] or [T, 3, H, W]"
        )
    if tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 3, 1, 2)  # [T, H, W, 3] -> [T, 3, H, W]
    return tensor


def resize_video_bicubic(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Antialiased bicubic resize of uint8 ``[T, 3, H, W]`` to uint8 ``[T, 3, height, width]``.

    What torchvision v2 ``resize`` does, so the reference's pixels are ours: on CPU its native
    uint8 kernel (fixed point, vectorised; ~15x faster than the float path), elsewhere float32
    interpolation clamped and rounded back to uint8. Frames are resized ``VIDEO_RESIZE_CHUNK_FRAMES``
    at a time, so no float copy of the whole video ever exists.
    """
    if frames.dtype != torch.uint8:
        raise ValueError(f"video dtype={frames.dtype}; expected uint8")
    if tuple(frames.shape[-2:]) == (height, width):
        return frames
    out = torch.empty((frames.shape[0], frames.shape[1], height, width), dtype=torch.uint8, device=frames.device)
    native = frames.device.type == "cpu"
    for start in range(0, frames.shape[0], VIDEO_RESIZE_CHUNK_FRAMES):
        chunk = frames[start : start + VIDEO_RESIZE_CHUNK_FRAMES]
        if native:
            resized = F.interpolate(chunk, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        else:
            resized = F.interpolate(
                chunk.to(torch.float32), size=(height, width), mode="bicubic", align_corners=False, antialias=True
            ).clamp_(0, 255).round_()
        out[start : start + chunk.shape[0]] = resized
    return out


def normalize_patches(
    rows: torch.Tensor, *, channels: int, mean: Sequence[float], std: Sequence[float], rescale_factor: float
) -> torch.Tensor:
    """uint8 patch rows (``patchify`` of uint8 frames) -> normalised float32 rows.

    ``(x - 255*mean) / (255*std)`` in float32, like the reference's tensor backend (rescale fused
    into mean/std), applied after ``patchify`` rather than before: cutting patches out of uint8
    moves a quarter of the bytes, and the float rows are written once and normalised in place.
    """
    mean_t = torch.tensor(mean, dtype=torch.float32, device=rows.device) * (1.0 / rescale_factor)
    std_t = torch.tensor(std, dtype=torch.float32, device=rows.device) * (1.0 / rescale_factor)
    out = rows.to(torch.float32, memory_format=torch.contiguous_format)
    per_channel = out.view(out.shape[0], channels, -1)
    per_channel.sub_(mean_t[:, None]).div_(std_t[:, None])
    return out


@dataclass(frozen=True)
class PixelNorm:
    """How uint8 patch rows become the vision tower's input: ``(x * rescale - mean) / std`` per channel.

    The defaults are the released Qwen3-VL checkpoints' (mean = std = 0.5, rescale 1/255).
    """

    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 rows [N, C*tp*p*p] -> float32 rows, exactly as ``normalize_patches``."""
        return normalize_patches(
            rows, channels=len(self.mean), mean=self.mean, std=self.std, rescale_factor=self.rescale_factor
        )


# ------------------------------------------------------------------------------ patchify
def patchify(
    frames: torch.Tensor, *, patch_size: int, temporal_patch_size: int, merge_size: int
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Cut ``[T, C, H, W]`` into rows of ``C*tp*p*p`` values in the vision tower's order.

    Rows go temporal patch, merge-block row, merge-block column, row in block, column in block;
    each row is flattened as (channel, temporal, py, px). A T that is not a multiple of
    ``temporal_patch_size`` is padded by repeating the last frame (an image, T=1, is duplicated).

    Returns:
        patches ``[grid_t*grid_h*grid_w, C*tp*p*p]`` and ``(grid_t, grid_h, grid_w)``.
    """
    num_frames, channels, height, width = frames.shape
    block = patch_size * merge_size
    if height % block or width % block:
        raise ValueError(f"frame size {height}x{width} is not a multiple of patch*merge={block}")
    if pad := -num_frames % temporal_patch_size:
        frames = torch.cat([frames, frames[-1:].expand(pad, -1, -1, -1)])
    grid_t = frames.shape[0] // temporal_patch_size
    grid_h, grid_w = height // patch_size, width // patch_size
    m, p = merge_size, patch_size
    x = frames.reshape(grid_t, temporal_patch_size, channels, grid_h // m, m, p, grid_w // m, m, p)
    # [t, tp, C, bh, mh, py, bw, mw, px] -> [t, bh, bw, mh, mw, C, tp, py, px]
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    rows = x.reshape(grid_t * grid_h * grid_w, channels * temporal_patch_size * p * p)
    return rows, (grid_t, grid_h, grid_w)


def video_to_patches(
    frames: torch.Tensor,
    height: int,
    width: int,
    *,
    norm: PixelNorm | None,
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """uint8 ``[T, 3, H, W]`` -> patch rows at ``height`` x ``width`` and the grid.

    The whole video pipeline in bulk: resize (uint8), cut patches (uint8), then normalise with
    ``norm`` to float32; with ``norm=None`` the rows stay uint8 (a quarter of the bytes) for a
    vision tower that normalises them itself, chunk by chunk (``VisionModel.pixel_norm``).
    """
    resized = resize_video_bicubic(frames, height, width)
    rows, grid = patchify(
        resized, patch_size=patch_size, temporal_patch_size=temporal_patch_size, merge_size=merge_size
    )
    if norm is None:
        return rows.contiguous(), grid
    return norm(rows), grid
