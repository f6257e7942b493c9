"""Tests of the tf.data input pipeline (deepface.data) on small TFRecord shards written here.

Every record has its own label, and its image is a solid colour computed from that label, so after any
shuffling, batching or augmentation each image still tells which record it came from.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deepface import data
from deepface.data import (
    list_shards,
    load_image_file,
    make_dataset,
    make_dataset_fn,
    make_image_dataset,
    parse_example,
    preprocess_image,
)
from deepface.errors import DeepFaceError

SIZE = 32  # image side of the test shards
SHARDS = 4
PER_SHARD = 16
RECORDS = SHARDS * PER_SHARD  # labels 0..63, shard k holds labels 16k..16k+15 in order


def label_colour(label: int) -> tuple[int, int, int]:
    """A distinct colour per label (64 colours, at least 32 apart in red or green)."""
    return (16 + 32 * (label % 8), 16 + 32 * (label // 8 % 8), 128)


def encode(image: np.ndarray, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format, quality=95)
    return buffer.getvalue()


def solid(height: int, width: int, colour) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def example(encoded: bytes, label: int) -> bytes:
    """A serialized record of schema v1."""
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image/class/identity": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"n%06d" % label])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"n%06d/0001_01.jpg" % label])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(directory: Path, labels: list[list[int]], split: str = "train", size: int = SIZE) -> Path:
    """Shards ``<split>-0000k-of-0000n.tfrecord``, shard k holding ``labels[k]`` in that order."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, shard_labels in enumerate(labels):
        with tf.io.TFRecordWriter(str(directory / f"{split}-{index:05d}-of-{len(labels):05d}.tfrecord")) as writer:
            for label in shard_labels:
                writer.write(example(encode(solid(size, size, label_colour(label))), label))
    return directory


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory) -> Path:
    """Four label-sorted shards of 16 records: shard k holds labels 16k .. 16k+15."""
    labels = [list(range(k * PER_SHARD, (k + 1) * PER_SHARD)) for k in range(SHARDS)]
    return write_shards(tmp_path_factory.mktemp("tfrecords"), labels)


