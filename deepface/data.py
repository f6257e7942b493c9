"""The tf.data input pipeline: TFRecord shards (schema v1) -> batches of normalised face images.

Records hold faces already cut out by `deepface.faces.face_image` (aligned, at the training size);
`preprocess_image` decodes them and scales to [0, 1]. Image files (evaluate, verify) go through the same
`deepface.faces.face_image` first (`load_image_file`), so training and verification see the same crop.

Training datasets really shuffle: the shard order is shuffled every epoch and the serialized records
pass through a shuffle buffer counted in images (reshuffled every epoch), before decoding so that the
buffer holds small JPEG bytes rather than decoded images. Shards are split between input pipelines
(workers) by file, as `tf.distribute.InputContext` describes them.

Typical use:

```python
train_ds = make_dataset("out/tfrecords", split="train", batch_size=128, image_size=152,
                        training=True, augment=True, seed=0)
for images, labels in train_ds:  # float32 [128, 152, 152, 3] in [0, 1], int32 [128]
    ...
```
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from deepface.contracts import ENCODING_RESIZED, MANIFEST_FILE, SCHEMA_VERSION
from deepface.errors import DeepFaceError
from deepface.files import is_remote, read_image_file, read_json, tf_path
from deepface.lines import excerpt

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE

# TFRecord schema v1 (deepface.contracts.SCHEMA_VERSION), written by deepface.tfrecords (its manifest.json
# says "schema_version": 1).
FEATURES_V1 = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/identity": tf.io.FixedLenFeature([], tf.string, default_value=b""),
    "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=b""),
}

# Most shards read at once while training: more open shards mix the records of more shards.
MAX_INTERLEAVED_SHARDS = 16

# Augmentation: each image is flipped left-right with probability 1/2 and shifted by up to MAX_SHIFT of
# its side in each direction (zero fill, like the padding of non-square faces).
MAX_SHIFT = 0.05


def preprocess_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image and makes it a network input: `decode_to_size`, then `scale_image`.

    Args:
        encoded: scalar string tensor, the bytes of a JPEG, PNG, BMP or GIF (first frame) image of any
            size; grey images are expanded to 3 channels.
        image_size: side of the square output.

    Returns:
        float32 tensor ``[image_size, image_size, 3]`` in [0, 1].
    """
    return scale_image(decode_to_size(encoded, image_size))


def decode_to_size(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decodes one encoded image to 8 bits, fitted into ``image_size x image_size``.

    An image already of that size is returned as decoded; any other is resized to fit inside the
    square keeping its aspect ratio, centred on zeros (`resize_with_pad`), and rounded to 8 bits, as if
    it had been stored resized.

    Returns:
        uint8 tensor ``[image_size, image_size, 3]``.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)  # uint8 [h, w, 3]
    image = tf.cond(
        tf.reduce_all(tf.shape(image)[:2] == image_size),
        lambda: image,
        lambda: tf.saturate_cast(tf.round(resize_with_pad(image, image_size)), tf.uint8),
    )
    return tf.ensure_shape(image, [image_size, image_size, 3])


def scale_image(image: tf.Tensor) -> tf.Tensor:
    """uint8 ``[..., 3]`` -> float32 in [0, 1], the same shape: ``image / 255``.

    One `tf.quantization.dequantize` of the bytes read as quint8 (MIN_COMBINED over [0, 1] computes
    ``value * float32(1 / 255)``, bit for bit what ``tf.cast(image, tf.float32) * (1 / 255)`` gives): one
    pass over the float output instead of two, which matters on batches of 35 MB.
    """
    return tf.quantization.dequantize(tf.bitcast(image, tf.quint8), 0.0, 1.0, mode="MIN_COMBINED")


