"""Processor: image pixels against the reference image processor; videos against the documented
rules (reference doc §5.2, §6.2-6.5, §6.8), since the reference video processor needs torchvision."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tokenizer  # noqa: E402

from vidlm.image_ops import (  # noqa: E402
    PixelNorm,
    patchify,
    resize_video_bicubic,
    smart_resize_image,
    smart_resize_video,
    video_max_total_pixels,
    video_to_patches,
)
from vidlm.processor import (  # noqa: E402
    Processor,
    ProcessorConfig,
    frame_pair_seconds,
    process_image,
    timestamp_text,
)
from vidlm.tokenizer import Tokenizer  # noqa: E402

pytest.importorskip("transformers")

HUB_VIDEO = dict(min_pixels=4096, max_pixels=25165824)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tok_dir)


def _processor(tok: Tokenizer, **kw) -> Processor:
    return Processor(tok, ProcessorConfig(**kw))


def _user(*parts) -> list[dict]:
    return [{"role": "user", "content": list(parts)}]


# ------------------------------------------------------------------------------ smart_resize
def test_image_smart_resize_matches_reference():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    assert smart_resize_image(70, 100, min_pixels=65536, max_pixels=16777216) == (224, 320)
    for h in (1, 7, 31, 48, 80, 333, 720, 1080, 4321):
        for w in (1, 16, 47, 100, 640, 1920, 7000):
            if max(h, w) / min(h, w) > 200:
                with pytest.raises(ValueError, match="aspect ratio"):
                    smart_resize_image(h, w, min_pixels=65536, max_pixels=16777216)
                continue
            for lo, hi in ((65536, 16777216), (4096, 200_000)):
                ref = smart_resize(h, w, factor=32, min_pixels=lo, max_pixels=hi)
                assert smart_resize_image(h, w, min_pixels=lo, max_pixels=hi) == ref


def test_video_smart_resize_matches_reference():
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    for n in (2, 3, 4, 9, 20, 120, 768):
        for h, w in ((10, 10), (20, 500), (64, 96), (240, 320), (1080, 1920), (2160, 3840)):
            for cap in (False, True):
                total = video_max_total_pixels(n, cap_pixels_per_frame=cap, **HUB_VIDEO)
                ref = smart_resize(
                    n, h, w, temporal_factor=2, factor=32, min_pixels=4096, max_pixels=total
                )
                assert smart_resize_video(n, h, w, min_pixels=4096, max_pixels=total) == ref
    with pytest.raises(ValueError, match="num_frames=1"):
        smart_resize_video(1, 64, 64, **HUB_VIDEO)


@pytest.mark.parametrize(
    ("seconds", "cap", "expected"),
    [  # reference doc §6.8, 1080p 30 fps, HF frame counts (2 fps, <= 768)
        (10, True, (640, 1152)),
        (10, False, (832, 1472)),
        (60, True, (320, 608)),
        (60, False, (320, 608)),
        (600, True, (128, 224)),
        (600, False, (128, 224)),
    ],
)
def test_video_budget_table(seconds, cap, expected):
    n = min(int(seconds * 30 / 30 * 2), 768)
    total = video_max_total_pixels(n, cap_pixels_per_frame=cap, **HUB_VIDEO)
    assert smart_resize_video(n, 1080, 1920, min_pixels=4096, max_pixels=total) == expected


def test_per_frame_ceiling_only_lowers():
    total = video_max_total_pixels(
        20, cap_pixels_per_frame=True, max_pixels_per_frame=100_000, **HUB_VIDEO
    )
    assert total == 2_000_000
    loose = video_max_total_pixels(
        20, cap_pixels_per_frame=True, max_pixels_per_frame=10**9, **HUB_VIDEO
    )
    assert loose == 768 * 1024 * 20


# -------------------------------------------------------------------------------- timestamps
def test_timestamp_text_rounds_half_to_even():
    assert [timestamp_text(t) for t in (0.25, 0.75, 1.45, 0.3, 12.0)] == [
        "<0.2 seconds>",
        "<0.8 seconds>",
        "<1.4 seconds>",
        "<0.3 seconds>",
        "<12.0 seconds>",
    ]
    assert frame_pair_seconds([0.0, 0.5]) == [0.25]
    assert timestamp_text(frame_pair_seconds([0.5, 1.0])[0]) == "<0.8 seconds>"


def test_pair_seconds_pad_odd_with_last_frame():
    assert frame_pair_seconds([0.0, 0.1, 0.2]) == [0.05, 0.2]
    assert frame_pair_seconds([7.0]) == [7.0]
    with pytest.raises(ValueError, match="timestamps is empty"):
        frame_pair_seconds([])


@pytest.mark.parametrize(
    ("indices", "fps"),
    [
        ([0, 6, 13, 19], 10.0),
        ([0, 6, 11, 16, 22, 28, 33, 38, 44], 10.0),
        ([3, 17, 31, 45, 59], 29.97),
    ],
)
def test_pair_seconds_match_reference(indices, fps):
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    expected = Qwen3VLProcessor._calculate_timestamps(None, list(indices), fps, 2)
    assert frame_pair_seconds([i / fps for i in indices]) == expected


# -------------------------------------------------------------------------------- patchify
def _slow_patchify(frames: torch.Tensor, p: int, tp: int, m: int) -> torch.Tensor:
    """Independent loop version of the §2.1 row order."""
    if frames.shape[0] % tp:
        frames = torch.cat([frames, frames[-1:].repeat(tp - frames.shape[0] % tp, 1, 1, 1)])
    t_count, _, h, w = frames.shape
    rows = []
    for t in range(t_count // tp):
        for bh in range(h // (p * m)):
            for bw in range(w // (p * m)):
                for mh in range(m):
                    for mw in range(m):
                        y, x = (bh * m + mh) * p, (bw * m + mw) * p
                        block = frames[
                            t * tp : (t + 1) * tp, :, y : y + p, x : x + p
                        ]  # [tp, C, p, p]
                        rows.append(block.permute(1, 0, 2, 3).reshape(-1))
    return torch.stack(rows)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 4])
def test_patchify_order_matches_slow_loop(num_frames):
    frames = torch.randn(num_frames, 3, 32, 96, generator=torch.Generator().manual_seed(num_frames))
    rows, grid = patchify(frames, patch_size=8, temporal_patch_size=2, merge_size=2)
    assert grid == ((num_frames + 1) // 2, 4, 12)
    torch.testing.assert_close(rows, _slow_patchify(frames, 8, 2, 2), rtol=0, atol=0)


# ---------------------------------------------------------------------------- image pixels
def _reference_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )


def _images():
    rng = np.random.default_rng(0)
    noise = lambda *shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
    gradient = np.linspace(0, 255, 300 * 500 * 3).reshape(300, 500, 3).astype(np.uint8)
    return {
        "tiny_4x5": noise(4, 5, 3),
        "exact_grid_256": noise(256, 256, 3),
        "photo_480x640": gradient[:, :, :].repeat(2, 0)[:480, :, :].copy(),
        "very_wide_20x3000": noise(20, 3000, 3),
        "tall_1000x700": noise(1000, 700, 3),
        "rgba_array": noise(50, 80, 4),
        "gray_array": noise(60, 90, 1),
        "pil_rgba": PIL.Image.fromarray(noise(50, 80, 4), "RGBA"),
        "pil_gray": PIL.Image.fromarray(noise(70, 40), "L"),
        "pil_palette": PIL.Image.fromarray(noise(40, 60, 3), "RGB").convert("P"),
    }


@pytest.mark.parametrize("name", list(_images()))
def test_image_pixels_match_reference(name):
    image = _images()[name]
    kw = {} if isinstance(image, PIL.Image.Image) else {"input_data_format": "channels_last"}
    ref = _reference_image_processor()(images=[image], return_tensors="pt", **kw)
    ours = process_image(image, ProcessorConfig())
    assert list(ours.grid_thw) == ref["image_grid_thw"][0].tolist()
    assert ours.patches.dtype == torch.float32
    assert (ours.patches - ref["pixel_values"]).abs().max().item() <= 1e-5


def test_image_torch_input_and_bad_dtype():
    array = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    a = process_image(array, ProcessorConfig())
    b = process_image(torch.from_numpy(array), ProcessorConfig())
    assert torch.equal(a.patches, b.patches)
    with pytest.raises(ValueError, match="dtype=float32"):
        process_image(array.astype(np.float32), ProcessorConfig())


# ------------------------------------------------------------------------------- video
def _worked_example_video():
    """§5.2 / §12: 20 frames 64x96 at 10 fps, sampled by the reference at indices 0, 6, 13, 19."""
    frames = np.random.default_rng(2).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    return frames, [i / 10.0 for i in (0, 6, 13, 19)]


def _expected_ids(tok: Tokenizer, layout: str, question: str) -> list[int]:
    vs, ve, vp = (
        tok.token_to_id(t) for t in ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>")
    )
    video: list[int] = []
    for seconds in ("<0.3 seconds>", "<1.6 seconds>"):
        video += tok.encode(seconds) + [vs] + [vp] * 6 + [ve]
    if layout == "transformers":
        video = [vs] + video + [ve]
    im_start, im_end = tok.token_to_id("<|im_start|>"), tok.token_to_id("<|im_end|>")
    return (
        [im_start]
        + tok.encode("user\n")
        + video
        + tok.encode(question)
        + [im_end]
        + tok.encode("\n")
        + [im_start]
        + tok.encode("assistant\n")
    )


@pytest.mark.parametrize("layout", ["qwen", "transformers"])
def test_video_worked_example_prompt(tok, layout):
    frames, seconds = _worked_example_video()
    proc = _processor(tok, video_prompt_layout=layout)
    out = proc(
        _user(
            {"type": "video", "video": frames, "timestamps": seconds},
            {"type": "text", "text": "When?"},
        )
    )
    assert out["video_grid_thw"].tolist() == [[2, 4, 6]]
    assert out["pixel_values_videos"].shape == (2 * 4 * 6, 3 * 2 * 16 * 16)
    ids = out["input_ids"][0].tolist()
    assert ids == _expected_ids(tok, layout, "When?")
    # §5.2: in the 5.x layout the first frame pair starts after 21 text tokens.
    first_pad = ids.index(tok.token_to_id("<|video_pad|>"))
    assert first_pad == (21 if layout == "transformers" else 20)
    types = out["mm_token_type_ids"][0]
    assert types.tolist() == [2 if i == tok.token_to_id("<|video_pad|>") else 0 for i in ids]
    assert out["attention_mask"].tolist() == [[1] * len(ids)]
    assert "pixel_values" not in out and "image_grid_thw" not in out


def test_video_pixels_follow_the_rules(tok):
    frames, seconds = _worked_example_video()
    out = _processor(tok)(
        _user({"type": "video", "video": torch.from_numpy(frames), "timestamps": seconds})
    )
    # 64x96 already fits the Hub budget: no resize, so the pixels are exactly (x/255 - .5)/.5.
    normalized = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - 127.5) / 127.5
    expected, grid = patchify(normalized, patch_size=16, temporal_patch_size=2, merge_size=2)
    assert grid == (2, 4, 6)
    torch.testing.assert_close(out["pixel_values_videos"], expected, rtol=0, atol=1e-6)


def test_video_odd_frames_resize_and_channels_first(tok):
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (5, 3, 100, 150), dtype=np.uint8)  # [T, 3, H, W] also accepted
    out = _processor(tok)(_user({"type": "video", "video": frames, "timestamps": [0, 1, 2, 3, 4]}))
    height, width = smart_resize_video(5, 100, 150, **HUB_VIDEO)
    assert out["video_grid_thw"].tolist() == [[3, height // 16, width // 16]]
    text = tok.decode(out["input_ids"][0].tolist())
    assert "<0.5 seconds>" in text and "<2.5 seconds>" in text and "<4.0 seconds>" in text
    values = out["pixel_values_videos"]
    assert values.min() >= -1 and values.max() <= 1
    # The repeated last frame: the last pair's two temporal halves are equal.
    last = values[-(height // 16) * (width // 16) :].reshape(-1, 3, 2, 16, 16)
    torch.testing.assert_close(last[:, :, 0], last[:, :, 1], rtol=0, atol=0)


@pytest.mark.parametrize("source, target", [((50, 70), (64, 96)), ((360, 640), (224, 384))])
def test_video_resize_is_torchvision_uint8_bicubic(source, target):
    # torchvision v2 resizes uint8 frames on CPU with the native fixed-point kernel, which
    # clamps between its two passes like PIL: on noise it stays within one level of PIL's
    # bicubic, where a float32 resize rounded afterwards is off by ten levels or more.
    frames = np.random.default_rng(4).integers(0, 256, (3, *source, 3), dtype=np.uint8)
    resized = resize_video_bicubic(torch.from_numpy(frames).permute(0, 3, 1, 2), *target)
    assert resized.dtype == torch.uint8 and resized.shape == (3, 3, *target)
    pil = np.stack(
        [np.asarray(PIL.Image.fromarray(f).resize(target[::-1], PIL.Image.BICUBIC)) for f in frames]
    )
    diff = np.abs(resized.permute(0, 2, 3, 1).numpy().astype(int) - pil.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02
    same = torch.from_numpy(frames).permute(0, 3, 1, 2)
    assert resize_video_bicubic(same, *source) is same


def test_video_to_patches_equals_normalise_then_patchify():
    frames = torch.randint(
        0, 256, (3, 3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(5)
    )
    mean, std = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)
    shape = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    rows, grid = video_to_patches(frames, 64, 96, norm=PixelNorm(mean, std, 1 / 255), **shape)
    raw, raw_grid = video_to_patches(frames, 64, 96, norm=None, **shape)
    resized = resize_video_bicubic(frames, 64, 96).float()
    scale = torch.tensor(std)[:, None, None] * 255
    normalized = (resized - torch.tensor(mean)[:, None, None] * 255) / scale
    expected, expected_grid = patchify(normalized, patch_size=16, temporal_patch_size=2, merge_size=2)
    assert grid == expected_grid == raw_grid == (2, 4, 6)
    torch.testing.assert_close(rows, expected, rtol=0, atol=0)
    # uint8 rows are the resized pixels themselves; normalising them later gives the same rows
    assert raw.dtype == torch.uint8
    torch.testing.assert_close(raw.float(), patchify(resized, **shape)[0], rtol=0, atol=0)
    torch.testing.assert_close(PixelNorm(mean, std, 1 / 255)(raw), rows, rtol=0, atol=0)


def test_video_errors(tok):
    frames, seconds = _worked_example_video()
    proc = _processor(tok)
    with pytest.raises(ValueError, match="'timestamps'"):
        proc(_user({"type": "video", "video": frames}))
    with pytest.raises(ValueError, match="len\\(timestamps\\)=3"):
        proc(_user({"type": "video", "video": frames, "timestamps": seconds[:3]}))
    with pytest.raises(ValueError, match="dtype"):
        proc(_user({"type": "video", "video": frames.astype(np.float32), "timestamps": seconds}))


# ------------------------------------------------------------------------------- batches
def _mixed_conversations():
    rng = np.random.default_rng(5)
    image_a = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    image_b = rng.integers(0, 256, (40, 300, 3), dtype=np.uint8)
    frames, seconds = _worked_example_video()
    first = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image_a},
                {"type": "video", "video": frames, "timestamps": seconds},
                {"type": "text", "text": "Compare."},
            ],
        },
    ]
    second = _user({"type": "image", "image": image_b}, {"type": "text", "text": "Hi"})
    return [first, second], [image_a, image_b]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_padding_and_order(tok, side):
    batch, images = _mixed_conversations()
    proc = _processor(tok)
    out = proc(batch, padding_side=side)
    singles = [proc(conversation) for conversation in batch]
    pad = tok.pad_token_id
    length = out["input_ids"].shape[1]
    for row, single in enumerate(singles):
        n = single["input_ids"].shape[1]
        cols = slice(length - n, length) if side == "left" else slice(0, n)
        pads = slice(0, length - n) if side == "left" else slice(n, length)
        for key in ("input_ids", "mm_token_type_ids"):
            assert torch.equal(out[key][row, cols], single[key][0])
        assert (
            out["attention_mask"][row, cols].eq(1).all()
            and out["attention_mask"][row, pads].eq(0).all()
        )
        assert (
            out["input_ids"][row, pads].eq(pad).all()
            and out["mm_token_type_ids"][row, pads].eq(0).all()
        )
    ref = _reference_image_processor()(
        images=images, return_tensors="pt", input_data_format="channels_last"
    )
    assert torch.equal(out["image_grid_thw"], ref["image_grid_thw"])
    assert (out["pixel_values"] - ref["pixel_values"]).abs().max().item() <= 1e-5
    assert out["video_grid_thw"].tolist() == [[2, 4, 6]]
    image_id = tok.token_to_id("<|image_pad|>")
    assert (
        int((out["input_ids"] == image_id).sum()) == int(out["image_grid_thw"].prod(-1).sum()) // 4
    )
    assert torch.equal(out["mm_token_type_ids"] == 1, out["input_ids"] == image_id)
    for key in (
        "input_ids",
        "attention_mask",
        "mm_token_type_ids",
        "image_grid_thw",
        "video_grid_thw",
    ):
        assert out[key].dtype == torch.int64


def test_vision_ids_and_text_only(tok):
    proc = _processor(tok)
    image = np.zeros((64, 64, 3), np.uint8)
    out = proc(
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": image}, {"type": "image", "image": image}],
            }
        ],
    )
    text_only = proc([{"role": "user", "content": "hello"}], add_generation_prompt=False)
    assert set(text_only) == {"input_ids", "attention_mask", "mm_token_type_ids"}
    assert tok.decode(text_only["input_ids"][0].tolist()) == "<|im_start|>user\nhello<|im_end|>\n"
    assert out["image_grid_thw"].tolist() == [[1, 16, 16], [1, 16, 16]]
    frames, seconds = _worked_example_video()
    video = _user({"type": "video", "video": frames, "timestamps": seconds})
    labelled = tok.decode(proc(video, add_vision_id=True)["input_ids"][0].tolist())
    assert labelled.startswith("<|im_start|>user\nVideo 1: <0.3 seconds><|vision_start|>")


def test_processor_errors(tok):
    proc = _processor(tok)
    with pytest.raises(ValueError, match="padding_side='middle'"):
        proc(_user({"type": "text", "text": "x"}), padding_side="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1 image and 0 video placeholders"):
        proc(_user({"type": "text", "text": "sneaky <|image_pad|>"}))
    with pytest.raises(ValueError, match="messages_or_batch is empty"):
        proc([])
    with pytest.raises(ValueError, match="video_prompt_layout='legacy'"):
        ProcessorConfig(video_prompt_layout="legacy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image_min_pixels=10, image_max_pixels=5"):
        ProcessorConfig(image_min_pixels=10, image_max_pixels=5)


# ------------------------------------------------------------------------------ from_dir
def test_config_from_dir(tmp_path, tok_dir):
    assert ProcessorConfig.from_dir(tmp_path) == ProcessorConfig()
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                **common,
                "size": {"shortest_edge": 1000, "longest_edge": 2000000},
                "max_pixels": 3000000,
            }
        )
    )
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({**common, "size": {"shortest_edge": 4096, "longest_edge": 999424}, "fps": 2})
    )
    config = ProcessorConfig.from_dir(tmp_path, video_prompt_layout="transformers")
    assert (config.image_min_pixels, config.image_max_pixels) == (1000, 3000000)
    assert (config.video_min_pixels, config.video_max_pixels) == (4096, 999424)
    assert config.video_prompt_layout == "transformers" and config.factor == 32
    with pytest.raises(ValueError, match="unknown ProcessorConfig fields \\['bogus'\\]"):
        ProcessorConfig.from_dir(tmp_path, bogus=1)
    (tmp_path / "video_preprocessor_config.json").write_text(
        json.dumps({**common, "patch_size": 14})
    )
    with pytest.raises(ValueError, match="patch_size differs"):
        ProcessorConfig.from_dir(tmp_path)
    proc = Processor.from_dir(tok_dir)
    assert proc.config == ProcessorConfig() and proc.image_token_id == proc.tokenizer.token_to_id(
        "<|image_pad|>"
    )
