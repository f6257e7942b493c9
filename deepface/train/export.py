"""The model directory of a training run: where it is, what goes in it, and how it is written.

- `resolve_output_dirs`: the model, checkpoint and TensorBoard directories (`OutputDirs`), honouring
  Vertex AI's ``AIP_*`` variables;
- `complete_model`: the manifest of a complete model made from the same settings and data, which a rerun
  (a retried pipeline step) returns instead of training again; other settings or data are an error;
- `start_clean`: refuses a directory that holds a complete model (unless overwriting) and removes what a
  killed run left half-written;
- `export_models`: the trained weights as a plain float32 classifier and its embedding model;
- `training_history`, `model_metadata`, `model_manifest`: the content of ``history.json``,
  ``metadata.json`` and ``manifest.json``;
- `write_model_files`: every file but the manifest, written atomically (`ModelDirWriter`), with their sizes
  and sha256 for the manifest. The caller writes the manifest last: its presence means the directory is
  complete.

Raises `DeepFaceError` for no output directory, or one that already holds a complete model of other
settings or data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

import deepface
from deepface.contracts import MANIFEST_FILE
from deepface.data import make_dataset
from deepface.errors import DeepFaceError
from deepface.files import dumps_json, is_remote, remove_temporaries, tf_path, write_bytes
from deepface.labels import CLASSES_FILE
from deepface.model import ModelConfig, build_classifier, build_embedding_model, compute_feature_max, save_model
from deepface.plots import training_curves_png
from deepface.settings import TrainSettings
from deepface.train.callbacks import TrainingState
from deepface.train.fit import REFERENCE_BATCH_SIZE
from deepface.train.inputs import TrainingData, read_bytes

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
LOGS_SUBDIR = "logs"
MANIFEST_SCHEMA_VERSION = 1  # of the model directory's manifest.json (not the TFRecord schema)


@dataclasses.dataclass(frozen=True)
class OutputDirs:
    """Where a training run writes: the model directory, checkpoints and TensorBoard logs."""

    model_dir: str
    checkpoint_dir: str
    tensorboard_dir: str


def resolve_output_dirs(out_dir: str | os.PathLike | None, env: Mapping[str, str]) -> OutputDirs:
    """The run's directories, honouring Vertex AI's variables.

    - model directory: ``out_dir``, else ``AIP_MODEL_DIR``;
    - checkpoints: ``AIP_CHECKPOINT_DIR``, else ``<model dir>/checkpoints`` (removed when training ends);
    - TensorBoard: ``AIP_TENSORBOARD_LOG_DIR``, else ``<model dir>/logs`` (copied there at the end).
    """
    model_dir = str(out_dir) if out_dir else env.get("AIP_MODEL_DIR", "")
    if not model_dir:
        raise DeepFaceError("no output directory: give out_dir (or run where AIP_MODEL_DIR is set).")
    model_dir = tf_path(model_dir)
    model_dir = model_dir.rstrip("/") or "/"
    return OutputDirs(
        model_dir=model_dir,
        checkpoint_dir=env.get("AIP_CHECKPOINT_DIR") or posixpath.join(model_dir, CHECKPOINT_SUBDIR),
        tensorboard_dir=env.get("AIP_TENSORBOARD_LOG_DIR") or posixpath.join(model_dir, LOGS_SUBDIR),
    )


METADATA_FILE = "metadata.json"
# Settings that do not shape the model (machine-local, kept off pipelines): a rerun may differ in them.
MACHINE_LOCAL_SETTINGS = tuple(name for name, field in TrainSettings.fields().items() if not field.rule.kfp)


def _sha256_of(path: str) -> str | None:
    """The sha256 of a local or gs:// file, None if it does not exist."""
    return hashlib.sha256(read_bytes(path)).hexdigest() if tf.io.gfile.exists(path) else None


