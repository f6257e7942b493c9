"""Stage 7, train: fit the DeepFace classifier on TFRecord shards and write the model directory.

The paper's recipe is the default: SGD with momentum 0.9, learning rate 0.01 for a batch of 128
(scaled linearly with the global batch size), divided by 10 when the monitored loss stops improving,
down to 1e-4 (scaled alike), about 15 epochs, dropout on F7 (in the model).

The distribution follows the hardware unless ``strategy`` says otherwise: TPU (`TPUStrategy`, the local
TPU of a Vertex AI TPU VM), one GPU (`OneDeviceStrategy`), several GPUs (`MirroredStrategy`), several
workers (`MultiWorkerMirroredStrategy`, cluster from ``TF_CONFIG`` or Vertex's ``CLUSTER_SPEC``), or the
CPU. `choose_strategy` makes that choice as a pure function of the environment and the devices.

A run is resumable: `TrainingState` checkpoints the weights, the optimizer (momentum, iteration count,
learning rate), the ReduceLROnPlateau counters, the metric sums of the unfinished epoch and the history
every ``checkpoint_steps`` steps and at the end of every epoch. A restarted run continues from the last
checkpoint at the same epoch and step, reading the same batches it would have read, so the steps of all
attempts add up to those of one uninterrupted run.

The model directory (local or ``gs://``)::

    classifier.keras      the trained classifier, float32 (image in [0, 1] -> class probabilities)
    embedding.keras       image in [0, 1] -> L2-normalised F7 features (per-feature maxima of the
                          training data, as in the paper)
    classes.txt           the class map (line index = class id), copied from the labels stage
    metadata.json         preset, image size, classes, data hashes, versions, seed, strategy, batch, lr
    history.json          per-epoch metrics, steps per epoch, the runs (attempts) and where each started
    training_curves.png   loss, accuracy and learning rate per epoch
    logs/                 TensorBoard event files
    manifest.json         written last: the directory is complete only when it exists

Vertex AI's ``AIP_MODEL_DIR`` (used when no output directory is given), ``AIP_CHECKPOINT_DIR`` and
``AIP_TENSORBOARD_LOG_DIR`` are honoured when set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import hashlib
import importlib.util
import json
import logging
import os
import posixpath
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

import deepface
from deepface.config import (  # noqa: F401 (re-exported)
    DEFAULT_EPOCHS,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
    check_options,
    training_recipe,
)
from deepface.contracts import MANIFEST_FILE, write_manifest
from deepface.data import list_shards, make_dataset
from deepface.errors import DeepFaceError
from deepface.files import dumps_json, is_remote, read_json, remove_temporaries, tf_path, write_bytes
from deepface.labels import CLASSES_FILE, load_classes
from deepface.model import (
    ModelConfig,
    build_classifier,
    build_embedding_model,
    compute_feature_max,
    get_config,
    save_model,
)
from deepface.plots import training_curves_png

logger = logging.getLogger(__name__)

# Keras dtype policy of each precision.
DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# The paper's learning rates are for this batch size; other batch sizes scale them linearly.
REFERENCE_BATCH_SIZE = 128
# Vertex AI worker pools as TF_CONFIG task types (pool 0 is the primary replica).
WORKER_POOL_ROLES = {"workerpool0": "chief", "workerpool1": "worker", "workerpool2": "ps", "workerpool3": "evaluator"}

CHECKPOINT_SUBDIR = "checkpoints"
LOGS_SUBDIR = "logs"
RUN_CONFIG_FILE = "run_config.json"
MANIFEST_SCHEMA_VERSION = 1  # of the model directory's manifest.json (not the TFRecord schema)


# --------------------------------------------------------------------------------------------------
# Environment and hardware: pure functions of their arguments.


def tf_config_from_cluster_spec(cluster_spec: Mapping[str, Any]) -> dict:
    """The ``TF_CONFIG`` equivalent of Vertex AI's ``CLUSTER_SPEC``.

    Vertex AI names its replica groups ``workerpool0`` (the primary replica) to ``workerpool3``; they
    become the TF_CONFIG task types ``chief``, ``worker``, ``ps`` and ``evaluator``.

    Args:
        cluster_spec: the parsed ``CLUSTER_SPEC``, e.g. ``{"cluster": {"workerpool0": ["host0:2222"],
            "workerpool1": ["host1:2222"]}, "task": {"type": "workerpool1", "index": 0}}``.

    Returns:
        ``{"cluster": {"chief": [...], "worker": [...]}, "task": {"type": "worker", "index": 0}}``.
    """
    try:
        pools = cluster_spec["cluster"]
        task = cluster_spec["task"]
        cluster = {WORKER_POOL_ROLES[pool]: list(hosts) for pool, hosts in pools.items() if hosts}
        tf_config = {"cluster": cluster, "task": {"type": WORKER_POOL_ROLES[task["type"]], "index": int(task["index"])}}
    except (KeyError, TypeError, ValueError) as error:
        raise DeepFaceError(
            f"CLUSTER_SPEC is not a Vertex AI cluster spec ({type(error).__name__}: {error}): it needs "
            "'cluster' with workerpool0..3 host lists and 'task' with 'type' and 'index'."
        ) from None
    if "environment" in cluster_spec:
        tf_config["environment"] = cluster_spec["environment"]
    return tf_config


def cluster_from_env(env: Mapping[str, str]) -> dict | None:
    """The TF_CONFIG of this process: ``TF_CONFIG`` if set, else converted from ``CLUSTER_SPEC``, else None."""
    for name in ("TF_CONFIG", "CLUSTER_SPEC"):
        text = env.get(name, "").strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeepFaceError(f"environment variable {name} is not valid JSON ({error}): fix or unset it.") from None
        if not isinstance(value, dict):
            raise DeepFaceError(f"environment variable {name} must be a JSON object, got {text[:80]!r}.")
        if name == "CLUSTER_SPEC":
            return tf_config_from_cluster_spec(value)
        if not value.get("cluster"):
            return None  # a TF_CONFIG without a cluster describes a single machine
        return value
    return None


def training_workers(tf_config: Mapping[str, Any] | None) -> int:
    """Machines that train synchronously in a cluster (chief and workers; not ps or evaluator)."""
    if not tf_config:
        return 1
    cluster = tf_config.get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


@dataclasses.dataclass(frozen=True)
class StrategyPlan:
    """Which distribution strategy to build, and this process's role.

    Attributes:
        kind: one of ``tpu``, ``gpu``, ``multi-gpu``, ``multi-worker``, ``cpu``.
        tf_config: the cluster (TF_CONFIG form) for ``multi-worker``, else None.
        is_chief: whether this process writes the model directory, TensorBoard logs and checkpoints.
        reason: why this kind was chosen (logged).
    """

    kind: str
    tf_config: dict | None = None
    is_chief: bool = True
    reason: str = ""


def is_chief_task(tf_config: Mapping[str, Any] | None) -> bool:
    """The chief is the ``chief`` task, or worker 0 in a cluster without one; a single machine is chief."""
    if not tf_config or "task" not in tf_config:
        return True
    task_type, index = tf_config["task"].get("type"), int(tf_config["task"].get("index", 0))
    if "chief" in tf_config.get("cluster", {}):
        return task_type == "chief"
    return task_type == "worker" and index == 0


def choose_strategy(
    requested: str = "auto", *, env: Mapping[str, str], gpus: Sequence[Any], has_tpu: bool
) -> StrategyPlan:
    """Choose the distribution strategy (pure: the environment and devices are arguments).

    ``auto`` picks, in this order: several workers in TF_CONFIG / CLUSTER_SPEC -> ``multi-worker``;
    a TPU -> ``tpu``; several GPUs -> ``multi-gpu``; one GPU -> ``gpu``; else ``cpu``. An explicit
    choice is checked against the hardware.

    Args:
        requested: ``auto`` or one of the kinds.
        env: environment variables (``TF_CONFIG``, ``CLUSTER_SPEC``).
        gpus: the visible GPUs (e.g. ``tf.config.list_physical_devices("GPU")``); only the count matters.
        has_tpu: whether a TPU is attached (see `detect_tpu`).
    """
    if requested not in STRATEGIES:
        raise DeepFaceError(f"--strategy {requested!r} is not one of {', '.join(STRATEGIES)}.")
    tf_config = cluster_from_env(env)
    workers = training_workers(tf_config)
    num_gpus = len(gpus)
    if requested == "auto":
        if workers > 1:
            kind, reason = "multi-worker", f"{workers} workers in the cluster spec"
        elif has_tpu:
            kind, reason = "tpu", "a TPU is attached"
        elif num_gpus > 1:
            kind, reason = "multi-gpu", f"{num_gpus} GPUs"
        elif num_gpus == 1:
            kind, reason = "gpu", "one GPU"
        else:
            kind, reason = "cpu", "no GPU or TPU found"
    else:
        kind, reason = requested, "requested"
        if kind == "gpu" and num_gpus < 1:
            raise DeepFaceError("--strategy gpu: no GPU is visible; use --strategy auto or cpu.")
        if kind == "multi-gpu" and num_gpus < 2:
            raise DeepFaceError(f"--strategy multi-gpu needs at least 2 GPUs, {num_gpus} visible: use --strategy auto.")
        if kind == "multi-worker" and tf_config is None:
            raise DeepFaceError(
                "--strategy multi-worker needs the cluster in TF_CONFIG or CLUSTER_SPEC (as Vertex AI sets "
                "it for jobs with several replicas): set one or use --strategy auto."
            )
    if kind != "multi-worker":
        return StrategyPlan(kind, None, True, reason)
    return StrategyPlan(kind, tf_config, is_chief_task(tf_config), reason)


def choose_precision(requested: str, strategy_kind: str) -> str:
    """``auto`` is bfloat16 on TPU (its native matmul type) and float32 elsewhere; else as requested."""
    if requested not in PRECISIONS:
        raise DeepFaceError(f"--precision {requested!r} is not one of {', '.join(PRECISIONS)}.")
    if requested == "auto":
        return "bfloat16" if strategy_kind == "tpu" else "float32"
    return requested


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
        raise DeepFaceError("No output directory: pass --out DIR (or run where AIP_MODEL_DIR is set).")
    model_dir = tf_path(model_dir)
    model_dir = model_dir.rstrip("/") or "/"
    return OutputDirs(
        model_dir=model_dir,
        checkpoint_dir=env.get("AIP_CHECKPOINT_DIR") or posixpath.join(model_dir, CHECKPOINT_SUBDIR),
        tensorboard_dir=env.get("AIP_TENSORBOARD_LOG_DIR") or posixpath.join(model_dir, LOGS_SUBDIR),
    )


def scaled_learning_rate(learning_rate: float, global_batch_size: int) -> float:
    """Linear scaling: ``learning_rate`` is for a batch of 128 (the paper's)."""
    return learning_rate * global_batch_size / REFERENCE_BATCH_SIZE


def epoch_seed(seed: int, epoch: int) -> int:
    """The input pipeline's seed for one epoch (each epoch is its own deterministic pipeline, so a
    resumed run reaches any step by skipping at most one epoch of batches)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % (2**31 - 3))


def split_validation_shards(shards: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """Holds out whole shards for validation, deterministically (by name, not listing order).

    ``round(fraction * len(shards))`` shards (at least one when ``fraction > 0``) are held out, spread
    evenly over the sorted shard names.

    Returns:
        ``(train_shards, validation_shards)``, each sorted.
    """
    shards = sorted(shards)
    if fraction <= 0:
        return shards, []
    count = max(1, round(fraction * len(shards)))
    if count >= len(shards):
        raise DeepFaceError(
            f"validation_fraction={fraction} holds out {count} of {len(shards)} shard(s), leaving none to "
            "train on: write more shards (smaller shard_bytes in `deepface tfrecords`), lower the fraction, "
            "or pass separate validation shards."
        )
    picked = {int((index + 0.5) * len(shards) / count) for index in range(count)}
    return [s for i, s in enumerate(shards) if i not in picked], [s for i, s in enumerate(shards) if i in picked]


# --------------------------------------------------------------------------------------------------
# Hardware detection and strategy construction (touch the machine).


def detect_tpu(env: Mapping[str, str] | None = None) -> bool:
    """Whether this machine has a TPU attached (a Cloud TPU VM: TPU_* variables or accelerator devices)."""
    env = os.environ if env is None else env
    if any(env.get(name) for name in ("TPU_NAME", "TPU_ACCELERATOR_TYPE", "TPU_WORKER_ID")):
        return True
    if glob.glob("/dev/accel[0-9]*"):
        return True
    return bool(glob.glob("/dev/vfio/[0-9]*")) and importlib.util.find_spec("libtpu") is not None


def make_strategy(plan: StrategyPlan) -> tf.distribute.Strategy:
    """Build the strategy of a plan (connects to and initialises the TPU for ``tpu``)."""
    try:
        if plan.kind == "tpu":
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        if plan.kind == "gpu":
            return tf.distribute.OneDeviceStrategy("/gpu:0")
        if plan.kind == "multi-gpu":
            return tf.distribute.MirroredStrategy()
        if plan.kind == "multi-worker":
            cluster = {role: hosts for role, hosts in plan.tf_config["cluster"].items() if role in ("chief", "worker")}
            resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec(cluster),
                task_type=plan.tf_config["task"]["type"],
                task_id=int(plan.tf_config["task"]["index"]),
                rpc_layer="grpc",
            )
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        # cpu: an explicit strategy too, so that every kind takes the same (distributed) code path
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise DeepFaceError(
            f"Cannot set up the {plan.kind} strategy ({type(error).__name__}: {error}); "
            "pick another with --strategy."
        ) from None


# --------------------------------------------------------------------------------------------------
# Input checks: every user error is found before training starts.


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """The TFRecord shards of one directory, as its manifest (from `deepface tfrecords`) describes them."""

    directory: str
    shards: tuple[str, ...]  # sorted paths
    records: Mapping[str, int]  # shard file name -> records
    image_size: int
    num_classes: int | None
    classes_sha256: str | None
    manifest_sha256: str
    alignment: str = "none"  # how the faces were cut out: "landmarks", "detector" or "none" (deepface.faces)

    def count(self, shards: Sequence[str]) -> int:
        """Records in some of the shards."""
        return sum(self.records[posixpath.basename(shard)] for shard in shards)


def _read(path: str) -> bytes:
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def read_shard_set(tfrecords_dir: str | os.PathLike) -> ShardSet:
    """Reads the manifest of a TFRecord directory and checks its shards against it.

    Raises:
        DeepFaceError: no manifest (an unfinished build) or an unreadable one; shards missing, empty,
            not in the manifest, or of another size than the manifest says (e.g. truncated).
    """
    directory = tf_path(tfrecords_dir)
    manifest_path = posixpath.join(directory, MANIFEST_FILE)
    rebuild = "rebuild the directory with `deepface tfrecords`"
    if not tf.io.gfile.exists(manifest_path):
        raise DeepFaceError(
            f"{manifest_path} not found: --tfrecords must be a finished output of `deepface tfrecords` "
            "(its manifest.json is written last; rerun that stage to finish the build)."
        )
    manifest_bytes = _read(manifest_path)
    try:
        manifest = json.loads(manifest_bytes)
        entries = {posixpath.basename(entry["file"]): entry for entry in manifest["shards"]}
        records = {name: int(entry["records"]) for name, entry in entries.items()}
        image_size = int(manifest["image_size"])
    except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
        raise DeepFaceError(
            f"{manifest_path} is not a TFRecords manifest ({type(error).__name__}: {error}; it needs shards "
            f"with file and records, and image_size): {rebuild}."
        ) from None
    shards = list_shards(directory, manifest.get("split"))
    found = {posixpath.basename(shard) for shard in shards}
    missing, unlisted = sorted(set(records) - found), sorted(found - set(records))
    if missing:
        raise DeepFaceError(
            f"{len(missing)} shard(s) listed in {manifest_path} are missing, e.g. {missing[0]}: {rebuild}."
        )
    if unlisted:
        raise DeepFaceError(
            f"{posixpath.join(directory, unlisted[0])} is not listed in {manifest_path}: remove stray shards "
            f"or {rebuild}."
        )
    for shard in shards:
        name, size = posixpath.basename(shard), tf.io.gfile.stat(shard).length
        if records[name] < 1 or size == 0:
            raise DeepFaceError(f"TFRecord shard {shard} is empty: {rebuild}.")
        expected = entries[name].get("bytes")
        if expected is not None and size != int(expected):
            raise DeepFaceError(
                f"TFRecord shard {shard} has {size} bytes, its manifest says {expected} (truncated or "
                f"overwritten): {rebuild}."
            )
    return ShardSet(
        directory=directory,
        shards=tuple(shards),
        records=records,
        image_size=image_size,
        num_classes=manifest.get("num_classes"),
        classes_sha256=manifest.get("classes_sha256"),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        alignment=str(manifest.get("alignment") or "none"),
    )


def find_corrupt_shard(shards: Sequence[str]) -> str | None:
    """The first shard whose records fail TFRecord's checksums, or None (reads every shard)."""
    for shard in shards:
        try:
            tf.data.TFRecordDataset(shard).reduce(np.int64(0), lambda count, _: count + 1).numpy()
        except tf.errors.DataLossError:
            return shard
    return None


@contextlib.contextmanager
def naming_corrupt_shards(shards: Sequence[str]) -> Iterator[None]:
    """Turns TensorFlow's DataLossError (a record failing its checksum, found while reading the data)
    into a DeepFaceError naming the shard."""
    try:
        yield
    except tf.errors.DataLossError:
        shard = find_corrupt_shard(shards)
        where = (f"TFRecord shard {shard} is corrupt (a record fails its checksum)" if shard
                 else "A TFRecord shard is corrupt")
        raise DeepFaceError(
            f"{where}: rebuild the TFRecords with `deepface tfrecords`, then rerun training: it resumes from "
            "its last checkpoint."
        ) from None


def read_class_map(labels_dir: str | os.PathLike) -> tuple[bytes, list[str]]:
    """The bytes and identities of ``<labels_dir>/classes.txt`` (line index = class id)."""
    path = posixpath.join(tf_path(labels_dir), CLASSES_FILE)
    if not tf.io.gfile.exists(path):
        raise DeepFaceError(f"{path} not found: --labels must be the output directory of `deepface labels`.")
    data = _read(path)
    # Local files get load_classes' line-by-line checks; a remote one is trusted once its hash
    # matches the class map the records were built with (checked by check_class_map).
    classes = data.decode("utf-8").splitlines() if is_remote(path) else load_classes(path)
    return data, classes


def check_class_map(shard_set: ShardSet, classes_bytes: bytes, classes: Sequence[str], labels_dir) -> None:
    """The class map must be the one the records were labelled with (count and sha256)."""
    if shard_set.num_classes is not None and shard_set.num_classes != len(classes):
        raise DeepFaceError(
            f"The TFRecords in {shard_set.directory} were labelled with {shard_set.num_classes} classes but "
            f"{labels_dir}/{CLASSES_FILE} lists {len(classes)}: pass the labels directory they were built "
            "with, or rebuild them with this one."
        )
    if shard_set.classes_sha256 and shard_set.classes_sha256 != hashlib.sha256(classes_bytes).hexdigest():
        raise DeepFaceError(
            f"{labels_dir}/{CLASSES_FILE} is not the class map the TFRecords in {shard_set.directory} were "
            "labelled with (sha256 differs): pass the labels directory they were built with, or rebuild them."
        )


def check_image_size(config: ModelConfig, shard_set: ShardSet) -> None:
    if config.image_size != shard_set.image_size:
        raise DeepFaceError(
            f"Preset {config.name!r} takes {config.image_size}-pixel images but the TFRecords in "
            f"{shard_set.directory} hold {shard_set.image_size}-pixel ones: pick a preset of that size or "
            f"rebuild the TFRecords with --image-size {config.image_size}."
        )


def check_batch_size(batch_size: int, replicas: int, train_records: int) -> None:
    """The global batch must be positive, split evenly over the replicas and fit in the training data."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise DeepFaceError(f"--batch-size {batch_size!r} must be a positive integer.")
    if batch_size % replicas:
        raise DeepFaceError(
            f"--batch-size {batch_size} (global) does not divide over {replicas} replicas: use a multiple of "
            f"{replicas}."
        )
    if batch_size > train_records:
        raise DeepFaceError(
            f"--batch-size {batch_size} is larger than the {train_records} training records: lower it "
            "(every step takes a full batch)."
        )


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The checked inputs of a run: shards, class map and record counts."""

    image_size: int
    classes: list[str]
    classes_bytes: bytes
    train_shards: list[str]
    validation_shards: list[str]
    train_records: int
    validation_records: int
    manifest_sha256: str
    alignment: str = "none"


def prepare_data(
    tfrecords_dir, labels_dir, config: ModelConfig, *, validation_fraction: float, validation_tfrecords=None
) -> TrainingData:
    """Reads and cross-checks the shards, the class map and the preset; splits off validation shards."""
    shard_set = read_shard_set(tfrecords_dir)
    classes_bytes, classes = read_class_map(labels_dir)
    check_class_map(shard_set, classes_bytes, classes, labels_dir)
    check_image_size(config, shard_set)
    train_shards, validation_shards = split_validation_shards(shard_set.shards, validation_fraction)
    validation_records = shard_set.count(validation_shards)
    if validation_tfrecords is not None:
        if validation_fraction > 0:
            raise DeepFaceError("Pass either --validation-tfrecords or --validation-fraction, not both.")
        validation_set = read_shard_set(validation_tfrecords)
        check_class_map(validation_set, classes_bytes, classes, labels_dir)
        check_image_size(config, validation_set)
        validation_shards, validation_records = list(validation_set.shards), validation_set.count(validation_set.shards)
    return TrainingData(
        image_size=shard_set.image_size,
        classes=list(classes),
        classes_bytes=classes_bytes,
        train_shards=train_shards,
        validation_shards=validation_shards,
        train_records=shard_set.count(train_shards),
        validation_records=validation_records,
        manifest_sha256=shard_set.manifest_sha256,
        alignment=shard_set.alignment,
    )


# --------------------------------------------------------------------------------------------------
# Callbacks.


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """`keras.callbacks.ReduceLROnPlateau` whose counters survive a restart.

    Keras resets the counters at the start of every ``fit``; this one keeps them across ``fit`` calls
    and exposes them (`get_state` / `set_state`) for `TrainingState` to checkpoint.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reset()

    def on_train_begin(self, logs=None):
        pass  # keep the counters (a resumed run restores them with set_state)

    def get_state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class TrainingState(keras.callbacks.Callback):
    """Checkpoints everything a restarted run needs to continue exactly where the last one stopped.

    One `tf.train.Checkpoint` (written atomically by `tf.train.CheckpointManager`; local or gs://),
    numbered by the global step, holds:

    - every model variable (weights, and the dropout's random generator state);
    - the optimizer (momentum, iteration count, learning rate, loss scale);
    - a JSON progress record: epochs and steps done, the ReduceLROnPlateau counters, the metric sums
      of the unfinished epoch, the per-epoch history and the runs (attempts) so far.

    It is saved every ``save_steps`` steps inside an epoch and at the end of every epoch.

    Use: call `restore` before training; before each ``fit`` call `begin_fit` (``fit`` numbers its
    batches from 0 even when an epoch resumes at step ``k``).
    """

    def __init__(
        self,
        model: keras.Model,
        directory: str,
        *,
        steps_per_epoch: int,
        save_steps: int,
        plateau: ResumableReduceLROnPlateau,
        max_to_keep: int = 2,
    ):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.save_steps = save_steps
        self.plateau = plateau
        self.epoch = 0  # epochs completed
        self.step = 0  # steps completed in the current epoch
        self.history: dict[str, list[float]] = {}
        self.runs: list[dict] = []
        self._step_offset = 0
        self._pending_metrics: list[float] | None = None
        with tf.device("/cpu:0"):
            self._progress = tf.Variable("", dtype=tf.string, trainable=False, name="progress")
        self._checkpoint = tf.train.Checkpoint(
            model_variables=list(model.variables), optimizer=model.optimizer, progress=self._progress
        )
        self.manager = tf.train.CheckpointManager(
            self._checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name="ckpt"
        )

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def restore(self) -> bool:
        """Load the latest checkpoint, if any, and record this run's starting point. True if resumed."""
        latest = self.manager.latest_checkpoint
        if latest is not None:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
            progress = json.loads(self._progress.numpy().decode("utf-8"))
            self.epoch, self.step = progress["epoch"], progress["step"]
            self.history = progress["history"]
            self.runs = progress["runs"]
            self.plateau.set_state(progress["plateau"])
            self._pending_metrics = progress["metrics"] if self.step else None
        self.runs.append({"start_epoch": self.epoch, "start_step": self.step, "steps": 0})
        return latest is not None

    def begin_fit(self) -> None:
        self._step_offset = self.step

    def on_epoch_begin(self, epoch, logs=None):
        # fit() has just reset the metrics: a resumed epoch continues from its saved sums.
        if self._pending_metrics is not None:
            variables = self.model.metrics_variables
            if len(variables) != len(self._pending_metrics):
                raise RuntimeError(f"{len(variables)} metric variables, {len(self._pending_metrics)} saved")
            for variable, value in zip(variables, self._pending_metrics):
                variable.assign(value)
            self._pending_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        before = self.global_step
        steps_done = self._step_offset + batch + 1
        self.runs[-1]["steps"] += steps_done - self.step
        self.step = steps_done
        mid_epoch = self.step < self.steps_per_epoch  # the epoch's end saves anyway
        if self.save_steps and mid_epoch and self.global_step // self.save_steps > before // self.save_steps:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        self.epoch, self.step, self._step_offset = epoch + 1, 0, 0
        self.save()

    def save(self) -> str:
        metrics = [float(np.asarray(v)) for v in self.model.metrics_variables] if self.step else []
        progress = {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "plateau": self.plateau.get_state(),
            "metrics": metrics,
            "history": self.history,
            "runs": self.runs,
        }
        self._progress.assign(json.dumps(progress, sort_keys=True))
        path = self.manager.save(checkpoint_number=self.global_step)
        logger.info("Checkpoint %s: epoch %d, step %d/%d", path, self.epoch, self.step, self.steps_per_epoch)
        return path


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, learning rate, step count and throughput (images per second)."""

    def __init__(self, epochs: int, global_batch_size: int):
        super().__init__()
        self.epochs = epochs
        self.global_batch_size = global_batch_size
        self._start = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        seconds = max(time.perf_counter() - self._start, 1e-9)
        values = ", ".join(f"{name} {value:.4g}" for name, value in sorted((logs or {}).items()))
        logger.info(
            "Epoch %d/%d: %s; %d steps in %.1f s (%.1f img/s)", epoch + 1, self.epochs, values, self._steps,
            seconds, self._steps * self.global_batch_size / seconds,
        )


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs over the whole run (training calls ``fit`` once per epoch)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.run_epochs})


class ScalarSummaries(keras.callbacks.Callback):
    """Writes each epoch's metrics as TensorBoard scalars, laid out as `keras.callbacks.TensorBoard`
    does (``train/`` and ``validation/`` runs, tags ``epoch_<metric>``, step = epoch).

    Only TensorFlow's own summary ops are used: the ``tensorboard`` package is not needed to write.
    """

    _SCALAR = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str):
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(posixpath.join(self.log_dir, run))
        return self._writers[run]

    def on_epoch_end(self, epoch, logs=None):
        for name, value in sorted((logs or {}).items()):
            run, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            with self._writer(run).as_default():
                tf.summary.write(f"epoch_{metric}", tf.constant(float(value)), step=epoch, metadata=self._SCALAR)
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Close the event files (training may span several ``fit`` calls, so not at the end of each)."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


# --------------------------------------------------------------------------------------------------
# Model and input pipelines.


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing, of integer labels ``(batch,)`` and softmax probabilities
    ``(batch, classes)``: the one-hot labels are made inside the loss, so batches keep int32 labels."""

    def __init__(self, label_smoothing: float, name: str = "crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, labels, probabilities):
        labels = keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(probabilities)[-1])
        return keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def sparse_crossentropy(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The training loss: sparse categorical cross-entropy, with label smoothing when asked."""
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(name="crossentropy")


def compile_classifier(
    config: ModelConfig,
    num_classes: int,
    *,
    precision: str,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    label_smoothing: float,
    jit_compile: bool,
    optimizer: str = "sgd",
    steps_per_execution: int,
    seed: int,
) -> keras.Model:
    """The classifier compiled with SGD (momentum; the paper) or Adam in the current distribution scope.

    The optimizer is built, so that its variables exist before a checkpoint is restored into them.
    float16 gets dynamic loss scaling; float32 weights are kept under every precision.
    """
    model = build_classifier(config, num_classes, seed=seed, dtype_policy=DTYPE_POLICIES[precision])
    if optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=weight_decay or None)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                         weight_decay=weight_decay or None)
    if precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=sparse_crossentropy(label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    optimizer.build(model.trainable_variables)
    return model


def epoch_batches_fn(
    data: TrainingData,
    epoch: int,
    *,
    global_batch_size: int,
    steps_per_epoch: int,
    seed: int,
    shuffle_buffer: int,
    augment: bool,
    skip_steps: int = 0,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``: the training batches of one
    epoch, ``steps_per_epoch`` of them, less the first ``skip_steps``.

    Every epoch is its own deterministic pipeline (seed `epoch_seed`), so the batches of (epoch, step)
    are the same in a resumed run as in an uninterrupted one, and resuming mid-epoch reads through at
    most one epoch's records. The pipeline is built inside ``flat_map``, hence afresh for every
    iterator: a seeded shuffle otherwise reshuffles for each new iterator, and Keras opens one extra
    iterator to build the model under a distribution strategy.
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Each step takes one per-replica batch for every replica this input pipeline feeds.
        batches_per_step = context.num_replicas_in_sync // context.num_input_pipelines

        def pipeline(_):
            return make_dataset(
                data.train_shards, batch_size=context.get_per_replica_batch_size(global_batch_size),
                image_size=data.image_size, training=True, shuffle_buffer=shuffle_buffer, augment=augment,
                seed=epoch_seed(seed, epoch), deterministic=True, repeat=True,
                num_input_pipelines=context.num_input_pipelines, input_pipeline_id=context.input_pipeline_id,
            ).take(steps_per_epoch * batches_per_step).skip(skip_steps * batches_per_step)

        return tf.data.Dataset.from_tensors(0).flat_map(pipeline).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def validation_batches(data: TrainingData, batch_size: int, *, static_shapes: bool) -> tf.data.Dataset | None:
    """The validation records in order, in batches of at most ``batch_size`` (None without validation).

    ``static_shapes`` (TPU) drops the last partial batch. The dataset's length is declared, so that
    Keras stops at the last batch instead of running into the end of the data at every evaluation.
    """
    if not data.validation_records:
        return None
    batch = min(batch_size, data.validation_records)
    batches = data.validation_records // batch if static_shapes else -(-data.validation_records // batch)
    dataset = make_dataset(data.validation_shards, batch_size=batch, image_size=data.image_size, training=False,
                           drop_remainder=static_shapes)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def fit_remaining(
    model: keras.Model,
    distribution: tf.distribute.Strategy,
    state: TrainingState,
    epoch_batches: Callable[..., Callable],
    *,
    epochs: int,
    steps_per_epoch: int,
    **fit_args,
) -> None:
    """Train from the state's position (epoch, step) to the end of ``epochs``, one ``fit`` per epoch.

    ``fit`` knows no step inside an epoch, so a resumed epoch is a ``fit`` of its remaining steps.

    Args:
        epoch_batches: ``(epoch, skip_steps=...) -> dataset_fn``, e.g. a partial `epoch_batches_fn`.
        fit_args: passed to ``model.fit`` (callbacks, validation data, verbosity).
    """
    while state.epoch < epochs:
        skip = state.step
        state.begin_fit()
        batches = distribution.distribute_datasets_from_function(epoch_batches(state.epoch, skip_steps=skip))
        model.fit(batches, initial_epoch=state.epoch, epochs=state.epoch + 1, steps_per_epoch=steps_per_epoch - skip,
                  shuffle=False, **fit_args)


# --------------------------------------------------------------------------------------------------
# The model directory.


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
                data = _read(path)
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
    writer.write_json("metadata.json", metadata)
    writer.write_json("history.json", history)
    writer.write("training_curves.png", training_curves_png(history, title=title))
    writer.add_tree(dirs.tensorboard_dir, LOGS_SUBDIR)
    return dict(sorted(writer.files.items()))


def _check_run_config(checkpoint_dir: str, run_config: dict, is_chief: bool) -> None:
    """Checkpoints resume only a run with the same settings (else they would train something else)."""
    path = posixpath.join(checkpoint_dir, RUN_CONFIG_FILE)
    if tf.io.gfile.exists(path):
        saved = read_json(path)
        changed = sorted(key for key in set(saved) | set(run_config) if saved.get(key) != run_config.get(key))
        if changed:
            details = "; ".join(f"{key}: {saved.get(key)!r} -> {run_config.get(key)!r}" for key in changed)
            raise DeepFaceError(
                f"The checkpoints in {checkpoint_dir} belong to a run with other settings ({details}): "
                "use the same settings to resume, or another output (or checkpoint) directory to start over."
            )
    elif is_chief:
        write_bytes(path, dumps_json(run_config).encode("utf-8"))


def _start_clean(dirs: OutputDirs, overwrite: bool) -> None:
    """Refuse to retrain over a complete model directory unless asked to (then start from scratch), and
    delete what a killed run left half-written there (temporaries of atomic writes)."""
    if not is_remote(dirs.model_dir) and os.path.isdir(dirs.model_dir):
        remove_temporaries(dirs.model_dir)
    manifest_path = posixpath.join(dirs.model_dir, MANIFEST_FILE)
    if not tf.io.gfile.exists(manifest_path):
        return
    if not overwrite:
        raise DeepFaceError(
            f"{dirs.model_dir} already holds a complete trained model ({MANIFEST_FILE} exists): "
            "choose another --out, or pass --overwrite to train again from scratch."
        )
    tf.io.gfile.remove(manifest_path)  # first: the directory stops looking complete
    if tf.io.gfile.exists(dirs.checkpoint_dir):
        tf.io.gfile.rmtree(dirs.checkpoint_dir)


# --------------------------------------------------------------------------------------------------
# The stage.


def train(
    tfrecords_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    preset: str | ModelConfig = "paper",
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    min_learning_rate: float = 1e-4,
    momentum: float = 0.9,
    optimizer: str | None = None,
    lr_factor: float = 0.1,
    lr_patience: int = 1,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
    validation_fraction: float = 0.0,
    validation_tfrecords: str | os.PathLike | None = None,
    steps_per_epoch: int | None = None,
    seed: int = 0,
    strategy: str | tf.distribute.Strategy = "auto",
    precision: str = "auto",
    jit_compile: bool = False,
    steps_per_execution: int = 1,
    shuffle_buffer: int = 10_000,
    augment: bool = False,
    checkpoint_steps: int = 500,
    keep_checkpoints: bool = False,
    feature_max_batches: int | None = None,
    overwrite: bool = False,
    env: Mapping[str, str] | None = None,
) -> dict:
    """Train the DeepFace classifier on TFRecords and write the model directory (see the module doc).

    Args:
        tfrecords_dir: output directory of `deepface tfrecords` (local or gs://).
        labels_dir: output directory of `deepface labels` (its classes.txt).
        out_dir: the model directory (local or gs://); None uses ``AIP_MODEL_DIR``.
        preset: a name in `deepface.model.PRESETS` (or a ModelConfig); its input size must be the records'.
        epochs: training epochs.
        batch_size: global batch size (over all replicas); must divide over the replicas. None: the
            preset's (`deepface.config.RECIPES`: paper 128, small presets 32), as for ``learning_rate``
            and ``optimizer``; a value given always wins.
        learning_rate: initial learning rate; for sgd for a batch of 128, scaled linearly to
            ``batch_size``, for adam as given. None: the preset's (paper 0.01, small presets 0.001).
        min_learning_rate: floor of the plateau reductions, for a batch of 128 (scaled alike).
        momentum: SGD momentum.
        optimizer: ``sgd`` (the paper's; learning rates scale linearly with the batch) or ``adam`` (learning
            rates used as given). None: the preset's (paper sgd, small presets adam: one SGD rate is too
            large for their conv layers' summed gradients and too small for the unshared ones).
        lr_factor: learning-rate factor on a plateau of the monitored loss (val_loss, else loss).
        lr_patience: epochs without improvement before the learning rate drops.
        weight_decay: decoupled weight decay of SGD (0: none).
        label_smoothing: label smoothing of the cross-entropy (0: none).
        validation_fraction: share of the shards held out for validation (whole shards, chosen by name).
            `deepface tfrecords` writes records in archive order, grouped by identity, so held-out
            shards mostly hold identities the classifier never trains on: their loss watches
            over-fitting, not closed-set accuracy.
        validation_tfrecords: a separate validation TFRecord directory (instead of the fraction).
        steps_per_epoch: steps per epoch; None: each training record once (``records // batch_size``).
        seed: seeds the weights, dropout, data order and augmentation.
        strategy: ``auto``, ``tpu``, ``gpu``, ``multi-gpu``, ``multi-worker`` or ``cpu`` (`choose_strategy`),
            or a ``tf.distribute.Strategy`` built by the caller.
        precision: ``auto`` (bfloat16 on TPU, else float32), ``float32``, ``bfloat16`` or ``float16``
            (mixed precision: float32 weights, F8 softmax in float32).
        jit_compile: compile the training step with XLA.
        steps_per_execution: training steps per call of the compiled function (TPU throughput).
        shuffle_buffer: records in the shuffle buffer.
        augment: random flips and shifts (see `deepface.data.make_dataset`).
        checkpoint_steps: checkpoint every this many steps (0: only at the end of each epoch).
        keep_checkpoints: keep the checkpoints once the model directory is complete.
        feature_max_batches: batches of training data for the F7 maxima (None: all the training data).
        overwrite: train again from scratch even if ``out_dir`` holds a complete model.
        env: environment variables (default ``os.environ``): TF_CONFIG, CLUSTER_SPEC, AIP_*.

    Returns:
        The manifest written last to ``<model dir>/manifest.json`` (an empty dict on non-chief workers).

    Raises:
        DeepFaceError: bad input found before any training: missing or empty shards, a class map or an
            image size that disagrees with the records, an impossible batch size, a bad option.
    """
    env = dict(os.environ if env is None else env)
    recipe = training_recipe(preset, optimizer=optimizer, batch_size=batch_size, learning_rate=learning_rate)
    optimizer, batch_size, learning_rate = recipe.optimizer, recipe.batch_size, recipe.learning_rate
    check_options(
        optimizer=optimizer, epochs=epochs, learning_rate=learning_rate, min_learning_rate=min_learning_rate,
        momentum=momentum, lr_factor=lr_factor, lr_patience=lr_patience, weight_decay=weight_decay,
        label_smoothing=label_smoothing, validation_fraction=validation_fraction, checkpoint_steps=checkpoint_steps,
        steps_per_execution=steps_per_execution, steps_per_epoch=steps_per_epoch,
        feature_max_batches=feature_max_batches, shuffle_buffer=shuffle_buffer,
    )
    config = get_config(preset)
    dirs = resolve_output_dirs(out_dir, env)
    data = prepare_data(tfrecords_dir, labels_dir, config, validation_fraction=validation_fraction,
                        validation_tfrecords=validation_tfrecords)
    if isinstance(strategy, tf.distribute.Strategy):
        distribution = strategy
        plan = StrategyPlan(
            "tpu" if isinstance(strategy, tf.distribute.TPUStrategy) else type(strategy).__name__,
            is_chief=strategy.extended.should_checkpoint, reason="given",
        )
    else:
        plan = choose_strategy(strategy, env=env, gpus=tf.config.list_physical_devices("GPU"), has_tpu=detect_tpu(env))
        distribution = make_strategy(plan)
    precision = choose_precision(precision, plan.kind)
    replicas = distribution.num_replicas_in_sync
    check_batch_size(batch_size, replicas, data.train_records)
    if plan.is_chief:
        _start_clean(dirs, overwrite)
    steps = steps_per_epoch or data.train_records // batch_size
    if optimizer == "sgd":
        initial_lr = scaled_learning_rate(learning_rate, batch_size)
        min_lr = scaled_learning_rate(min_learning_rate, batch_size)
        scaling = f"{learning_rate:g} x {batch_size}/{REFERENCE_BATCH_SIZE} (linear scaling)"
    else:  # Adam: as given
        initial_lr, min_lr, scaling = learning_rate, min_learning_rate, "as given (Adam: no scaling)"
    logger.info(
        "Strategy %s (%s): %d replica(s); global batch %d = %d per replica; %s learning rate %g = %s, "
        "floor %g; precision %s; XLA %s",
        plan.kind, plan.reason, replicas, batch_size, batch_size // replicas, optimizer, initial_lr, scaling,
        min_lr, precision, "on" if jit_compile else "off",
    )
    logger.info(
        "Training %s on %d records in %d shard(s): %d epochs of %d steps; validating on %d records",
        config.name, data.train_records, len(data.train_shards), epochs, steps, data.validation_records,
    )

    checkpoint_dir = dirs.checkpoint_dir if plan.is_chief else tempfile.mkdtemp(prefix="deepface-worker-checkpoints-")
    _check_run_config(checkpoint_dir, {
        "preset": config.to_dict(), "num_classes": len(data.classes), "batch_size": batch_size,
        "steps_per_epoch": steps, "seed": seed, "optimizer": optimizer, "learning_rate": learning_rate,
        "min_learning_rate": min_learning_rate, "momentum": momentum, "lr_factor": lr_factor,
        "lr_patience": lr_patience, "weight_decay": weight_decay, "label_smoothing": label_smoothing,
        "precision": precision, "augment": augment, "shuffle_buffer": shuffle_buffer,
        "train_shards": [posixpath.basename(shard) for shard in data.train_shards],
        "tfrecords_manifest_sha256": data.manifest_sha256,
    }, plan.is_chief)

    keras.utils.set_random_seed(seed)
    with distribution.scope():
        model = compile_classifier(
            config, len(data.classes), precision=precision, optimizer=optimizer, learning_rate=initial_lr,
            momentum=momentum,
            weight_decay=weight_decay, label_smoothing=label_smoothing, jit_compile=jit_compile,
            steps_per_execution=steps_per_execution, seed=seed,
        )
    monitor = "val_loss" if data.validation_records else "loss"
    plateau = ResumableReduceLROnPlateau(
        monitor=monitor, factor=lr_factor, patience=lr_patience, min_lr=min_lr, verbose=1
    )
    state = TrainingState(model, checkpoint_dir, steps_per_epoch=steps, save_steps=checkpoint_steps, plateau=plateau)
    if state.restore():
        logger.info(
            "Resuming from %s at epoch %d, step %d of %d (global step %d), learning rate %g",
            state.manager.latest_checkpoint, state.epoch, state.step, steps, state.global_step,
            float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
        )
    # Non-chief workers write their summaries to a throw-away directory (their checkpoints' one).
    summaries = ScalarSummaries(dirs.tensorboard_dir if plan.is_chief else posixpath.join(checkpoint_dir, LOGS_SUBDIR))
    callbacks = [plateau, state, EpochLogger(epochs, batch_size), summaries, RunProgbar(epochs)]
    validation_data = validation_batches(data, batch_size, static_shapes=plan.kind == "tpu")
    epoch_batches = functools.partial(
        epoch_batches_fn, data, global_batch_size=batch_size, steps_per_epoch=steps, seed=seed,
        shuffle_buffer=shuffle_buffer, augment=augment,
    )
    all_shards = [*data.train_shards, *data.validation_shards]
    try:
        with naming_corrupt_shards(all_shards):
            fit_remaining(
                model, distribution, state, epoch_batches, epochs=epochs, steps_per_epoch=steps,
                validation_data=validation_data, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 0,
            )
    finally:
        summaries.close()
    run = state.runs[-1]
    logger.info("Training done: %d epochs of %d steps; this run trained %d steps from epoch %d, step %d",
                state.epoch, steps, run["steps"], run["start_epoch"], run["start_step"])
    if not plan.is_chief:
        tf.io.gfile.rmtree(checkpoint_dir)
        return {}

    with naming_corrupt_shards(all_shards):
        classifier, embedding = export_models(
            model, config, data, batch_size=batch_size // replicas, feature_max_batches=feature_max_batches
        )
    history = {
        "metrics": state.history,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "global_batch_size": batch_size,
        "optimizer_steps": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
        "runs": state.runs,
    }
    metadata = {
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
            "augment": augment,
            "shuffle_buffer": shuffle_buffer,
        },
        "seed": seed,
        "strategy": {"kind": plan.kind, "replicas": replicas, "precision": precision, "jit_compile": jit_compile},
        "batch_size": {"global": batch_size, "per_replica": batch_size // replicas},
        "learning_rate": {
            "base": learning_rate, "reference_batch_size": REFERENCE_BATCH_SIZE, "initial": initial_lr,
            "final": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), "min": min_lr,
            "factor": lr_factor, "patience": lr_patience, "monitor": monitor,
        },
        "optimizer": {"name": optimizer, "momentum": momentum if optimizer == "sgd" else None,
                      "weight_decay": weight_decay},
        "label_smoothing": label_smoothing,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "feature_max_batches": feature_max_batches,
        "versions": deepface.versions(),
    }
    files = write_model_files(
        dirs, classifier=classifier, embedding=embedding, classes_bytes=data.classes_bytes, metadata=metadata,
        history=history, title=f"DeepFace {config.name}",
    )
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "stage": "train",
        "files": files,
        "preset": config.name,
        "num_classes": len(data.classes),
        "image_size": data.image_size,
        "epochs": epochs,
        "final_metrics": {name: values[-1] for name, values in sorted(state.history.items()) if values},
    }
    write_manifest(dirs.model_dir, manifest)  # last: the model directory is complete
    logger.info("Wrote the model directory %s", dirs.model_dir)
    if not keep_checkpoints and tf.io.gfile.exists(dirs.checkpoint_dir):
        tf.io.gfile.rmtree(dirs.checkpoint_dir)  # only now: a kill before the manifest can still resume
    return manifest
