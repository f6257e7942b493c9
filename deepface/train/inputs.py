"""The inputs of a training run, checked before any training: TFRecord shards, class map, batch size.

`prepare_data` takes the output directories of `deepface tfrecords` and `deepface labels` (local or
gs://) and a `ModelConfig`, and returns `TrainingData`: the training and validation shards (validation:
whole shards held out by `split_validation_shards`, or a separate TFRecord directory), their record
counts, the class map and the TFRecords manifest's hash. `check_batch_size` checks the global batch
against the replicas and the records. `naming_corrupt_shards` turns a checksum failure met while reading
the data into an error that names the shard.

Every check raises `DeepFaceError` with what to do: a missing or unfinished manifest, shards missing,
stray, empty or truncated, record counts that disagree with the manifest's totals, a labels directory
without its manifest or whose manifest disagrees with classes.txt, a class map or an image size that
disagrees with the records, a class map whose F8 layer would exceed `MAX_F8_BYTES`, an impossible batch
size. A class map with more classes than there are training records is logged as a warning.

The checks are cheap (sizes, counts, one hash of the small files): no shard is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from deepface.contracts import MANIFEST_FILE
from deepface.data import list_shards
from deepface.errors import DeepFaceError
from deepface.files import is_remote, tf_path
from deepface.labels import CLASSES_FILE, load_classes
from deepface.model import ModelConfig

logger = logging.getLogger(__name__)

# The most bytes of float32 F8 weights (f7_units + 1) x classes a run may build: a class map beyond it is
# refused before any model is built. Training holds about three times that in accelerator memory
# (weights, gradients, SGD momentum); 4 GiB is 262,000 classes for the paper preset (F7: 4096 units).
MAX_F8_BYTES = 4 * 2**30


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


def read_bytes(path: str) -> bytes:
    """The bytes of a local or gs:// file."""
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
            f"{manifest_path} not found: tfrecords_dir must be a finished output of `deepface tfrecords` "
            "(its manifest.json is written last; rerun that stage to finish the build)."
        )
    manifest_bytes = read_bytes(manifest_path)
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
    totals = {"num_records": sum(records.values()), "num_shards": len(records)}
    for key, value in totals.items():
        if key in manifest and manifest[key] != value:
            raise DeepFaceError(
                f"{manifest_path} says {key} {manifest[key]} but its shards add up to {value} (an edited or "
                f"mixed-up manifest): {rebuild}."
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
        raise DeepFaceError(f"{path} not found: labels_dir must be the output directory of `deepface labels`.")
    data = read_bytes(path)
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


def check_labels_manifest(labels_dir, classes_bytes: bytes, classes: Sequence[str]) -> None:
    """The labels directory must be a finished output of `deepface labels` whose manifest vouches for this
    classes.txt (``num_classes`` and ``classes_sha256``).

    Raises:
        DeepFaceError: no manifest (an interrupted or running labels stage), an unreadable one, or one
            that disagrees with classes.txt.
    """
    path = posixpath.join(tf_path(labels_dir), MANIFEST_FILE)
    rebuild = "rebuild it with `deepface labels`"
    if not tf.io.gfile.exists(path):
        raise DeepFaceError(f"{path} not found: labels_dir must be a finished output of `deepface labels` (its "
                            f"manifest.json is written last); {rebuild}.")
    try:
        manifest = json.loads(read_bytes(path))
        expected = {"num_classes": manifest["num_classes"], "classes_sha256": manifest["classes_sha256"]}
    except (ValueError, KeyError, TypeError) as error:
        raise DeepFaceError(f"{path} is not a labels manifest ({type(error).__name__}: {error}): {rebuild}.") from None
    found = {"num_classes": len(classes), "classes_sha256": hashlib.sha256(classes_bytes).hexdigest()}
    differences = [key for key in found if expected[key] != found[key]]
    if differences:
        raise DeepFaceError(f"{path} does not vouch for {CLASSES_FILE} beside it ({', '.join(differences)} "
                            f"differ: the file was changed or the stage interrupted): {rebuild}.")


def check_class_count(config: ModelConfig, classes: Sequence[str], train_records: int, labels_dir) -> None:
    """A class map the model can hold, and records for its classes.

    Raises:
        DeepFaceError: the F8 layer of ``config`` for these classes would hold more than `MAX_F8_BYTES`
            of float32 weights (naming labels_dir and preset).

    Logs a warning when there are more classes than training records: at least the difference has no
    record, and F8 grows with every class all the same.
    """
    f8_bytes = (config.f7_units + 1) * len(classes) * 4
    if f8_bytes > MAX_F8_BYTES:
        raise DeepFaceError(
            f"labels_dir {labels_dir}: its {CLASSES_FILE} lists {len(classes):,} classes, for which the F8 layer of "
            f"preset {config.name!r} would hold {f8_bytes / 2**30:.1f} GiB of weights, more than the "
            f"{MAX_F8_BYTES / 2**30:g} GiB limit (deepface.train.inputs.MAX_F8_BYTES): pass a class map of the "
            "identities the records hold, or a smaller preset."
        )
    if len(classes) > train_records:
        logger.warning(
            "labels_dir %s lists %d classes but the training data holds %d records: at least %d classes have "
            "no record (check that labels_dir matches the TFRecords)", labels_dir, len(classes), train_records,
            len(classes) - train_records)


def check_image_size(config: ModelConfig, shard_set: ShardSet) -> None:
    if config.image_size != shard_set.image_size:
        raise DeepFaceError(
            f"Preset {config.name!r} takes {config.image_size}-pixel images but the TFRecords in "
            f"{shard_set.directory} hold {shard_set.image_size}-pixel ones: pick a preset of that size or "
            f"rebuild the TFRecords with image_size={config.image_size}."
        )


def check_batch_size(batch_size: int, replicas: int, train_records: int) -> None:
    """The global batch must be positive, split evenly over the replicas and fit in the training data."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise DeepFaceError(f"batch_size={batch_size!r} must be a positive integer.")
    if batch_size % replicas:
        raise DeepFaceError(
            f"batch_size={batch_size} (global) does not divide over {replicas} replicas: use a multiple of "
            f"{replicas}."
        )
    if batch_size > train_records:
        raise DeepFaceError(
            f"batch_size={batch_size} is larger than the {train_records} training records: lower it "
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
    validation_manifest_sha256: str | None = None  # of a separate validation TFRecord directory


def prepare_data(
    tfrecords_dir, labels_dir, config: ModelConfig, *, validation_fraction: float, validation_tfrecords=None
) -> TrainingData:
    """Reads and cross-checks the shards, the class map (and its labels manifest) and the preset; splits off
    validation shards. Raises `DeepFaceError` (see the module docstring) before any model is built."""
    shard_set = read_shard_set(tfrecords_dir)
    classes_bytes, classes = read_class_map(labels_dir)
    check_class_map(shard_set, classes_bytes, classes, labels_dir)
    check_labels_manifest(labels_dir, classes_bytes, classes)
    check_image_size(config, shard_set)
    train_shards, validation_shards = split_validation_shards(shard_set.shards, validation_fraction)
    check_class_count(config, classes, shard_set.count(train_shards), labels_dir)
    validation_records = shard_set.count(validation_shards)
    validation_manifest_sha256 = None
    if validation_tfrecords is not None:
        if validation_fraction > 0:
            raise DeepFaceError("give validation_tfrecords or validation_fraction, not both.")
        validation_set = read_shard_set(validation_tfrecords)
        check_class_map(validation_set, classes_bytes, classes, labels_dir)
        check_image_size(config, validation_set)
        validation_shards, validation_records = list(validation_set.shards), validation_set.count(validation_set.shards)
        validation_manifest_sha256 = validation_set.manifest_sha256
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
        validation_manifest_sha256=validation_manifest_sha256,
    )
