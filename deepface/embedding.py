"""Face images -> embeddings with a model, as ``deepface evaluate``, ``deepface verify`` and the Python API
(`deepface.api`) compute them.

- `model_views(model, batch, flip)`: the model's outputs for a float32 batch ``[B, S, S, 3]`` in [0, 1]
  (and, with ``flip``, for its mirror image): float32 ``[V, B, D]``.
- `merge_views(views)`: one embedding per image, the mean of its views as float64 unit rows ``[N, D]``,
  the input of the scores (`deepface.scoring`). Flip test-time augmentation is this mean over the image
  and its mirror.
- `embed_images(models, images, paths, ...)`: every model over images of a `deepface.pairs.ImageCollection`
  in one pass; images that cannot be used are reported, not raised.
- `baseline_feature_model(metadata, seed)` and `normalize_features(raw_views, usable)`: the untrained
  baseline of a model, its features normalised over the evaluated images; `baseline_feature_model` raises
  `DeepFaceError` when the metadata cannot rebuild the model.

TensorFlow is imported only when a model runs.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from deepface.errors import DeepFaceError
from deepface.faces import FaceCropper
from deepface.pairs import ImageCollection
from deepface.scoring import unit_rows

logger = logging.getLogger(__name__)


def model_views(model, batch, flip: bool) -> np.ndarray:
    """Outputs of ``model`` for a batch ``[B, S, S, 3]`` and, with ``flip``, for its mirror image.

    Returns:
        float32 ``[V, B, D]``, ``V = 2`` with ``flip`` (original, mirrored), else 1.
    """
    import tensorflow as tf

    if flip:
        batch = tf.concat([batch, tf.image.flip_left_right(batch)], axis=0)
    outputs = np.asarray(model.predict_on_batch(batch), dtype=np.float32)
    return outputs.reshape(2 if flip else 1, -1, outputs.shape[-1])


def merge_views(views: np.ndarray) -> np.ndarray:
    """One embedding per image from ``[V, N, D]`` views: their mean as float64 unit rows ``[N, D]``
    (`deepface.scoring.unit_rows`), the input of the scores."""
    return unit_rows(np.asarray(views, dtype=np.float64).mean(axis=0))


def embed_images(
    models: list, images: ImageCollection, paths: list[str], *, cropper: FaceCropper, batch_size: int, flip: bool
) -> tuple[list[np.ndarray], dict[str, str], dict]:
    """Run every model over the images ``paths`` of ``images`` in one pass over the archive.

    Each image becomes the network's input through ``cropper`` (`deepface.faces.face_image`: decoded,
    EXIF applied, the face aligned, as the training records were made) and ``/ 255``, in a tf.data
    pipeline that overlaps with the models; an image that cannot be used is left out and reported.

    Returns:
        ``(outputs, unusable, faces)``: ``outputs[m]`` is float32 ``[V, len(paths), D_m]`` (see
        :func:`model_views`; rows of unusable images are NaN), ``unusable`` maps the paths that failed to
        the reason (undecodable, refused, no face), ``faces`` counts ``several_faces`` and ``center_crops``.
    """
    import tensorflow as tf

    from deepface.data import scale_image
    from deepface.faces import BadImage

    index = {path: row for row, path in enumerate(paths)}
    unusable: dict[str, str] = {}
    faces = {"several_faces": 0, "center_crops": 0}
    size = cropper.size

    def face_crops():
        for path, data in images.read(paths):
            try:
                crop, info = cropper(path, data)
            except BadImage as error:
                unusable[path] = str(error)
                continue
            faces["several_faces"] += (info["faces"] or 0) > 1
            faces["center_crops"] += info["fallback"]
            yield index[path], crop

    dataset = (
        tf.data.Dataset.from_generator(
            face_crops,
            output_signature=(tf.TensorSpec([], tf.int64), tf.TensorSpec([size, size, 3], tf.uint8)),
        )
        .batch(batch_size)
        .map(lambda rows, batch: (rows, scale_image(batch)))
        .prefetch(tf.data.AUTOTUNE)
    )
    views = 2 if flip else 1
    outputs = [np.full((views, len(paths), model.output_shape[-1]), np.nan, np.float32) for model in models]
    seen = np.zeros(len(paths), bool)
    started = time.perf_counter()
    with tqdm(total=len(paths), unit="img", desc="embedding", disable=None) as progress:
        for rows, batch in dataset:
            rows = rows.numpy()
            for model, output in zip(models, outputs):
                output[:, rows] = model_views(model, batch, flip)
            seen[rows] = True
            progress.update(len(rows))
    elapsed = time.perf_counter() - started
    logger.info("embedded %d images with %d model(s) in %.1f s (%.1f img/s)%s", seen.sum(), len(models),
                elapsed, seen.sum() / max(elapsed, 1e-9), " with flips" if flip else "")
    for path, ok in zip(paths, seen):
        if not ok:
            unusable.setdefault(path, "not read")
    return outputs, unusable, faces


def baseline_feature_model(metadata: dict, seed: int):
    """The raw F7 features of an untrained classifier built like the model (``metadata["preset"]``: a
    preset name or the config written by training), its weights drawn with ``seed``."""
    from deepface.model import ModelConfig, build_classifier, feature_extractor

    preset = metadata.get("preset")
    if preset is None or "num_classes" not in metadata:
        raise DeepFaceError(
            "the model directory's metadata.json lacks 'preset' or 'num_classes', needed to build the "
            "untrained baseline; evaluate without the baseline (--no-baseline)."
        )
    config = ModelConfig(**preset) if isinstance(preset, dict) else preset
    return feature_extractor(build_classifier(config, int(metadata["num_classes"]), seed=seed))


def normalize_features(raw_views: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """The paper's normalisation of raw F7 views ``[V, N, D]``, the maxima taken over the ``usable`` rows:
    through ``deepface.layers.FeatureNormalization``, exactly as the embedding model does it."""
    from deepface.layers import FeatureNormalization

    layer = FeatureNormalization(dtype="float32")
    layer.build((None, raw_views.shape[-1]))
    layer.set_feature_max(raw_views[:, usable].max(axis=(0, 1)))
    return np.stack([np.asarray(layer(view)) for view in raw_views])
