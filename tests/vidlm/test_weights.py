"""Checkpoint loading: layouts the reference writes or the hub ships, and every error path."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
pytest.importorskip("transformers")
import tiny  # noqa: E402

from vidlm.weights import CheckpointError, build_model, resolve_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dense")
    tiny.build_reference_checkpoint(folder, seed=3)
    return folder


@pytest.fixture(scope="module")
def moe_ref(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moe")
    return tiny.build_reference_checkpoint(folder, seed=4, moe=True), folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(folder, out)
    return out


def edit_weights(folder: Path, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


IDS = torch.arange(3, 40).view(1, -1)


def test_loading_uses_every_key_and_is_idempotent(dense_dir):
    a, b = build_model(dense_dir), build_model(dense_dir)
    stored = load_file(str(dense_dir / "model.safetensors"))
    assert set(a.state_dict()) == set(stored)
    for key, tensor in stored.items():
        assert torch.equal(a.state_dict()[key], tensor), key
    assert torch.equal(logits_of(a, IDS), logits_of(b, IDS))


def test_sharded_checkpoint_with_index(dense_dir, tmp_path):
    ref = transformers_model(dense_dir)
    out = tmp_path / "sharded"
    ref.save_pretrained(out, max_shard_size="200KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(dense_dir / name, out / name)
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("model-*.safetensors"))) > 1
    assert torch.equal(logits_of(build_model(out), IDS), logits_of(build_model(dense_dir), IDS))


def transformers_model(folder: Path):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(folder).eval()


def test_first_release_moe_expert_layout_gives_identical_logits(moe_ref, tmp_path):
    ref, folder = moe_ref
    hub = copy_of(folder, tmp_path)

    def to_hub_layout(state):
        for key in [k for k in state if k.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
            state[key] = state[key].transpose(1, 2).contiguous()

    edit_weights(hub, to_hub_layout)
    edit_config(hub, lambda raw: raw.update(transformers_version="4.57.1"))
    with torch.no_grad():
        expected = ref(input_ids=IDS).logits
    assert torch.equal(logits_of(build_model(hub), IDS), logits_of(build_model(folder), IDS))
    assert (logits_of(build_model(hub), IDS) - expected).abs().max() < 1e-5


def test_first_release_layout_with_wrong_shapes_is_an_error(moe_ref, tmp_path):
    _, folder = moe_ref
    bad = copy_of(folder, tmp_path)
    edit_config(bad, lambda raw: raw.update(transformers_version="4.57.1"))  # but 5.x layout inside
    with pytest.raises(CheckpointError, match=r"wrong shapes .*experts\.gate_up_proj"):
        build_model(bad)


def test_tied_checkpoint_with_and_without_lm_head(tmp_path):
    folder = tmp_path / "tied"
    ref = tiny.build_reference_checkpoint(folder, seed=5, tie=True)
    assert "lm_head.weight" not in load_file(str(folder / "model.safetensors"))
    plain = build_model(folder)
    assert plain.lm_head.weight is plain.model.language_model.embed_tokens.weight

    def add_head(state):
        state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"].clone()

    edit_weights(folder, add_head)
    with_head = build_model(folder)
    with torch.no_grad():
        expected = ref(input_ids=IDS).logits
    assert (logits_of(with_head, IDS) - expected).abs().max() < 1e-5
    assert torch.equal(logits_of(with_head, IDS), logits_of(plain, IDS))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_load(dense_dir, dtype):
    full, half = build_model(dense_dir), build_model(dense_dir, dtype=dtype)
    assert all(p.dtype == dtype for p in half.parameters())
    a, b = logits_of(full, IDS)[0], logits_of(half, IDS)[0].float()
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cosine.min() > 0.999
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9


def test_missing_key_is_named(dense_dir, tmp_path):
    bad = copy_of(dense_dir, tmp_path)
    edit_weights(bad, lambda s: s.pop("model.language_model.layers.1.self_attn.q_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \[model\.language_model\.layers\.1\.self_attn\.q_norm\.weight\]"):
        build_model(bad)


def test_unexpected_key_is_named(dense_dir, tmp_path):
    bad = copy_of(dense_dir, tmp_path)
    edit_weights(bad, lambda s: s.update({"model.visual.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \[model\.visual\.extra\.weight\]"):
        build_model(bad)


def test_wrong_shape_is_named(dense_dir, tmp_path):
    bad = copy_of(dense_dir, tmp_path)
    edit_weights(bad, lambda s: s.update({"model.language_model.norm.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError, match=r"wrong shapes \[model\.language_model\.norm\.weight: checkpoint \(65,\) vs model \(64,\)\]"):
        build_model(bad)


def test_bad_config_value_names_the_field(dense_dir, tmp_path):
    bad = copy_of(dense_dir, tmp_path)
    edit_config(bad, lambda raw: raw["text_config"].update(num_key_value_heads=3))
    with pytest.raises(CheckpointError, match=r"config\.json: text_config\.num_key_value_heads=3"):
        build_model(bad)


def test_unknown_config_key_is_an_error(dense_dir, tmp_path):
    bad = copy_of(dense_dir, tmp_path)
    edit_config(bad, lambda raw: raw["vision_config"].update(window_attention_layers=[1]))
    with pytest.raises(CheckpointError, match=r"vision_config: unknown keys \['window_attention_layers'\]"):
        build_model(bad)


def test_missing_files(dense_dir, tmp_path):
    no_config = copy_of(dense_dir, tmp_path)
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        resolve_checkpoint(no_config)
    (tmp_path / "w").mkdir()
    shutil.copy(dense_dir / "config.json", tmp_path / "w" / "config.json")
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        build_model(tmp_path / "w")


def test_missing_shard_listed_in_index(dense_dir, tmp_path):
    out = tmp_path / "sharded"
    transformers_model(dense_dir).save_pretrained(out, max_shard_size="200KB")
    victim = sorted(out.glob("model-*.safetensors"))[0]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing: \\['{victim.name}'\\]"):
        build_model(out)


def test_hub_id_offline_says_how_to_pass_a_folder(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointError, match=r"could not download 'Qwen/Qwen3-VL-2B-Instruct'.*pass that folder"):
        resolve_checkpoint("Qwen/Qwen3-VL-2B-Instruct")


def test_not_a_folder_nor_a_repo_id():
    with pytest.raises(CheckpointError, match="no such folder, and not a hub repo id"):
        resolve_checkpoint("/definitely/not/here")


def test_hub_download_checks_the_snapshot_is_complete(monkeypatch, dense_dir, tmp_path):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    transformers_model(dense_dir).save_pretrained(snapshot, max_shard_size="200KB")
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, tuple(allow_patterns)))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_checkpoint("org/model", revision="main") == snapshot
    assert calls[0][:2] == ("org/model", "main") and "*.safetensors" in calls[0][2]
    sorted(snapshot.glob("model-*.safetensors"))[-1].unlink()
    with pytest.raises(CheckpointError, match="download of 'org/model' is incomplete"):
        resolve_checkpoint("org/model")
