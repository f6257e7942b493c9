"""The export for serving: a trained embedding model as a TensorFlow SavedModel, with what a server needs.

`export_saved_model(model_dir, out_dir, threshold_json=...)` writes the serving directory::

    saved_model.pb, variables/, fingerprint.pb, assets/   the SavedModel (at the root, as Vertex AI expects)
    serving.json     how to use it: image size, align, flip, score, threshold (`SERVING_FILE`)
    threshold.json   the evaluation's threshold.json, as it was (when given)
    metadata.json    the model directory's metadata.json, as it was
    manifest.json    written last: files with sizes and sha256, the model's and the threshold's sha256

The SavedModel's signature ``serving_default`` (`SIGNATURE`) takes ``images``: float32 ``[batch, S, S, 3]``,
aligned face crops (`deepface.faces.face_image`, as training and evaluation cut them) scaled to [0, 1]
(``uint8 / 255``), and returns ``{"embeddings": float32 [batch, D]}``: the model's L2-normalised features.
Its graph holds plain TensorFlow ops: loading it needs neither deepface nor Keras::

    import tensorflow as tf
    embed = tf.saved_model.load("out/serving").signatures["serving_default"]
    embed(images=tf.zeros([2, 80, 80, 3]))["embeddings"]  # float32 [2, D]

Flip test-time augmentation is not in the graph: with ``serving.json``'s ``flip`` the caller averages the
embeddings of the crops and of their mirror images (`deepface.embedding.model_views`), as the evaluation did.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import tempfile
from pathlib import Path

import numpy as np

from deepface import files
from deepface.contracts import MANIFEST_FILE, check_model_dir, write_manifest
from deepface.errors import DeepFaceError
from deepface.scoring import PRIMARY_SCORE, SCORES

logger = logging.getLogger(__name__)

SERVING_FILE = "serving.json"
THRESHOLD_FILE = "threshold.json"
METADATA_FILE = "metadata.json"
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
SCHEMA_VERSION = 1  # of serving.json
EXPORT_TOLERANCE = 1e-5  # largest difference allowed between the SavedModel's and the Keras model's embeddings


def export_saved_model(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    threshold_json: str | os.PathLike | None = None,
) -> dict:
    """Export the embedding model of ``model_dir`` as a SavedModel serving directory (see the module docstring).

    Args:
        model_dir: a complete local model directory written by ``deepface train`` (``embedding.keras``).
        out_dir: the serving directory to write (local or ``gs://``); created if needed.
        threshold_json: the ``threshold.json`` that ``deepface evaluate`` wrote for this model (or its output
            directory): its cosine threshold and flip setting go into ``serving.json``. None: no threshold
            (a server then embeds, but refuses to verify pairs).

    Returns:
        The manifest written (``files``, ``model_sha256``, ``threshold_sha256``, ``serving``).

    Raises:
        DeepFaceError: an incomplete model directory; a threshold.json that is missing, not one of
            ``deepface evaluate``, or computed for another model; an ``out_dir`` already holding a complete
            export of another model or threshold (a rerun with the same inputs returns its manifest); a
            SavedModel whose embeddings differ from the Keras model's by more than `EXPORT_TOLERANCE`.

    Example::

        export_saved_model("out/model", "out/serving", threshold_json="out/eval/threshold.json")
    """
    from deepface.model import load_embedding_model

    check_model_dir(model_dir)
    model_sha256 = files.hash_file(Path(model_dir) / "embedding.keras")
    threshold, threshold_bytes = _read_threshold(threshold_json, model_sha256)
    inputs = {"model_sha256": model_sha256,
              "threshold_sha256": hashlib.sha256(threshold_bytes).hexdigest() if threshold_bytes else None}
    out = files.tf_path(out_dir)
    done = _complete_export(out, inputs)
    if done is not None:
        logger.info("%s already holds this export; nothing to do", out)
        return done

    model, metadata = load_embedding_model(model_dir)
    image_size, embedding_size = int(model.input_shape[1]), int(model.output_shape[-1])
    from deepface.faces import aligned_for

    serving = {
        "schema_version": SCHEMA_VERSION,
        "signature": {"name": SIGNATURE, "input": INPUT_NAME, "input_shape": [None, image_size, image_size, 3],
                      "input_dtype": "float32", "input_range": [0.0, 1.0], "output": OUTPUT_NAME,
                      "output_shape": [None, embedding_size], "output_dtype": "float32"},
        "image_size": image_size,
        "embedding_size": embedding_size,
        "align": aligned_for(metadata),
        "score": PRIMARY_SCORE,
        "same_if": ">=" if SCORES[PRIMARY_SCORE][1] else "<=",
        **threshold,
        **inputs,
    }
    extra = {SERVING_FILE: files.dumps_json(serving).encode("utf-8"),
             METADATA_FILE: files.dumps_json(metadata).encode("utf-8")}
    if threshold_bytes:
        extra[THRESHOLD_FILE] = threshold_bytes
    from deepface.outputs import output_lock

    with contextlib.nullcontext() if files.is_remote(out) else output_lock(out, "export"):  # gs://: unlocked
        with tempfile.TemporaryDirectory(prefix="deepface-export-") as tmp:
            saved = os.path.join(tmp, "saved_model")
            write_saved_model(model, saved)
            check_saved_model(model, saved)
            written = {name: _copy(os.path.join(saved, name), posixpath.join(out, name))
                       for name in _relative_files(saved)}
        for name, data in extra.items():
            files.write_bytes(posixpath.join(out, name), data)
            written[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest = {"stage": "export", "schema_version": SCHEMA_VERSION, "files": dict(sorted(written.items())),
                    "serving": serving, **inputs}
        write_manifest(out, manifest)
    logger.info("exported %s as a SavedModel to %s (%d x %d x 3 -> %d; threshold %s)", model_dir, out,
                image_size, image_size, embedding_size, serving["threshold"])
    return manifest


def write_saved_model(model, path: str) -> None:
    """Write ``model`` (Keras, image -> embedding) as a SavedModel at the local ``path`` with the signature
    ``serving_default``: ``images`` float32 ``[None, S, S, 3]`` -> ``{"embeddings": float32 [None, D]}``."""
    import keras
    import tensorflow as tf

    size = int(model.input_shape[1])
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        return {OUTPUT_NAME: model(images, training=False)}

    archive.add_endpoint(name=SIGNATURE, fn=serve,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)])
    archive.write_out(path, verbose=False)


def check_saved_model(model, path: str, *, seed: int = 0) -> float:
    """The largest difference between the embeddings of the SavedModel at ``path`` and of ``model`` on a
    seeded random batch; raises `DeepFaceError` above `EXPORT_TOLERANCE`."""
    import tensorflow as tf

    size = int(model.input_shape[1])
    images = np.random.default_rng(seed).random((2, size, size, 3), dtype=np.float32)
    exported = tf.saved_model.load(path).signatures[SIGNATURE](**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME]
    difference = float(np.max(np.abs(np.asarray(exported) - np.asarray(model(images, training=False)))))
    if not difference <= EXPORT_TOLERANCE:
        raise DeepFaceError(f"the SavedModel's embeddings differ from the Keras model's by {difference:.3g} "
                            f"(more than {EXPORT_TOLERANCE}): report this as a bug of the export.")
    return difference


def _read_threshold(threshold_json, model_sha256: str) -> tuple[dict, bytes | None]:
    """``({"threshold", "flip", "thresholds"}, the file's bytes)`` of an evaluation's threshold.json."""
    if threshold_json is None:
        return {"threshold": None, "flip": False, "thresholds": {}}, None
    from deepface.api import load_threshold

    path = Path(files.local_path(threshold_json))
    if path.is_dir():
        path = path / THRESHOLD_FILE
    if path.name != THRESHOLD_FILE:
        raise DeepFaceError(f"threshold_json={str(threshold_json)!r}: pass the threshold.json written by "
                            "`deepface evaluate` (or its output directory).")
    threshold, flip = load_threshold(path.parent, PRIMARY_SCORE, model_sha256)  # checks it is this model's
    saved = files.read_json(path)
    return {"threshold": threshold, "flip": flip, "thresholds": saved.get("thresholds", {})}, path.read_bytes()


def _complete_export(out: str, inputs: dict) -> dict | None:
    """The manifest of a complete export of the same inputs in ``out``, None if there is none."""
    path = posixpath.join(out, MANIFEST_FILE)
    if not _exists(path):
        return None
    manifest = files.read_json(path)
    old = {key: manifest.get(key) for key in inputs}
    if manifest.get("stage") != "export" or old != inputs:
        changed = ", ".join(f"{key}: {str(old[key])[:12]} -> {str(inputs[key])[:12]}"
                            for key in inputs if old[key] != inputs[key]) or f"stage {manifest.get('stage')!r}"
        raise DeepFaceError(f"{out} already holds a complete output of other inputs ({changed}): choose another "
                            "output directory, or delete it.")
    return manifest


def _exists(path: str) -> bool:
    if files.is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.exists(path)


def _relative_files(root: str) -> list[str]:
    """Every file under the local ``root``, as sorted POSIX paths relative to it."""
    return sorted(os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                  for folder, _, names in os.walk(root) for name in names)


def _copy(source: str, target: str) -> dict:
    """Copy a local file to ``target`` (local or gs://) atomically; returns its ``{bytes, sha256}``."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as reader, files.atomic_open(target, "wb") as writer:
        for block in iter(lambda: reader.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
            writer.write(block)
    return {"bytes": size, "sha256": digest.hexdigest()}