def _shown(value: Any) -> str:
    """A value in a difference: repr, hashes cut to 12 hex digits."""
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"{value[:12]}..."
    return repr(value)


def complete_model(
    dirs: OutputDirs,
    settings: TrainSettings,
    *,
    tfrecords_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    validation_tfrecords: str | os.PathLike | None = None,
) -> dict | None:
    """The manifest of the complete model in ``dirs.model_dir`` when it was made from these settings and
    this data: a rerun (e.g. a retried pipeline step whose first attempt failed after the model was
    written) returns it instead of training again.

    Compared, without reading any shard: every field of `TrainSettings` but the machine-local ones
    (`MACHINE_LOCAL_SETTINGS`) with ``metadata.json``'s ``settings`` (a field it lacks counts as its
    default), and the sha256 of the TFRecords manifest, of the class map and of the separate validation
    TFRecords' manifest (if any) with those ``metadata.json`` records.

    Returns:
        The model directory's manifest; None when it holds no complete model (no ``manifest.json``:
        training starts, or resumes a partial run), or when an input to compare is missing (the
        input checks of training then name it).

    Raises:
        DeepFaceError: a complete model made from other settings or data, each difference named as
            ``name: old -> new``; or one whose metadata.json is missing or unreadable.
    """
    manifest_path = posixpath.join(dirs.model_dir, MANIFEST_FILE)
    if not tf.io.gfile.exists(manifest_path):
        return None
    fix = "choose another output directory, or set overwrite to train again from scratch"
    metadata_path = posixpath.join(dirs.model_dir, METADATA_FILE)
    try:
        metadata = json.loads(read_bytes(metadata_path))
        manifest = json.loads(read_bytes(manifest_path))
        saved_settings, saved_data = metadata["settings"], metadata["data"]
        saved = {**{name: saved_settings.get(name, field.default) for name, field in TrainSettings.fields().items()},
                 "tfrecords_manifest_sha256": saved_data["tfrecords_manifest_sha256"],
                 "classes_sha256": metadata["classes_sha256"],
                 "validation_tfrecords_manifest_sha256": saved_data.get("validation_tfrecords_manifest_sha256")}
    except (tf.errors.OpError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DeepFaceError(
            f"{dirs.model_dir} already holds a complete trained model ({MANIFEST_FILE} exists) but its "
            f"{METADATA_FILE} cannot tell what it was made from ({type(error).__name__}: {error}): {fix}."
        ) from None
    data = {
        "tfrecords_manifest_sha256": _sha256_of(posixpath.join(tf_path(tfrecords_dir), MANIFEST_FILE)),
        "classes_sha256": _sha256_of(posixpath.join(tf_path(labels_dir), CLASSES_FILE)),
        "validation_tfrecords_manifest_sha256": None,
    }
    if validation_tfrecords is not None:
        data["validation_tfrecords_manifest_sha256"] = _sha256_of(
            posixpath.join(tf_path(validation_tfrecords), MANIFEST_FILE))
        if data["validation_tfrecords_manifest_sha256"] is None:
            return None
    if data["tfrecords_manifest_sha256"] is None or data["classes_sha256"] is None:
        return None
    given = {**settings.to_dict(), **data}
    differences = [f"{name}: {_shown(saved[name])} -> {_shown(value)}" for name, value in given.items()
                   if name not in MACHINE_LOCAL_SETTINGS and saved[name] != value]
    if differences:
        raise DeepFaceError(
            f"{dirs.model_dir} already holds a complete trained model made from other settings or data "
            f"({'; '.join(differences)}): {fix}."
        )
    return manifest


def start_clean(dirs: OutputDirs, overwrite: bool) -> None:
    """Refuse to retrain over a complete model directory unless asked to (then start from scratch), and
    delete what a killed run left half-written there (temporaries of atomic writes).

    Call it holding the model directory's lock (`deepface.outputs.output_lock`): the temporaries can then
    only be a dead run's. With ``overwrite``, the manifest goes first, before anything else changes, so a
    run killed while overwriting leaves a directory that evaluate and verify refuse
    (`deepface.contracts.check_model_dir`), never the old model looking complete beside new files.

    Raises:
        DeepFaceError: a complete model is there and ``overwrite`` is off.
    """
    manifest_path = posixpath.join(dirs.model_dir, MANIFEST_FILE)
    if tf.io.gfile.exists(manifest_path):
        if not overwrite:
            raise DeepFaceError(
                f"{dirs.model_dir} already holds a complete trained model ({MANIFEST_FILE} exists): "
                "choose another output directory, or set overwrite to train again from scratch."
            )
        tf.io.gfile.remove(manifest_path)  # first: the directory stops looking complete
        if tf.io.gfile.exists(dirs.checkpoint_dir):
            tf.io.gfile.rmtree(dirs.checkpoint_dir)
    if not is_remote(dirs.model_dir) and os.path.isdir(dirs.model_dir):
        remove_temporaries(dirs.model_dir)


class ModelDirWriter:
    """Writes files into the model directory atomically and records their sizes and sha256 for the manifest."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.files: dict[str, dict] = {}

    def write(self, name: str, data: bytes) -> None:
        write_bytes(posixpath.join(self.model_dir, name), data)
        self._record(name, data)

    def write_json(self, name: str, obj: Any) -> None:
        self.write(name, dumps_json(obj).encode("utf-8"))

    def write_model(self, name: str, model: keras.Model) -> None:
        """Saves a Keras model (atomic locally, whole object on gs://) and records it."""
        self._record(name, save_model(model, posixpath.join(self.model_dir, name)))

    def add_tree(self, source: str, name: str) -> None:
        """Records the files of directory ``source`` under ``name``, copying them there unless they are
        already in place (TensorBoard logs written straight into the model directory)."""
        target_root = posixpath.join(self.model_dir, name)
        for root, _, files in tf.io.gfile.walk(source):
            for file_name in sorted(files):
                path = posixpath.join(root, file_name)
                relative = posixpath.join(name, path[len(source):].lstrip("/"))
                data = read_bytes(path)
                if source.rstrip("/") == target_root:
                    self._record(relative, data)
                else:
                    self.write(relative, data)

    def _record(self, name: str, data: bytes) -> None:
        self.files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def export_models(
    model: keras.Model, config: ModelConfig, data: TrainingData, *, batch_size: int, feature_max_batches: int | None
) -> tuple[keras.Model, keras.Model]:
    """The trained weights in a plain float32 classifier (no distribution, no mixed precision) and its
    embedding model, normalised by the F7 maxima over the training data (the paper's representation)."""
    classifier = build_classifier(config, len(data.classes), dtype_policy="float32")
    classifier.set_weights(model.get_weights())
    images = make_dataset(data.train_shards, batch_size=batch_size, image_size=data.image_size, training=False)
    logger.info("Computing the F7 maxima over %s batches of %d training images",
                feature_max_batches or "all", batch_size)
    batches = -(-data.train_records // batch_size)  # ceil: the last batch may be partial
    feature_max = compute_feature_max(classifier, images, steps=feature_max_batches, total=batches)
    return classifier, build_embedding_model(classifier, feature_max)


def write_model_files(
    dirs: OutputDirs,
    *,
    classifier: keras.Model,
    embedding: keras.Model,
    classes_bytes: bytes,
    metadata: dict,
    history: dict,
    title: str,
) -> dict[str, dict]:
    """Writes every file of the model directory but the manifest; returns ``{name: {bytes, sha256}}``."""
    writer = ModelDirWriter(dirs.model_dir)
    writer.write_model("classifier.keras", classifier)
    writer.write_model("embedding.keras", embedding)
    writer.write(CLASSES_FILE, classes_bytes)
    writer.write_json(METADATA_FILE, metadata)
    writer.write_json("history.json", history)
    writer.write("training_curves.png", training_curves_png(history, title=title))
    writer.add_tree(dirs.tensorboard_dir, LOGS_SUBDIR)
    return dict(sorted(writer.files.items()))


def training_history(
    state: TrainingState, optimizer: keras.optimizers.Optimizer, *, epochs: int, steps_per_epoch: int,
    global_batch_size: int,
) -> dict:
    """The content of ``history.json``: per-epoch metrics, steps per epoch and the runs (attempts)."""
    return {
        "metrics": state.history,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "global_batch_size": global_batch_size,
        "optimizer_steps": int(keras.ops.convert_to_numpy(optimizer.iterations)),
        "runs": state.runs,
    }


def model_metadata(
    config: ModelConfig,
    data: TrainingData,
    settings: TrainSettings,
    *,
    strategy_kind: str,
    replicas: int,
    precision: str,
    global_batch_size: int,
    optimizer: str,
    learning_rate: float,
    initial_lr: float,
    final_lr: float,
    min_lr: float,
    monitor: str,
    steps_per_epoch: int,
    loss_scale: float | None = None,
) -> dict:
    """The content of ``metadata.json``: the run's ``settings`` as given (``"settings"``, every field of
    `TrainSettings`) and as resolved (the preset's recipe, the strategy and precision the hardware gave,
    the learning rates: ``learning_rate`` as given, the initial one, the final one and the floor; the
    final dynamic loss scale of float16 training, None without loss scaling), the data, and the versions
    of the software.
    """
    return {
        "settings": settings.to_dict(),
        "preset": config.to_dict(),
        "image_size": data.image_size,
        "aligned": data.alignment != "none",
        "num_classes": len(data.classes),
        "classes_file": CLASSES_FILE,
        "classes_sha256": hashlib.sha256(data.classes_bytes).hexdigest(),
        "data": {
            "tfrecords_manifest_sha256": data.manifest_sha256,
            "alignment": data.alignment,
            "train_shards": [posixpath.basename(shard) for shard in data.train_shards],
            "train_records": data.train_records,
            "validation_shards": [posixpath.basename(shard) for shard in data.validation_shards],
            "validation_records": data.validation_records,
            "validation_tfrecords_manifest_sha256": data.validation_manifest_sha256,
            "augment": settings.augment,
            "shuffle_buffer": settings.shuffle_buffer,
        },
        "seed": settings.seed,
        "strategy": {"kind": strategy_kind, "replicas": replicas, "precision": precision,
                     "jit_compile": settings.jit_compile},
        "batch_size": {"global": global_batch_size, "per_replica": global_batch_size // replicas},
        "learning_rate": {
            "base": learning_rate, "reference_batch_size": REFERENCE_BATCH_SIZE, "initial": initial_lr,
            "final": final_lr, "min": min_lr, "factor": settings.lr_factor, "patience": settings.lr_patience,
            "monitor": monitor,
        },
        "optimizer": {"name": optimizer, "momentum": settings.momentum if optimizer == "sgd" else None,
                      "weight_decay": settings.weight_decay, "loss_scale": loss_scale},
        "label_smoothing": settings.label_smoothing,
        "epochs": settings.epochs,
        "steps_per_epoch": steps_per_epoch,
        "feature_max_batches": settings.feature_max_batches,
        "versions": deepface.versions(),
    }


def model_manifest(
    config: ModelConfig, data: TrainingData, files: dict[str, dict], *, epochs: int, history: Mapping[str, list]
) -> dict:
    """The content of ``manifest.json``: the files written (`write_model_files`) and the final value of
    each metric in ``history`` (per-epoch metrics)."""
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "stage": "train",
        "files": files,
        "preset": config.name,
        "num_classes": len(data.classes),
        "image_size": data.image_size,
        "epochs": epochs,
        "final_metrics": {name: values[-1] for name, values in sorted(history.items()) if values},
    }