def resize_with_pad(image: tf.Tensor, size: int) -> tf.Tensor:
    """Fits an image into a square, keeping its aspect ratio, centred on zeros.

    The geometry of `deepface.faces.pad_geometry`, in integers: the longer side becomes ``size``,
    the shorter ``floor(shorter * size / longer)`` (at least 1), offsets rounded down. (The float32
    arithmetic of `tf.image.resize_with_pad` leaves some sides one pixel short, e.g. 480 of 640 -> 113
    of 152 instead of 114.) Resampling is bilinear and antialiased, like Pillow's, so images stored
    resized and images resized here look alike.

    Args:
        image: ``[height, width, 3]`` with values in [0, 255].
        size: side of the square.

    Returns:
        float32 ``[size, size, 3]`` in [0, 255].
    """
    height, width = tf.unstack(tf.shape(image)[:2])
    longer = tf.maximum(height, width)
    new_height = tf.maximum(1, height * size // longer)
    new_width = tf.maximum(1, width * size // longer)
    top = (longer - height) * size // (2 * longer)
    left = (longer - width) * size // (2 * longer)
    resized = tf.image.resize(image, tf.stack([new_height, new_width]), antialias=True)
    return tf.pad(resized, [[top, size - new_height - top], [left, size - new_width - left], [0, 0]])


def load_image_file(path: str | os.PathLike, image_size: int, *, align: bool = True, detector=None,
                    no_face: str = "skip") -> np.ndarray:
    """Reads one image file (local, file:// or gs://) as the network sees it: `deepface.faces.face_image`
    (the face found and aligned, EXIF orientation applied), then `scale_image`'s ``/ 255``.

    Args:
        path: the image file (any format of `deepface.faces.FORMATS`).
        image_size: side of the square output.
        align: align the face (the detector finds it); False fits the whole frame.
        detector: a `deepface.detect.FaceDetector` to reuse; None makes one when aligning.
        no_face: ``skip`` (an error) or ``center-crop`` when no face is found.

    Returns:
        float32 array ``[image_size, image_size, 3]`` in [0, 1], bit for bit ``scale_image`` of the crop.

    Raises:
        DeepFaceError: the file is missing, not a readable image, refused, or holds no face.
    """
    from deepface.faces import BadImage, face_array, user_error

    _check_positive(image_size=image_size)
    encoded = read_image_file(path)
    path = tf_path(path)
    if align and detector is None:
        from deepface.detect import FaceDetector

        detector = FaceDetector()
    try:
        pixels = face_array(encoded, image_size, align_face=align, detector=detector if align else None,
                            no_face=no_face)
    except BadImage as error:
        raise user_error(path, error, "no_face='center-crop'") from None
    return pixels.astype(np.float32) * np.float32(1 / 255)


def make_image_dataset(
    paths_or_bytes: Sequence[str | os.PathLike | bytes], image_size: int, batch_size: int
) -> tf.data.Dataset:
    """Batches of `preprocess_image`d images from image files or encoded bytes, in the order given: for
    faces already cut out (like the records' images); photos go through `load_image_file` (alignment, EXIF).

    Args:
        paths_or_bytes: image file paths (local, file:// or gs://), or encoded image bytes.
        image_size: side of the square images.
        batch_size: images per batch (the last batch may be smaller).

    Returns:
        A dataset of float32 batches ``[batch, image_size, image_size, 3]`` in [0, 1].
    """
    _check_positive(image_size=image_size, batch_size=batch_size)
    items = list(paths_or_bytes)
    if not items:
        raise DeepFaceError("make_image_dataset got no images: pass at least one path or encoded image.")
    if all(isinstance(item, bytes) for item in items):
        dataset = tf.data.Dataset.from_tensor_slices(items)
    else:
        paths = [tf_path(item) for item in items]
        missing = [path for path in paths if not is_remote(path) and not os.path.exists(path)]
        if missing:
            raise DeepFaceError(
                f"{len(missing)} image file(s) do not exist, e.g. {missing[0]}: check the image directory."
            )
        dataset = tf.data.Dataset.from_tensor_slices(paths).map(tf.io.read_file, num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(lambda encoded: preprocess_image(encoded, image_size), num_parallel_calls=AUTOTUNE)
    return dataset.batch(batch_size).prefetch(AUTOTUNE)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialized ``tf.train.Example`` of schema v1.

    Returns:
        A dict with the schema's keys: ``image/encoded`` (string scalar), ``image/class/label`` (int64
        scalar), ``image/class/identity`` and ``image/filename`` (string scalars, empty if absent).
    """
    return tf.io.parse_single_example(serialized, FEATURES_V1)


def list_shards(tfrecords: str | os.PathLike, split: str | None = None) -> list[str]:
    """The TFRecord shards of a directory, a glob pattern or a single file, sorted by name.

    Args:
        tfrecords: a directory written by `deepface tfrecords` (local, file:// or gs://), a glob pattern
            such as ``gs://bucket/tfrecords/train-*``, or one ``.tfrecord`` file.
        split: in a directory, only the shards ``<split>-NNNNN-of-NNNNN.tfrecord``; None takes every
            ``*.tfrecord`` file.

    Raises:
        DeepFaceError: if nothing matches, if a directory lacks some of the shards their names announce
            (an incomplete build; a pattern may select some shards on purpose), or if its manifest.json
            names another schema version.
    """
    path = tf_path(tfrecords)
    if any(char in path for char in "*?["):
        pattern = path
    elif tf.io.gfile.isdir(path):
        _check_schema(path)
        pattern = posixpath.join(path, f"{split}-*-of-*.tfrecord" if split else "*.tfrecord")
    elif tf.io.gfile.exists(path):
        return [path]
    else:
        raise DeepFaceError(
            f"TFRecord directory {path} does not exist: pass the output directory of `deepface tfrecords`."
        )
    shards = sorted(
        name for name in tf.io.gfile.glob(pattern) if not posixpath.basename(name).startswith(".")
    )
    if not shards:
        raise DeepFaceError(
            f"No TFRecord shards match {pattern}: run `deepface tfrecords` into that directory"
            + (f" with split {split!r}" if split else "")
            + " or pass the right directory/split."
        )
    if pattern != path:  # a whole directory: all shards of each split must be there
        _check_complete(shards)
    return shards


def make_dataset(
    tfrecords: str | os.PathLike | Sequence[str],
    *,
    batch_size: int,
    image_size: int,
    training: bool,
    split: str | None = None,
    shuffle_buffer: int = 10_000,
    augment: bool = False,
    seed: int | None = None,
    deterministic: bool = False,
    num_input_pipelines: int = 1,
    input_pipeline_id: int = 0,
    repeat: bool = False,
    drop_remainder: bool | None = None,
    cache: bool = False,
) -> tf.data.Dataset:
    """Batches of (images, labels) read from TFRecord shards of schema v1.

    Args:
        tfrecords: a shard directory, glob pattern or file (see `list_shards`), or a list of shard paths.
        batch_size: examples per batch (per replica when used through `make_dataset_fn`).
        image_size: side of the square images.
        training: True shuffles the shard order and the records (both again every epoch) and allows
            augmentation; False reads the shards one after the other, in order, unaugmented.
        split: with a directory, read only the shards of this split (``train``, ``val`` ...).
        shuffle_buffer: records in the shuffle buffer, in images (training only). It holds the encoded
            records (the stored JPEG bytes), not decoded images.
        augment: random horizontal flip and random shift by up to 5% of the side (training only;
            ignored otherwise), see `augment_image`.
        seed: seeds the shard order, the record shuffle and the augmentation.
        deterministic: the same seed gives exactly the same batches (parallel stages keep their order;
            slightly slower). Evaluation datasets are always in order.
        num_input_pipelines, input_pipeline_id: this worker's share of the shards: shard ``i`` is read
            by pipeline ``i % num_input_pipelines``.
        repeat: repeat forever (each epoch reshuffled).
        drop_remainder: drop the last partial batch; None means True when training (static batch shape)
            and False otherwise (every example evaluated).
        cache: keep the serialized records in memory after the first epoch (saves reading the shards,
            e.g. from GCS, again; decoding still happens every epoch).

    Returns:
        A dataset of ``(images, labels)``: float32 ``[batch, image_size, image_size, 3]`` in [0, 1] and
        int32 ``[batch]``.
    """
    _check_positive(batch_size=batch_size, image_size=image_size, num_input_pipelines=num_input_pipelines)
    if not 0 <= input_pipeline_id < num_input_pipelines:
        raise DeepFaceError(
            f"input_pipeline_id={input_pipeline_id} must be in [0, num_input_pipelines={num_input_pipelines})."
        )
    if training and shuffle_buffer < 1:
        raise DeepFaceError(f"shuffle_buffer={shuffle_buffer} must be at least 1 (images).")
    if training and deterministic and seed is None:
        raise DeepFaceError("deterministic=True needs a seed: pass seed=<int>.")
    shards = _shards_for_pipeline(tfrecords, split, num_input_pipelines, input_pipeline_id)
    logger.info(
        "Input pipeline %d/%d: %d shard(s), batch %d, image %d, training=%s, augment=%s, seed=%s",
        input_pipeline_id, num_input_pipelines, len(shards), batch_size, image_size, training,
        training and augment, seed,
    )
    ordered = deterministic or not training
    seeds = _seeds(seed)

    files = tf.data.Dataset.from_tensor_slices(shards)
    if training:
        files = files.shuffle(len(shards), seed=seeds[0], reshuffle_each_iteration=True)
        records = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(shards), MAX_INTERLEAVED_SHARDS),
            num_parallel_calls=AUTOTUNE,
            deterministic=ordered,
        )
    else:
        records = tf.data.TFRecordDataset(files)  # one shard after the other
    if cache:
        records = records.cache()
    if training:
        records = records.shuffle(shuffle_buffer, seed=seeds[1], reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()

    # Shards the tfrecords stage stored as JPEG at this very size need no size check per record (its cost:
    # benchmarks/bench_input.py, "stage shards" vs "unknown size"); any other input goes through decode_to_size.
    presized = _stored_as_jpeg_at(shards, image_size)

    def decode(serialized, augment_seed=None):  # one record -> 8-bit image (augmented), label
        example = parse_example(serialized)
        if presized:
            image = tf.ensure_shape(tf.io.decode_jpeg(example["image/encoded"], channels=3),
                                    [image_size, image_size, 3])
        else:
            image = decode_to_size(example["image/encoded"], image_size)
        if augment_seed is not None:
            image = augment_image(image, augment_seed)
        return image, example["image/class/label"]

    def to_float(images, labels):  # a whole batch at once: preprocess_image's scale_image
        return scale_image(images), tf.cast(labels, tf.int32)

    if training and augment:  # a stateless seed [2] per record, drawn from the seed
        augment_seeds = tf.data.Dataset.random(seed=seeds[2], rerandomize_each_iteration=True).batch(2)
        records = tf.data.Dataset.zip(records, augment_seeds)
    examples = records.map(decode, num_parallel_calls=AUTOTUNE, deterministic=ordered)
    # Batches of 8-bit images (a plain batch: tf.data fuses it with the parallel map above), made float
    # per batch: a quarter of the bytes to copy into the batch, and one pass writing the floats (less CPU
    # per image than converting image by image).
    batches = examples.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    batches = batches.map(to_float, num_parallel_calls=AUTOTUNE, deterministic=ordered)

    options = tf.data.Options()
    options.deterministic = ordered
    if num_input_pipelines > 1:  # already sharded here: a tf.distribute strategy must not shard again
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return batches.with_options(options).prefetch(AUTOTUNE)


def make_dataset_fn(
    tfrecords: str | os.PathLike | Sequence[str], *, global_batch_size: int, **kwargs
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``.

    Each input pipeline reads its own shards (`make_dataset` with the context's ``num_input_pipelines``
    and ``input_pipeline_id``) and batches ``global_batch_size / num_replicas_in_sync`` examples.

    Args:
        tfrecords: as in `make_dataset`.
        global_batch_size: examples per step over all replicas.
        **kwargs: the other arguments of `make_dataset` (``image_size``, ``training``, ``seed`` ...).
    """

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return make_dataset(
            tfrecords,
            batch_size=input_context.get_per_replica_batch_size(global_batch_size),
            num_input_pipelines=input_context.num_input_pipelines,
            input_pipeline_id=input_context.input_pipeline_id,
            **kwargs,
        )

    return dataset_fn


def augment_image(image: tf.Tensor, seed: tf.Tensor, max_shift: float = MAX_SHIFT) -> tf.Tensor:
    """Random horizontal flip and random shift, the same for the same seed.

    Args:
        image: ``[size, size, channels]``, any dtype.
        seed: int ``[2]``, a stateless random seed.
        max_shift: the largest shift in each direction, as a fraction of the side; the uncovered border
            is zero.

    Returns:
        ``[size, size, channels]``, the dtype of ``image``.
    """
    shift = round(max_shift * image.shape[0])
    flip_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    padded = tf.pad(image, [[shift, shift], [shift, shift], [0, 0]])
    return tf.image.stateless_random_crop(padded, image.shape, shift_seed)


def _shards_for_pipeline(tfrecords, split, num_input_pipelines: int, input_pipeline_id: int) -> list[str]:
    """This input pipeline's shards: every ``num_input_pipelines``-th shard from ``input_pipeline_id``."""
    if isinstance(tfrecords, (str, os.PathLike)):
        shards = list_shards(tfrecords, split)
    else:
        shards = sorted(tf_path(shard) for shard in tfrecords)
        if not shards:
            raise DeepFaceError("make_dataset got an empty list of shards: pass a TFRecord directory or files.")
    if len(shards) < num_input_pipelines:
        raise DeepFaceError(
            f"{len(shards)} shard(s) cannot feed {num_input_pipelines} input pipelines (each reads whole "
            "shards): write at least as many shards as workers (a smaller shard_mb in build_tfrecords)."
        )
    return shards[input_pipeline_id::num_input_pipelines]


_SHARD_NAME = re.compile(r"^(?P<split>.+)-(?P<index>\d+)-of-(?P<count>\d+)\.tfrecord$")


def _stored_as_jpeg_at(shards: Sequence[str], image_size: int) -> bool:
    """Whether every shard is named in the manifest of its directory, and that manifest says its images
    are JPEGs of exactly ``image_size`` (shards as `deepface tfrecords` writes them by default)."""
    shard_names: dict[str, set[str]] = {}
    for shard in shards:
        shard_names.setdefault(posixpath.dirname(shard), set()).add(posixpath.basename(shard))
    for directory, names in shard_names.items():
        manifest = _read_manifest(directory)
        if manifest is None:
            return False
        listed = {posixpath.basename(str(entry.get("file"))) for entry in manifest.get("shards", [])
                  if isinstance(entry, dict)}
        if not (manifest.get("encoding") == ENCODING_RESIZED and manifest.get("image_size") == image_size
                and names <= listed):
            return False
    return True


def _read_manifest(directory: str) -> dict | None:
    """The ``manifest.json`` that `deepface tfrecords` writes last into ``directory``, or None if absent."""
    manifest_path = posixpath.join(directory, MANIFEST_FILE)
    return read_json(manifest_path) if tf.io.gfile.exists(manifest_path) else None


def _check_schema(directory: str) -> None:
    """Raises if ``directory/manifest.json`` exists and names a schema other than v1."""
    manifest = _read_manifest(directory)
    if manifest is None:
        return
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DeepFaceError(
            f"{posixpath.join(directory, MANIFEST_FILE)} says schema_version {excerpt(str(version))}; "
            f"this reader knows version {SCHEMA_VERSION}: "
            "rebuild the shards with this version's `deepface tfrecords`."
        )


def _check_complete(shards: list[str]) -> None:
    """Raises if, for some split, fewer shards are present than their names ``-of-NNNNN`` announce."""
    found: dict[tuple[str, int], int] = {}
    for shard in shards:
        match = _SHARD_NAME.match(posixpath.basename(shard))
        if match:
            key = (posixpath.join(posixpath.dirname(shard), match["split"]), int(match["count"]))
            found[key] = found.get(key, 0) + 1
    for (prefix, count), present in sorted(found.items()):
        if present != count:
            raise DeepFaceError(
                f"Found {present} of the {count} shards {prefix}-*-of-{count:05d}.tfrecord: the TFRecord "
                "build is incomplete; rerun `deepface tfrecords` (it resumes) before training."
            )


def _seeds(seed: int | None) -> list[int | None]:
    """Three distinct seeds (shard order, record shuffle, augmentation) from one, or Nones."""
    return [None] * 3 if seed is None else [seed, seed + 1, seed + 2]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise DeepFaceError(f"{name}={value!r} must be a positive integer.")
