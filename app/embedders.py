"""The library's multimodal embedder: a Qwen3-VL-Embedding model over segments' clips.

``ClipEmbedder`` is an ``index.SegmentEmbedder``: a segment's vector embeds its span of the
video (frames sampled by the pipeline, times counted from the clip's first frame) together
with its caption, in the model's default "Represent the user's input." wording; a search
query is embedded as text under the model's query instruction. So a library built with it is
searched by what the videos show, not only by what the captions say.

Unusual here: a segment whose file can no longer be read (a rebuild after the file went away)
is embedded from its caption alone, with a warning, so the rest of the library still rebuilds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

import index
import ingest

if TYPE_CHECKING:
    import vidlm

log = logging.getLogger(__name__)

EMBEDDER_ID_PREFIX = "qwen3-vl-embedding:"

# (path, start seconds, end seconds) -> the span's frames with their absolute seconds.
ClipReader = Callable[[str, float, float], ingest.FrameBatch]


class ClipEmbedder:
    """``index.SegmentEmbedder`` over ``vidlm.VideoEmbedder``.

    Args:
        model: the loaded embedding model.
        read_clip: decodes a span of a file (the pipeline samples it for the model).
    """

    def __init__(self, model: vidlm.VideoEmbedder, read_clip: ClipReader) -> None:
        self.model = model
        self.read_clip = read_clip

    @property
    def id(self) -> str:
        """``qwen3-vl-embedding:<checkpoint folder name>``."""
        return f"{EMBEDDER_ID_PREFIX}{self.model.model_id}"

    @property
    def dim(self) -> int:
        return self.model.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Texts as documents, float32 ``[N, dim]``."""
        return self.model.embed([{"text": t} for t in texts]).numpy()

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Search queries under the model's query instruction, float32 ``[N, dim]``."""
        return self.model.embed_queries(texts).numpy()

    def embed_segments(self, documents: Sequence[index.SegmentDocument]) -> np.ndarray:
        """Each segment's clip (with its caption), float32 ``[N, dim]``."""
        return self.model.embed([self._input(d) for d in documents]).numpy()

    def _input(self, doc: index.SegmentDocument) -> dict[str, object]:
        try:
            batch = self.read_clip(doc.path, doc.start_seconds, doc.end_seconds)
        except (OSError, ingest.VideoError, ValueError) as err:
            log.warning("%s [%.2f, %.2f] s: embedding the caption alone: %s",
                        doc.path, doc.start_seconds, doc.end_seconds, err)
            return {"text": doc.caption}
        if not len(batch):
            return {"text": doc.caption}
        seconds = np.asarray(batch.seconds, np.float64)
        return {"text": doc.caption, "video": batch.frames, "timestamps": seconds - seconds[0]}