def collect(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All (or the first ``limit``) batches, concatenated: images [n, S, S, 3], labels [n]."""
    images, labels = [], []
    for batch_images, batch_labels in dataset.take(limit or -1):
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


def colours_of(images: np.ndarray) -> np.ndarray:
    """The mean colour of each image's centre, in 0..255: [n, 3]."""
    centre = images[:, SIZE // 4: -SIZE // 4, SIZE // 4: -SIZE // 4]
    return centre.mean(axis=(1, 2)) * 255


def assert_images_match_labels(images: np.ndarray, labels: np.ndarray) -> None:
    expected = np.array([label_colour(label) for label in labels], np.float64)
    np.testing.assert_allclose(colours_of(images), expected, atol=6)


# ---------------------------------------------------------------------------------------------------
# preprocess_image, load_image_file, make_image_dataset


def test_image_of_the_right_size_is_only_scaled():
    pixels = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    image = preprocess_image(tf.constant(encode(pixels, "PNG")), SIZE).numpy()
    assert image.dtype == np.float32 and image.shape == (SIZE, SIZE, 3)
    np.testing.assert_allclose(image, pixels / 255.0, atol=1e-7)


def test_scale_image_is_exactly_the_bytes_over_255():
    """scale_image (one Dequantize) gives bit for bit float32(value) * float32(1 / 255), on every value."""
    every_value = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    batch = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    for pixels in (every_value, batch):
        scaled = data.scale_image(tf.constant(pixels)).numpy()
        assert scaled.dtype == np.float32 and scaled.shape == pixels.shape
        np.testing.assert_array_equal(scaled, pixels.astype(np.float32) * np.float32(1 / 255))


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
@pytest.mark.parametrize(
    "height, width, expected_rows, expected_cols",
    [
        (120, 60, (0, 64), (16, 48)),  # portrait: 64 x 32 centred, 16 zero columns each side
        (50, 150, (21, 42), (0, 64)),  # landscape: 21 x 64 (floor(50 / 150 * 64)), 21 zero rows on top
        (100, 100, (0, 64), (0, 64)),  # square but larger: fills the output
    ],
)
def test_other_sizes_are_resized_with_centred_padding(format, height, width, expected_rows, expected_cols):
    colour = (200, 120, 40)
    image = preprocess_image(tf.constant(encode(solid(height, width, colour), format)), 64).numpy()
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    face = np.zeros((64, 64), bool)
    face[slice(*expected_rows), slice(*expected_cols)] = True
    assert np.all(image[~face] == 0.0), "padding must be zero"
    np.testing.assert_allclose(image[face], np.broadcast_to(np.array(colour) / 255, image[face].shape),
                               atol=3 / 255)


def face_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(width, height, left, top) of the non-zero part of an image [S, S, 3]."""
    rows, cols = np.nonzero(image.max(axis=2))
    return cols.max() - cols.min() + 1, rows.max() - rows.min() + 1, cols.min(), rows.min()


def test_padding_geometry_is_exact_in_integers():
    """480 x 640 -> 114 x 152 (480 * 152 / 640 = 114 exactly; float32 arithmetic gives 113)."""
    image = preprocess_image(tf.constant(encode(solid(480, 640, (255, 255, 255)), "PNG")), 152).numpy()
    assert face_box(image) == (152, 114, 0, 19)


@pytest.mark.parametrize(
    "height, width", [(300, 200), (640, 480), (480, 640), (99, 100), (77, 153), (500, 311), (10, 1000)]
)
def test_padding_geometry_matches_the_tfrecords_stage(height, width):
    """Original bytes resized here land where deepface.tfrecords puts the faces it stores resized."""
    from deepface.faces import pad_geometry

    image = preprocess_image(tf.constant(encode(solid(height, width, (255, 255, 255)), "PNG")), 152).numpy()
    assert face_box(image) == pad_geometry(width, height, 152)
    np.testing.assert_allclose(image[image > 0], 1.0, atol=1e-6)


def test_grey_image_gets_three_channels():
    grey = np.full((SIZE, SIZE), 90, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    image = preprocess_image(tf.constant(buffer.getvalue()), SIZE).numpy()
    np.testing.assert_allclose(image, np.full((SIZE, SIZE, 3), 90 / 255, np.float32), atol=1e-7)


def test_load_image_file_and_image_dataset_use_the_same_preprocessing(tmp_path):
    rng = np.random.default_rng(1)
    encoded = [
        encode(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)),
        encode(solid(40, 90, (10, 200, 30)), "PNG"),
    ]
    paths = []
    for index, image in enumerate(encoded):
        paths.append(tmp_path / f"face{index}.img")
        paths[-1].write_bytes(image)
    direct = np.stack([preprocess_image(tf.constant(data), 48).numpy() for data in encoded])
    (from_paths,) = make_image_dataset(paths, 48, batch_size=2).as_numpy_iterator()
    (from_bytes,) = make_image_dataset(encoded, 48, batch_size=8).as_numpy_iterator()
    for other in (from_paths, from_bytes):
        np.testing.assert_allclose(other, direct, atol=1e-6)
    # Image files go through deepface.faces (Pillow: EXIF, formats, alignment), then scale_image's / 255, exactly.
    from deepface.data import scale_image
    from deepface.faces import face_image

    crops = np.stack([np.asarray(face_image(image, 48, align_face=False)[0]) for image in encoded])
    from_files = np.stack([load_image_file(path, 48, align=False) for path in paths])
    np.testing.assert_array_equal(from_files, scale_image(tf.constant(crops)).numpy())
    np.testing.assert_array_equal(load_image_file(f"file://{paths[0]}", 48, align=False), from_files[0])
    # The two resizers (Pillow for files, TensorFlow for records) agree up to rounding and filtering.
    assert np.abs(from_files - direct).mean() < 4 / 255


def test_image_dataset_keeps_order_and_last_partial_batch():
    encoded = [encode(solid(SIZE, SIZE, label_colour(label))) for label in range(5)]
    batches = list(make_image_dataset(encoded, SIZE, batch_size=2).as_numpy_iterator())
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert_images_match_labels(np.concatenate(batches), np.arange(5))


def test_bad_image_files_are_user_errors(tmp_path):
    with pytest.raises(DeepFaceError, match="missing.jpg"):
        load_image_file(tmp_path / "missing.jpg", SIZE)
    with pytest.raises(DeepFaceError, match="missing.jpg"):
        make_image_dataset([tmp_path / "missing.jpg"], SIZE, batch_size=1)
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(DeepFaceError, match="notes.jpg"):
        load_image_file(tmp_path / "notes.jpg", SIZE)
    with pytest.raises(DeepFaceError, match="image_size"):
        load_image_file(tmp_path / "notes.jpg", 0)


# ---------------------------------------------------------------------------------------------------
# parse_example, list_shards


def test_parse_example_reads_schema_v1():
    parsed = parse_example(tf.constant(example(b"bytes", 7)))
    assert parsed["image/encoded"].numpy() == b"bytes"
    assert parsed["image/class/label"].numpy() == 7
    assert parsed["image/class/identity"].numpy() == b"n000007"
    assert parsed["image/filename"].numpy() == b"n000007/0001_01.jpg"


def test_list_shards_by_directory_split_pattern_and_file(shard_dir, tmp_path):
    expected = [str(shard_dir / f"train-{k:05d}-of-00004.tfrecord") for k in range(SHARDS)]
    assert list_shards(shard_dir) == expected
    assert list_shards(f"file://{shard_dir}", split="train") == expected
    assert list_shards(str(shard_dir / "train-0000[13]-*")) == [expected[1], expected[3]]
    assert list_shards(expected[2]) == [expected[2]]
    with pytest.raises(DeepFaceError, match="split 'val'"):
        list_shards(shard_dir, split="val")


def test_missing_or_incomplete_shards_are_user_errors(tmp_path):
    with pytest.raises(DeepFaceError, match=f"{tmp_path / 'nowhere'} does not exist"):
        make_dataset(tmp_path / "nowhere", batch_size=2, image_size=SIZE, training=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepFaceError, match="No TFRecord shards match .*empty"):
        list_shards(tmp_path / "empty")
    future = write_shards(tmp_path / "future", [[0]])
    (future / "manifest.json").write_text('{"schema_version": 2}')
    with pytest.raises(DeepFaceError, match="schema_version '2'; this reader knows version 1"):
        list_shards(future)
    (future / "manifest.json").write_text('{"schema_version": 1}')
    assert len(list_shards(future)) == 1
    partial = write_shards(tmp_path / "partial", [[0], [1], [2]])
    (partial / "train-00001-of-00003.tfrecord").unlink()
    with pytest.raises(DeepFaceError, match="Found 2 of the 3 shards"):
        list_shards(partial)


# ---------------------------------------------------------------------------------------------------
# make_dataset


def test_batches_have_the_promised_shapes_types_and_range(shard_dir):
    dataset = make_dataset(shard_dir, batch_size=5, image_size=SIZE, training=True, augment=True, seed=0)
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.shape.as_list() == [5, SIZE, SIZE, 3] and images_spec.dtype == tf.float32
    assert labels_spec.shape.as_list() == [5] and labels_spec.dtype == tf.int32
    images, labels = collect(dataset)
    assert len(labels) == RECORDS // 5 * 5  # remainder dropped when training
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5


def test_evaluation_reads_everything_in_shard_order(shard_dir):
    dataset = make_dataset(shard_dir, batch_size=10, image_size=SIZE, training=False, augment=True)
    images, labels = collect(dataset)
    np.testing.assert_array_equal(labels, np.arange(RECORDS))  # last partial batch kept, no shuffle
    assert_images_match_labels(images, labels)
    unaugmented = np.stack([solid(SIZE, SIZE, label_colour(label)) for label in labels]) / 255
    np.testing.assert_allclose(images, unaugmented, atol=6 / 255)  # no flip/shift: JPEG error only


@pytest.mark.parametrize("manifest", [False, True])
def test_evaluation_batches_are_preprocess_image_of_each_record(tmp_path, manifest):
    """Batches made float per batch (and, with a manifest vouching for the size, decoded without the size
    check) hold exactly what preprocess_image gives for each record alone, as evaluate and verify use it."""
    pixels = np.random.default_rng(1).integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    encoded = [encode(image) for image in pixels]
    with tf.io.TFRecordWriter(str(tmp_path / "test-00000-of-00001.tfrecord")) as writer:
        for label, image in enumerate(encoded):
            writer.write(example(image, label))
    if manifest:
        (tmp_path / "manifest.json").write_text(
            f'{{"encoding": "jpeg-resized", "image_size": {SIZE}, "schema_version": 1, '
            '"shards": [{"file": "test-00000-of-00001.tfrecord"}]}')
    assert data._stored_as_jpeg_at(data.list_shards(tmp_path), SIZE) == manifest
    images, labels = collect(make_dataset(tmp_path, batch_size=5, image_size=SIZE, training=False))
    expected = np.stack([preprocess_image(tf.constant(image), SIZE).numpy() for image in encoded])
    np.testing.assert_array_equal(labels, np.arange(12))
    np.testing.assert_array_equal(images, expected)


def test_labels_stay_with_their_images_through_shuffle_and_augmentation(shard_dir):
    dataset = make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, augment=True, seed=3)
    images, labels = collect(dataset)
    assert sorted(labels) == list(range(RECORDS))  # one epoch: every record exactly once
    assert_images_match_labels(images, labels)


def test_augmentation_flips_and_shifts(tmp_path):
    """Records left black, right white: a flip puts the white half left, a shift moves the edge."""
    pattern = np.zeros((SIZE, SIZE, 3), np.uint8)
    pattern[:, SIZE // 2:] = 255
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001.tfrecord")) as writer:
        for label in range(64):
            writer.write(example(encode(pattern, "PNG"), label))
    dataset = make_dataset(tmp_path, batch_size=64, image_size=SIZE, training=True, augment=True, seed=0,
                           deterministic=True)
    images, _ = collect(dataset)
    white = images[:, SIZE // 2, :, 0] > 0.5  # [n, SIZE], one row through the middle
    flipped = white[:, : SIZE // 2].sum(1) > white[:, SIZE // 2:].sum(1)
    assert 16 < flipped.sum() < 48, "about half the images should be flipped"
    first_white, last_white = white.argmax(1), SIZE - 1 - white[:, ::-1].argmax(1)
    shifts = np.where(flipped, last_white - (SIZE // 2 - 1), first_white - SIZE // 2)
    max_shift = round(0.05 * SIZE)
    assert np.abs(shifts).max() <= max_shift and len(set(shifts)) >= 2 * max_shift, f"shifts {set(shifts)}"
    white_rows = images[..., 0].max(axis=2) > 0.5  # [n, SIZE]: rows holding some white
    vertical_shifts = white_rows.argmax(1) - white_rows[:, ::-1].argmax(1)  # black rows on top - at bottom
    assert np.abs(vertical_shifts).max() <= max_shift and len(set(vertical_shifts)) >= 2 * max_shift


def test_shuffling_mixes_records_across_and_within_shards(shard_dir):
    dataset = make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, seed=0, deterministic=True)
    _, first = next(iter(dataset))
    shards, positions = np.divmod(first.numpy(), PER_SHARD)
    assert len(set(shards)) >= 3
    assert positions.max() >= 8, f"first batch {first} holds only the heads of the shards"


def test_shuffle_buffer_mixes_a_single_sorted_shard(shard_dir):
    one_shard = str(shard_dir / "train-00002-of-00004.tfrecord")
    kwargs = dict(batch_size=8, image_size=SIZE, training=True, seed=0, deterministic=True)
    _, unshuffled = next(iter(make_dataset(one_shard, shuffle_buffer=1, **kwargs)))
    np.testing.assert_array_equal(unshuffled, np.arange(32, 40))  # the control: buffer 1 keeps order
    _, shuffled = next(iter(make_dataset(one_shard, **kwargs)))
    assert len(set(shuffled.numpy() // 4)) >= 4, f"first batch {shuffled} is barely shuffled"


def test_each_epoch_is_reshuffled(shard_dir):
    dataset = make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, seed=0, deterministic=True)
    _, epoch1 = collect(dataset)
    _, epoch2 = collect(dataset)
    assert sorted(epoch1) == sorted(epoch2) and not np.array_equal(epoch1, epoch2)
    _, repeated = collect(make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, seed=0,
                                       deterministic=True, repeat=True), limit=16)
    np.testing.assert_array_equal(repeated, np.concatenate([epoch1, epoch2]))


def test_same_seed_same_batches_other_seed_other_batches(shard_dir):
    def run(seed):
        return collect(make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, augment=True,
                                    seed=seed, deterministic=True, repeat=True), limit=12)

    images, labels = run(5)
    images_again, labels_again = run(5)
    np.testing.assert_array_equal(labels, labels_again)
    np.testing.assert_array_equal(images, images_again)
    _, other_labels = run(6)
    assert not np.array_equal(labels, other_labels)


def test_deterministic_needs_a_seed(shard_dir):
    with pytest.raises(DeepFaceError, match="seed"):
        make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, deterministic=True)


@pytest.mark.parametrize("pipelines", [2, 3, 4])
def test_input_pipelines_read_disjoint_shards_covering_everything(shard_dir, pipelines):
    seen = []
    for pipeline in range(pipelines):
        dataset = make_dataset(shard_dir, batch_size=4, image_size=SIZE, training=True, seed=1,
                               num_input_pipelines=pipelines, input_pipeline_id=pipeline)
        _, labels = collect(dataset)
        seen.append(set(labels))
        assert set(labels // PER_SHARD) == set(range(pipeline, SHARDS, pipelines))  # whole shards
    assert sum(len(labels) for labels in seen) == RECORDS
    assert set.union(*seen) == set(range(RECORDS))


def test_dataset_fn_follows_the_input_context(shard_dir):
    dataset_fn = make_dataset_fn(shard_dir, global_batch_size=8, image_size=SIZE, training=False)
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    dataset = dataset_fn(context)
    batch_sizes = [len(batch_labels) for _, batch_labels in dataset.as_numpy_iterator()]
    assert batch_sizes == [4] * 8  # 8 over 2 replicas; 32 records in shards 1 and 3
    _, labels = collect(dataset)
    np.testing.assert_array_equal(labels, np.r_[16:32, 48:64])  # shards 1 and 3, in order
    # the default strategy: one input pipeline and one replica read everything, 8 at a time
    distributed = tf.distribute.get_strategy().distribute_datasets_from_function(dataset_fn)
    sizes = [int(tf.size(batch_labels)) for _, batch_labels in distributed]
    assert sizes == [8] * (RECORDS // 8)


def test_too_many_input_pipelines_is_a_user_error(shard_dir):
    with pytest.raises(DeepFaceError, match="4 shard.*5 input pipelines"):
        make_dataset(shard_dir, batch_size=2, image_size=SIZE, training=True, num_input_pipelines=5)
    with pytest.raises(DeepFaceError, match="input_pipeline_id"):
        make_dataset(shard_dir, batch_size=2, image_size=SIZE, training=True, num_input_pipelines=2,
                     input_pipeline_id=2)


def test_original_size_images_in_records_are_resized_with_padding(tmp_path):
    """Records keeping the original bytes (any size, JPEG or PNG) come out at the training size."""
    colour = label_colour(9)
    with tf.io.TFRecordWriter(str(tmp_path / "val-00000-of-00001.tfrecord")) as writer:
        writer.write(example(encode(solid(80, 40, colour)), 9))
        writer.write(example(encode(solid(SIZE, SIZE * 2, colour), "PNG"), 9))
    images, labels = collect(make_dataset(tmp_path, split="val", batch_size=2, image_size=SIZE, training=False))
    np.testing.assert_array_equal(labels, [9, 9])
    assert np.all(images[0][:, : SIZE // 4] == 0) and np.all(images[0][:, -SIZE // 4:] == 0)  # 16 wide, centred
    assert np.all(images[1][: SIZE // 4] == 0) and np.all(images[1][-SIZE // 4:] == 0)  # 16 high, centred
    np.testing.assert_allclose(images[:, SIZE // 2, SIZE // 2], [np.array(colour) / 255] * 2, atol=6 / 255)


def test_cache_gives_the_same_records_each_epoch(shard_dir):
    dataset = make_dataset(shard_dir, batch_size=8, image_size=SIZE, training=True, seed=2, cache=True,
                           deterministic=True)
    epochs = [collect(dataset) for _ in range(2)]
    for images, labels in epochs:
        assert sorted(labels) == list(range(RECORDS))
        assert_images_match_labels(images, labels)
    assert not np.array_equal(epochs[0][1], epochs[1][1])  # still reshuffled after caching


# ---------------------------------------------------------------------------------------------------
# Shards built by deepface.tfrecords from the synthetic dataset


def test_reads_shards_built_by_the_tfrecords_stage(synth_dir, tmp_path):
    """Resized and original-bytes builds of the synthetic faces give the same classes and similar images."""
    from deepface import labels as labels_module
    from deepface import tfrecords
    archive = synth_dir / "vggface2_train.tar.gz"
    with tarfile.open(archive) as tar:
        identities = [Path(name).parent.name for name in tar.getnames() if name.endswith(".jpg")]
    labels_dir = tmp_path / "labels"
    labels_module.build_labels(archive, labels_dir)
    read = {}
    for keep_original in (False, True):
        out_dir = tmp_path / f"tfrecords-{keep_original}"
        tfrecords.build_tfrecords(archive, labels_dir, out_dir, split="train", image_size=48,
                                  keep_original=keep_original, align=False, workers=1)
        read[keep_original] = collect(make_dataset(out_dir, split="train", batch_size=16, image_size=48,
                                                   training=False))
    images, labels = read[False]
    assert images.shape == (len(identities), 48, 48, 3)
    expected_counts = [identities.count(identity) for identity in sorted(set(identities))]
    assert np.bincount(labels).tolist() == expected_counts
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0.05
    original_images, original_labels = read[True]
    np.testing.assert_array_equal(original_labels, labels)
    assert np.abs(original_images - images).mean() < 0.02  # Pillow resize + JPEG vs resize here

    # The manifest vouches for the size of resized shards, however they are named (directory, list of
    # paths, as training passes them), so the reader skips its size check. The same shards without a
    # manifest (every record checked) give exactly the same batches.
    resized_dir = tmp_path / "tfrecords-False"
    resized = data.list_shards(resized_dir, split="train")
    assert data._stored_as_jpeg_at(resized, 48) and not data._stored_as_jpeg_at(resized, 64)
    assert not data._stored_as_jpeg_at(data.list_shards(tmp_path / "tfrecords-True"), 48)  # any size
    renamed = tmp_path / "renamed"  # the manifest beside shards it does not name
    renamed.mkdir()
    shutil.copy(resized_dir / "manifest.json", renamed)
    for index, shard in enumerate(resized):
        shutil.copy(shard, renamed / f"other-{index:05d}-of-{len(resized):05d}.tfrecord")
    assert not data._stored_as_jpeg_at(data.list_shards(renamed, split="other"), 48)
    unvouched = tmp_path / "unvouched"  # no manifest
    unvouched.mkdir()
    for shard in resized:
        shutil.copy(shard, unvouched)
    assert not data._stored_as_jpeg_at(data.list_shards(unvouched), 48)
    checked = collect(make_dataset(unvouched, split="train", batch_size=16, image_size=48, training=False))
    np.testing.assert_array_equal(checked[0], images)
    np.testing.assert_array_equal(checked[1], labels)
