"""A library built with a multimodal embedder (``--embedder``, ``app.embedders.ClipEmbedder``).

The tiny trained checkpoint stands in for a Qwen3-VL-Embedding model (the format is the same);
the model's captions are scripted, so each stored vector can be recomputed independently: the
segment's clip (decoded through the pipeline's clip plan) with its caption.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

import index
import vidlm
from app.embedders import EMBEDDER_ID_PREFIX, ClipEmbedder
from app.pipeline import Pipeline
from tests.app.conftest import cli_command, make_folder
from tests.app.test_pipeline import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def lm(tiny_model):
    return vidlm.load(tiny_model)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model, good_videos, lm):
    """A library of the good videos ingested with scripted captions and the clip embedder."""
    root = tmp_path_factory.mktemp("mm")
    folder = make_folder(root / "videos", good_videos, broken=False)
    original = lm.generate
    lm.generate = ScriptedModel()
    try:
        pipe = Pipeline(lm=lm, library=root / "lib", embedder_model=tiny_model)
        pipe.ingest_folder(folder)
    finally:
        lm.generate = original
    return pipe, index.Library.open(root / "lib")


def stored(lib: index.Library) -> dict[int, np.ndarray]:
    ids, vectors = index.vectors.stored_vectors(lib._index)
    return dict(zip(ids.tolist(), vectors, strict=True))


def test_each_segment_vector_embeds_its_clip_with_its_caption(built, tiny_model):
    pipe, lib = built
    assert lib.embedder_id == f"{EMBEDDER_ID_PREFIX}{tiny_model.name}" == pipe.embedder.id
    assert lib.dimension == 64
    vectors = stored(lib)
    rows = lib.segments.join(lib.catalog.select("video_id", "path"), on="video_id").to_dicts()
    assert len(rows) == len(vectors) >= 3
    model = pipe.embedder.model
    for row in rows:
        clip = pipe.embedder.read_clip(row["path"], row["start_seconds"], row["end_seconds"])
        seconds = np.asarray(clip.seconds)
        assert seconds[-1] - seconds[0] >= 1.0  # widened from the 0.6 s caption span
        assert seconds[0] <= row["start_seconds"] and row["end_seconds"] <= seconds[-1] + 0.5
        expected = model.embed([{"video": clip.frames, "timestamps": seconds - seconds[0],
                                 "text": row["caption"]}])[0].numpy()
        np.testing.assert_allclose(vectors[row["segment_id"]], expected, atol=1e-5)
        caption_only = model.embed([{"text": row["caption"]}])[0].numpy()
        assert float(caption_only @ vectors[row["segment_id"]]) < 0.9999


def test_queries_are_embedded_under_the_query_instruction(built):
    pipe, lib = built
    hits = pipe.localize("the red circle enters from the left", ground=0, k=50)
    model = pipe.embedder.model
    query = model.embed([{"text": "the red circle enters from the left",
                          "instruction": model.query_instruction}])[0].numpy()
    vectors = stored(lib)
    by_span = {(r["video_id"], r["start_seconds"]): r["segment_id"] for r in lib.segments.to_dicts()}
    assert hits
    for hit in hits:
        segment = by_span[(hit.video_id, hit.start_seconds)]
        assert hit.score == pytest.approx(float(query @ vectors[segment]), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_library_refuses_another_embedder_and_says_which(built, lm):
    pipe, lib = built
    other = Pipeline(lm=lm, library=lib.path)
    with pytest.raises(index.LibraryMismatchError, match=f"--embedder {pipe.embedder.model.model_id}"):
        other.localize("anything", ground=0)


def test_rebuild_reads_the_clips_again(built, tmp_path, tiny_model, lm):
    pipe, lib = built
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(lib.path, copy)
    (copy / "vectors.faiss").write_bytes(b"damaged")
    rebuilt = Pipeline(lm=lm, library=copy, embedder_model=tiny_model)
    rebuilt.rebuild()
    before, after = stored(lib), stored(index.Library.open(copy))
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_allclose(after[key], before[key], atol=1e-5)


def test_a_segment_whose_file_is_gone_is_embedded_from_its_caption(built, tmp_path):
    pipe, _ = built
    model = pipe.embedder.model
    doc = index.SegmentDocument(str(tmp_path / "gone.mp4"), 1.0, 2.0, "the blue square leaves")
    got = ClipEmbedder(model, pipe.embedder.read_clip).embed_segments([doc])
    np.testing.assert_allclose(got[0], model.embed([{"text": doc.caption}])[0].numpy(), atol=1e-6)


def test_cli_embedder_option_and_environment(tmp_path, tiny_model, good_videos):
    folder = make_folder(tmp_path / "videos", good_videos[:1], broken=False)
    lib = tmp_path / "lib"
    env = {**os.environ, "VIDLM_EMBEDDER": str(tiny_model)}
    run = lambda *args, **kw: subprocess.run(  # noqa: E731
        [*cli_command(), *args], capture_output=True, text=True, timeout=600, **kw)
    done = run("ingest", str(folder), "--library", str(lib), "--model", str(tiny_model),
               "--max-new-tokens", "8", "--embedder", str(tiny_model), "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(run("status", "--library", str(lib), "--json").stdout)
    assert status["embedder_id"] == f"{EMBEDDER_ID_PREFIX}{tiny_model.name}"
    found = run("localize", "anything", "--library", str(lib), "--model", str(tiny_model),
                "--ground", "0", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"]
    refused = run("localize", "anything", "--library", str(lib), "--ground", "0")
    assert refused.returncode != 0 and f"--embedder {tiny_model.name}" in refused.stderr


def test_the_web_app_backend_takes_the_embedder_from_the_environment(monkeypatch, tiny_model, tmp_path):
    from app.ui_backend import EMBEDDER_ENV, backend_from_env, backend_key

    monkeypatch.setenv("VIDLM_LIBRARY", str(tmp_path / "lib"))
    monkeypatch.delenv(EMBEDDER_ENV, raising=False)
    assert backend_from_env().pipe.embedder_model is None
    before = backend_key()
    monkeypatch.setenv(EMBEDDER_ENV, str(tiny_model))
    assert backend_from_env().pipe.embedder_model == str(tiny_model)
    assert backend_key() != before


@pytest.mark.parametrize(("value", "compiled"), [(None, False), ("1", True), ("true", True), ("0", False)])
def test_the_web_app_backend_takes_compile_from_the_environment(monkeypatch, tmp_path, value, compiled):
    from app.ui_backend import COMPILE_ENV, backend_from_env

    monkeypatch.setenv("VIDLM_LIBRARY", str(tmp_path / "lib"))
    if value is None:
        monkeypatch.delenv(COMPILE_ENV, raising=False)
    else:
        monkeypatch.setenv(COMPILE_ENV, value)
    assert backend_from_env().pipe.options.compile_decoding is compiled
