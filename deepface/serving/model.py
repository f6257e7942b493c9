"""A serving directory (`deepface.serving.export`) loaded for use: face crops in, embeddings and decisions out.

`ServingModel.load(uri)` reads ``serving.json`` and the SavedModel from a local directory or ``gs://`` (through
tf.io.gfile). It cuts faces with `deepface.faces.FaceCropper` and embeds and scores them with the very
functions `deepface.api.FaceVerifier` and ``deepface evaluate`` use (`deepface.data.scale_image`,
`deepface.embedding.model_views` and ``merge_views``, `deepface.scoring.decide`), so a server's answer is the
Python API's, up to the SavedModel's float rounding (< 1e-5).

Example::

    model = ServingModel.load("gs://bucket/serving")
    cropper = model.cropper()
    crops = np.stack([cropper(name, data)[0] for name, data in images])  # uint8 [N, S, S, 3]
    model.decide(*model.embed_crops(crops[:2]))  # {"score": "cosine", "value": ..., "same": ...}
"""

from __future__ import annotations

import logging
import os
import posixpath
import time

import numpy as np

from deepface import files
from deepface.contracts import MANIFEST_FILE
from deepface.embedding import merge_views, model_views
from deepface.errors import DeepFaceError
from deepface.faces import FaceCropper
from deepface.scoring import decide
from deepface.serving.export import INPUT_NAME, OUTPUT_NAME, SERVING_FILE, SIGNATURE

logger = logging.getLogger(__name__)


def embed_crops(model, crops: np.ndarray, flip: bool) -> np.ndarray:
    """Embeddings of uint8 face crops ``[N, S, S, 3]``: float64 unit rows ``[N, D]``, computed as
    `deepface.api.FaceVerifier` and ``deepface evaluate`` do: ``/ 255`` (`deepface.data.scale_image`), the
    model (and, with ``flip``, on the mirror images: `deepface.embedding.model_views`), the views averaged
    and renormalised (`deepface.embedding.merge_views`).

    Args:
        model: anything with ``predict_on_batch`` and ``output_shape`` (a Keras model, a `ServingModel`).
    """
    import tensorflow as tf

    from deepface.data import scale_image

    if len(crops) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float64)
    batch = scale_image(tf.constant(np.ascontiguousarray(crops, dtype=np.uint8)))
    return merge_views(model_views(model, batch, flip))


class ServingModel:
    """The SavedModel of a serving directory and its ``serving.json``.

    Attributes (read-only by convention): ``uri``, ``config`` (serving.json), ``image_size``,
    ``embedding_size``, ``align``, ``flip``, ``score``, ``threshold`` (None: exported without one).
    `embed_crops` may be called from one thread at a time (the server's batcher).
    """

    def __init__(self, uri: str, config: dict, signature):
        self.uri = uri
        self.config = config
        self.image_size = int(config["image_size"])
        self.embedding_size = int(config["embedding_size"])
        self.align = bool(config["align"])
        self.flip = bool(config["flip"])
        self.score = str(config["score"])
        self.threshold = None if config.get("threshold") is None else float(config["threshold"])
        self._signature = signature
        # what deepface.embedding.model_views reads of a model
        self.input_shape = (None, self.image_size, self.image_size, 3)
        self.output_shape = (None, self.embedding_size)

    @classmethod
    def load(cls, uri: str | os.PathLike) -> ServingModel:
        """Load the serving directory at ``uri`` (local path, ``file://`` or ``gs://``).

        Raises:
            DeepFaceError: no manifest.json (not a complete export: run `export_saved_model` into it) or
                no serving.json.
        """
        import tensorflow as tf

        path = files.tf_path(uri)
        for name in (MANIFEST_FILE, SERVING_FILE):
            if not tf.io.gfile.exists(posixpath.join(path, name)):
                raise DeepFaceError(f"{path} has no {name}: it is not a complete serving export; write one with "
                                    "deepface.serving.export.export_saved_model (model directory + evaluation).")
        started = time.perf_counter()
        config = files.read_json(posixpath.join(path, SERVING_FILE))
        signature = tf.saved_model.load(path).signatures[SIGNATURE]
        logger.info("loaded %s in %.1f s (%d px -> %d, align %s, flip %s, threshold %s)", path,
                    time.perf_counter() - started, config["image_size"], config["embedding_size"], config["align"],
                    config["flip"], config.get("threshold"))
        return cls(path, config, signature)

    def cropper(self, *, align: bool | None = None, no_face: str = "skip") -> FaceCropper:
        """A `deepface.faces.FaceCropper` for this model: faces aligned as the model's training data was
        (``align`` None) and its evaluation did. Not thread-safe: one per thread."""
        return FaceCropper(self.image_size, align=self.align if align is None else bool(align), no_face=no_face)

    def predict_on_batch(self, batch) -> np.ndarray:
        """The SavedModel's embeddings of a float32 batch ``[B, S, S, 3]`` in [0, 1] (no flip)."""
        return self._signature(**{INPUT_NAME: batch})[OUTPUT_NAME].numpy()

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of uint8 face crops ``[N, S, S, 3]`` in one forward pass (two with flip): float64 unit
        rows ``[N, D]``, as `deepface.api.FaceVerifier` computes them (`embed_crops`)."""
        return embed_crops(self, crops, self.flip)

    def decide(self, left: np.ndarray, right: np.ndarray) -> dict:
        """The decision for one pair of embedding rows ``[D]``: ``{"score", "value", "threshold", "same"}``,
        as `deepface.api.FaceVerifier.verify` gives it.

        Raises:
            DeepFaceError: the export has no threshold.
        """
        if self.threshold is None:
            raise DeepFaceError("this model was exported without a threshold: export it with threshold_json= (the "
                                "threshold.json of `deepface evaluate`) to verify pairs; embeddings need none.")
        value, same = decide(self.score, left, right, self.threshold)
        return {"score": self.score, "value": value, "threshold": self.threshold, "same": bool(same)}
