"""The tfrecords stage: shards from a tar stream or a directory, records, bad input, resume, determinism."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import SYNTH_PARAMS, write_tar
from PIL import Image

from deepface import tfrecords
from deepface.archives import iter_members
from deepface.cli import main
from deepface.data import parse_example
from deepface.errors import DeepFaceError
from deepface.faces import FaceCropper, fit_with_pad
from deepface.files import read_json
from deepface.labels import build_labels, load_classes
from deepface.landmarks import format_landmark_rows, read_landmarks
from deepface.records import frame_record, make_example
from deepface.shards import STATE_FILE, shard_name
from deepface.tfrecords import build_tfrecords

SHARD_BYTES = 20_000  # a few 152-pixel faces per shard: several shards from the small dataset
SHARD_MB = SHARD_BYTES / 2**20
NUM_TRAIN_IMAGES = SYNTH_PARAMS["train_identities"] * SYNTH_PARAMS["images_per_identity"]


# --------------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------------


def read_records(out_dir: Path) -> list[dict]:
    """Every record of a finished build, in shard order, parsed with the data stage's schema-v1 parser."""
    records = []
    for shard in read_json(out_dir / "manifest.json")["shards"]:
        for serialized in tf.data.TFRecordDataset(str(out_dir / shard["file"])):
            example = parse_example(serialized)
            records.append({
                "shard": shard["file"],
                "encoded": example["image/encoded"].numpy(),
                "label": int(example["image/class/label"]),
                "identity": example["image/class/identity"].numpy().decode(),
                "filename": example["image/filename"].numpy().decode(),
            })
    return records


def directory_bytes(directory: Path) -> dict[str, bytes]:
    """Every file of a directory (hidden ones included) and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def image_bytes(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def noise_image(seed: int, width: int = 90, height: int = 70) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header claims ``width x height`` (a decompression bomb, as far as headers go)."""
    frame = jpeg.index(b"\xff\xc0")
    return jpeg[: frame + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[frame + 9:]


@pytest.fixture(scope="module")
def train_archive(synth_dir: Path) -> Path:
    global LANDMARKS
    LANDMARKS = synth_dir / "bb_landmark.tar.gz"  # the synthetic faces' own landmarks (no detector needed)
    return synth_dir / "vggface2_train.tar.gz"


LANDMARKS: Path  # set by the train_archive fixture


@pytest.fixture(scope="module")
def labels_dir(train_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels")
    build_labels(train_archive, out)
    return out


@pytest.fixture(scope="module")
def reference(train_archive: Path, labels_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build of the synthetic train archive with one worker (treat as read-only)."""
    out = tmp_path_factory.mktemp("reference")
    build_tfrecords(train_archive, labels_dir, out, landmarks=LANDMARKS, shard_mb=SHARD_MB, workers=1)
    return out


# --------------------------------------------------------------------------------------------------
# Records and shards
# --------------------------------------------------------------------------------------------------


def test_records_decode_and_their_labels_follow_classes_txt(reference, train_archive, labels_dir):
    manifest = read_json(reference / "manifest.json")
    records = read_records(reference)
    classes = load_classes(labels_dir)

    assert len(records) == manifest["num_records"] == NUM_TRAIN_IMAGES
    assert manifest["num_skipped"] == 0 and manifest["skipped"] == []
    assert [r["filename"] for r in records] == [m.name for m in iter_members(train_archive)]
    for record in records:
        assert record["identity"] == record["filename"].split("/")[-2]
        assert classes[record["label"]] == record["identity"]
        image = tf.io.decode_jpeg(record["encoded"])
        assert image.shape == (152, 152, 3)

    num_shards = manifest["num_shards"]
    assert num_shards >= 3
    assert [s["file"] for s in manifest["shards"]] == [shard_name("train", i, num_shards) for i in range(num_shards)]
    assert sorted(p.name for p in reference.glob("*.tfrecord")) == [s["file"] for s in manifest["shards"]]
    per_shard = {s["file"]: sum(r["shard"] == s["file"] for r in records) for s in manifest["shards"]}
    assert per_shard == {s["file"]: s["records"] for s in manifest["shards"]}
    for shard in manifest["shards"]:
        assert (reference / shard["file"]).stat().st_size == shard["bytes"]
        assert shard["bytes"] >= SHARD_BYTES or shard is manifest["shards"][-1]
    assert manifest["schema_version"] == 1 and manifest["encoding"] == "jpeg-resized"
    assert manifest["num_classes"] == len(classes)
    assert manifest["classes_sha256"] == read_json(labels_dir / "manifest.json")["classes_sha256"]
    assert not (reference / STATE_FILE).exists()


def tensorflow_example(encoded: bytes, label: int, identity: str, filename: str) -> bytes:
    """The schema-v1 record as TensorFlow's own protobuf classes serialize it."""
    def feature(value: bytes | int) -> tf.train.Feature:
        if isinstance(value, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    features = {"image/encoded": feature(encoded), "image/class/label": feature(label),
                "image/class/identity": feature(identity.encode()), "image/filename": feature(filename.encode())}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def tensorflow_records(path: Path, records: list[bytes]) -> bytes:
    """The bytes tf.io.TFRecordWriter writes for ``records``."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    return path.read_bytes()


def test_examples_and_their_framing_are_the_bytes_tensorflow_writes(tmp_path):
    rng = np.random.default_rng(0)
    cases = [  # (encoded, label, identity, filename): sizes and values at the varint length boundaries
        (b"", 0, "n000002", "train/n000002/0001_01.jpg"),
        (rng.bytes(127), 127, "a", "a/b.jpg"),
        (rng.bytes(128), 128, "é", "train/é/ß.png"),
        (rng.bytes(16_383), 8630, "x" * 127, "y" * 128),
        (rng.bytes(3 * 2**20 + 5), 2**40, "n009279", "train/n009279/0001_01.jpg"),
        (rng.bytes(1000), -1, "", ""),  # never stored, but the int64 encoding is complete
    ]
    examples = [make_example(*case) for case in cases]
    for case, example in zip(cases, examples):
        assert example == tensorflow_example(*case), case[1:]
    examples.append(b"")  # the empty record
    assert b"".join(map(frame_record, examples)) == tensorflow_records(tmp_path / "records", examples)
    assert [len(frame_record(example)) for example in examples] == [len(example) + 16 for example in examples]


def test_shards_are_what_tensorflow_writes_for_their_records_and_close_at_shard_bytes(reference, tmp_path):
    records = read_records(reference)
    for shard in read_json(reference / "manifest.json")["shards"]:
        examples = [tensorflow_example(r["encoded"], r["label"], r["identity"], r["filename"])
                    for r in records if r["shard"] == shard["file"]]
        built = (reference / shard["file"]).read_bytes()
        assert built == tensorflow_records(tmp_path / shard["file"], examples)
        if shard["file"] != records[-1]["shard"]:  # closed by the record that brought it to SHARD_BYTES
            assert len(built) >= SHARD_BYTES > len(built) - (len(examples[-1]) + 16)


def test_a_build_needs_no_tensorflow(train_archive, labels_dir, tmp_path):
    # Workers run the same code as a one-worker build: importing TensorFlow would cost each ~3 s.
    build = ("import sys; from deepface.tfrecords import build_tfrecords; "
             "build_tfrecords(sys.argv[1], sys.argv[2], sys.argv[3], landmarks=sys.argv[4], workers=1); "
             "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", build, str(train_archive), str(labels_dir), str(tmp_path), str(LANDMARKS)],
                   check=True)
    assert read_json(tmp_path / "manifest.json")["num_records"] == NUM_TRAIN_IMAGES


def test_the_number_of_workers_does_not_change_the_bytes(reference, train_archive, labels_dir, tmp_path):
    build_tfrecords(train_archive, labels_dir, tmp_path, landmarks=LANDMARKS, shard_mb=SHARD_MB, workers=2)
    assert directory_bytes(tmp_path) == directory_bytes(reference)


@pytest.mark.parametrize("workers", [2, 3])
def test_work_shared_by_the_main_and_pool_processes_gives_the_same_bytes(
        reference, train_archive, labels_dir, tmp_path, monkeypatch, caplog, workers):
    """Tasks of 4 images: the pool processes get more than they can take at once, so the main process
    runs some tasks itself; results still come back in order."""
    monkeypatch.setattr(tfrecords, "POOL_CHUNK_SIZE", 4)
    with caplog.at_level(logging.INFO, logger="deepface.parallel"):
        build_tfrecords(train_archive, labels_dir, tmp_path, landmarks=LANDMARKS, shard_mb=SHARD_MB,
                        workers=workers)
    assert directory_bytes(tmp_path) == directory_bytes(reference)
    here, total = map(int, re.search(r"(\d+) of (\d+) tasks ran in the main process", caplog.text).groups())
    assert total == -(-NUM_TRAIN_IMAGES // 4) and 0 < here < total


def test_a_directory_source_gives_the_same_shards(reference, train_archive, labels_dir, tmp_path):
    with tarfile.open(train_archive) as archive:
        archive.extractall(tmp_path / "extracted", filter="data")
    manifest = build_tfrecords(tmp_path / "extracted", labels_dir, tmp_path / "out", landmarks=LANDMARKS,
                               shard_mb=SHARD_MB, workers=1)
    built, expected = directory_bytes(tmp_path / "out"), directory_bytes(reference)
    assert built.pop("manifest.json") != expected.pop("manifest.json")  # they name different sources
    assert built == expected
    assert manifest["source"] == str(tmp_path / "extracted")


def test_keep_original_stores_the_file_bytes(train_archive, labels_dir, tmp_path):
    manifest = build_tfrecords(train_archive, labels_dir, tmp_path, keep_original=True, align=False,
                               shard_mb=SHARD_MB, workers=1)
    originals = {member.name: member.read() for member in iter_members(train_archive)}
    records = read_records(tmp_path)
    assert {r["filename"]: r["encoded"] for r in records} == originals
    assert manifest["encoding"] == "original" and manifest["jpeg_quality"] is None
    assert manifest["num_shards"] >= 2


def test_the_default_shard_size_is_150_mib(train_archive, labels_dir, tmp_path):
    """The settings' default (read from the field) is 150 MiB, and a build left at its defaults closes its
    shards at exactly that many bytes (its manifest's settings): the whole small dataset fits one shard."""
    from deepface.settings import TfrecordsSettings

    assert TfrecordsSettings.fields()["shard_mb"].default == 150
    manifest = build_tfrecords(train_archive, labels_dir, tmp_path, keep_original=True, align=False, workers=1)
    assert manifest["shard_bytes"] == 150 * 2**20
    assert manifest["num_shards"] == 1 and len(list(tmp_path.glob("train-*-of-00001.tfrecord"))) == 1


def test_faces_are_fitted_like_tf_image_resize_with_pad():
    """Pixel by pixel, on gradients (red along x, green along y, blue constant): the same placement, the same
    black padding and the same values within interpolation differences (PIL's bilinear filter widens when
    it shrinks, TensorFlow's does not: at most 4.6 levels apart, at the edges of a 1000x37 image squeezed
    to 5 rows; below 0.7 elsewhere)."""
    for width, height in [(200, 120), (120, 200), (97, 63), (300, 301), (1000, 37), (64, 64)]:
        y, x = np.mgrid[0:height, 0:width]
        gradient = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 200)], -1)
        image = Image.fromarray(gradient.astype(np.uint8))
        ours = np.asarray(fit_with_pad(image, 152)).astype(np.float32)
        theirs = tf.image.resize_with_pad(gradient.astype(np.float32), 152, 152).numpy()
        assert ours.shape == theirs.shape == (152, 152, 3)
        np.testing.assert_array_equal(ours.max(axis=-1) > 0, theirs.max(axis=-1) > 0, err_msg=f"{width}x{height}")
        np.testing.assert_allclose(ours, theirs, atol=6, err_msg=f"{width}x{height}")
        assert np.abs(ours - theirs).mean() < 1, f"{width}x{height}"


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An archive mixing good images, images needing conversion and every kind of bad file, and its labels."""
    root = tmp_path_factory.mktemp("bad")
    good = image_bytes(noise_image(0))
    scan_start = good.index(b"\xff\xda") + 14
    deep = Image.fromarray(np.full((40, 60), 0x8000, np.uint16))  # 16-bit grey at half range
    members = [(f"train/idA/{i:02d}.jpg", image_bytes(noise_image(i))) for i in range(8)] + [
        ("train/README.txt", b"not an image: ignored"),
        ("train/idA/cmyk.jpg", image_bytes(noise_image(20).convert("CMYK"))),
        ("train/idA/grey.png", image_bytes(noise_image(21).convert("L"), "PNG")),
        ("train/idA/deep.png", image_bytes(deep, "PNG")),
        ("train/idA/alpha.png", image_bytes(noise_image(22).convert("RGBA"), "PNG")),
        ("train/idA/scan.tif", image_bytes(noise_image(23), "TIFF")),
        ("train/idB/ok.jpg", image_bytes(noise_image(30))),
        ("train/idB/corrupt_header.jpg", good[:20] + bytes(range(256)) * 8),
        ("train/idB/corrupt_scan.jpg", good[:scan_start] + bytes(range(255)) * 8),
        ("train/idB/truncated.jpg", good[: len(good) // 2]),
        ("train/idB/empty.jpg", b""),
        ("train/idB/notes.jpg", b"a text file named .jpg\n"),
        ("train/idB/bomb.jpg", with_jpeg_size(good, 10_000, 10_000)),
        ("train/idB/huge_bomb.jpg", with_jpeg_size(good, 30_000, 30_000)),
        ("train/idC/0001.jpg", image_bytes(noise_image(40))),
        ("train/idA/00.jpg", image_bytes(noise_image(50))),
        ("stray.jpg", image_bytes(noise_image(60))),
    ]
    image_list = root / "list.txt"
    image_list.write_text("idA/00.jpg\nidB/ok.jpg\n")
    build_labels(image_list, root / "labels")
    return write_tar(root / "bad.tar.gz", members), root / "labels"


@pytest.fixture(scope="module")
def bad_build(bad_source: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build of the bad archive that accepts its bad files, with one worker (treat as read-only)."""
    archive, labels = bad_source
    out = tmp_path_factory.mktemp("bad_build")
    build_tfrecords(archive, labels, out, max_bad_fraction=0.5, align=False, shard_mb=SHARD_MB, workers=1)
    return out


EXPECTED_SKIPS = {
    "train/idB/corrupt_header.jpg": "not an image, or a corrupt one",
    "train/idB/corrupt_scan.jpg": "corrupt or truncated image",
    "train/idB/truncated.jpg": "corrupt or truncated image",
    "train/idB/empty.jpg": "empty file",
    "train/idB/notes.jpg": "not an image, or a corrupt one",
    "train/idB/bomb.jpg": "decompression bomb",
    "train/idB/huge_bomb.jpg": "decompression bomb",
    "train/idC/0001.jpg": "unknown identity",
    "train/idA/00.jpg": "duplicate",
    "stray.jpg": "no identity folder",
}


def test_each_kind_of_bad_file_is_skipped_and_listed(bad_source, bad_build, tmp_path):
    archive, labels = bad_source
    manifest = build_tfrecords(archive, labels, tmp_path, max_bad_fraction=1.0, align=False, shard_mb=SHARD_MB,
                               workers=2)
    assert directory_bytes(tmp_path) == directory_bytes(bad_build)  # whatever the workers and the limit
    skipped = {entry["file"]: entry["reason"].split(":")[0] for entry in manifest["skipped"]}
    assert skipped == EXPECTED_SKIPS
    assert manifest["num_skipped"] == len(EXPECTED_SKIPS)
    assert manifest["skipped_by_reason"]["corrupt or truncated image"] == 2
    assert manifest["ignored_files"] == {"count": 1, "examples": ["train/README.txt"]}

    records = {r["filename"]: r for r in read_records(tmp_path)}
    converted = ["cmyk.jpg", "grey.png", "deep.png", "alpha.png", "scan.tif"]
    stored = [f"train/idA/{i:02d}.jpg" for i in range(8)] + [f"train/idA/{name}" for name in converted]
    assert sorted(records) == sorted(stored + ["train/idB/ok.jpg"])
    assert records["train/idA/00.jpg"]["encoded"] != image_bytes(noise_image(50))  # the first 00.jpg is kept
    for record in records.values():
        assert tf.io.decode_jpeg(record["encoded"]).shape == (152, 152, 3)
    deep = tf.io.decode_jpeg(records["train/idA/deep.png"]["encoded"]).numpy()
    assert np.all(np.abs(deep[76, 60:90].astype(int) - 128) <= 2)  # 16 bits scaled to 8, not clipped to 255


def test_keep_original_skips_formats_tensorflow_cannot_decode(bad_source, tmp_path):
    archive, labels = bad_source
    manifest = build_tfrecords(archive, labels, tmp_path, keep_original=True, align=False, max_bad_fraction=1.0,
                               workers=1)
    skipped = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert skipped.pop("train/idA/scan.tif").startswith("unsupported format: TIFF")
    assert {name: reason.split(":")[0] for name, reason in skipped.items()} == EXPECTED_SKIPS
    originals = {}
    for member in iter_members(archive):
        originals.setdefault(member.name, member.read())
    for record in read_records(tmp_path):
        assert record["encoded"] == originals[record["filename"]]


def test_too_many_bad_files_fail_the_build_and_a_rerun_can_accept_them(bad_source, bad_build, tmp_path):
    archive, labels = bad_source
    with pytest.raises(DeepFaceError, match=r"10 of 24 images .* were skipped \(41\.67% > max_bad_fraction 1\.00%\)"):
        build_tfrecords(archive, labels, tmp_path / "out", align=False, shard_mb=SHARD_MB, workers=1)
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob("*.tfrecord"))

    with pytest.raises(DeepFaceError, match="unfinished build with other settings.*jpeg_quality: 90 -> 80"):
        build_tfrecords(archive, labels, tmp_path / "out", align=False, shard_mb=SHARD_MB, jpeg_quality=80)

    # Accepting the bad files finishes the kept build, with the bytes of a build that accepted them at once.
    build_tfrecords(archive, labels, tmp_path / "out", align=False, shard_mb=SHARD_MB, max_bad_fraction=0.5,
                    workers=1)
    assert directory_bytes(tmp_path / "out") == directory_bytes(bad_build)


# --------------------------------------------------------------------------------------------------
# Interruptions and reruns
# --------------------------------------------------------------------------------------------------

BUILD_IN_CHILD = (
    "import sys; from deepface.tfrecords import build_tfrecords; "
    "build_tfrecords(sys.argv[1], sys.argv[2], sys.argv[3], shard_mb=int(sys.argv[4]) / 2**20, landmarks=sys.argv[5], "
    "workers=1)"
)


def test_a_build_killed_midway_resumes_to_the_same_bytes(train_archive, labels_dir, tmp_path):
    # The child reads the archive through a named pipe that gets only part of it, so it is surely
    # killed midway; the rerun then reads the whole archive under the same name.
    stream, out = tmp_path / "train.tar.gz", tmp_path / "out"
    os.mkfifo(stream)
    data = train_archive.read_bytes()
    killed = threading.Event()

    def feed_part_of_the_archive() -> None:
        with contextlib.suppress(BrokenPipeError), open(stream, "wb") as pipe:
            pipe.write(data[: len(data) * 3 // 4])
            pipe.flush()
            killed.wait()

    feeder = threading.Thread(target=feed_part_of_the_archive, daemon=True)
    feeder.start()
    log = open(tmp_path / "child.log", "wb")
    child = subprocess.Popen([sys.executable, "-c", BUILD_IN_CHILD, str(stream), str(labels_dir), str(out),
                              str(SHARD_BYTES), str(LANDMARKS)], stdout=log, stderr=log, start_new_session=True)
    try:
        state, deadline = None, time.monotonic() + 300
        while not (state and state["shards"]):  # poll until a complete shard is recorded
            assert child.poll() is None, (tmp_path / "child.log").read_text()
            assert time.monotonic() < deadline, "no shard completed from the first 3/4 of the archive"
            time.sleep(0.05)
            state = read_json(out / STATE_FILE) if (out / STATE_FILE).exists() else None
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        killed.set()
        os.close(os.open(stream, os.O_RDONLY | os.O_NONBLOCK))  # releases the feeder if the child never read
        feeder.join()
        log.close()
    assert not (out / "manifest.json").exists()
    state = read_json(out / STATE_FILE)
    kept = {shard["file"]: (out / shard["file"]).stat().st_ino for shard in state["shards"]}

    stream.unlink()
    stream.write_bytes(data)
    manifest = build_tfrecords(stream, labels_dir, out, landmarks=LANDMARKS, shard_mb=SHARD_MB, workers=2)
    assert len(kept) < manifest["num_shards"]
    for index, inode in enumerate(kept.values()):  # complete shards were kept, not written again
        assert (out / shard_name("train", index, manifest["num_shards"])).stat().st_ino == inode

    build_tfrecords(stream, labels_dir, tmp_path / "uninterrupted", landmarks=LANDMARKS, shard_mb=SHARD_MB,
                    workers=1)
    assert directory_bytes(out) == directory_bytes(tmp_path / "uninterrupted")


def test_an_interrupted_final_renaming_and_a_damaged_shard_are_repaired(bad_source, bad_build, tmp_path):
    archive, labels = bad_source
    with pytest.raises(DeepFaceError, match="were skipped"):  # the whole source read, the shards kept
        build_tfrecords(archive, labels, tmp_path, align=False, shard_mb=SHARD_MB, workers=1)
    pending = sorted(tmp_path.glob("train-*.tfrecord.done"))
    assert len(pending) >= 3
    pending[0].rename(tmp_path / shard_name("train", 0, len(pending)))  # as a crash while renaming leaves it
    with open(pending[2], "r+b") as shard:
        shard.truncate(100)

    build_tfrecords(archive, labels, tmp_path, max_bad_fraction=0.5, align=False, shard_mb=SHARD_MB, workers=1)
    assert directory_bytes(tmp_path) == directory_bytes(bad_build)


def test_a_finished_build_is_not_redone_nor_overwritten(reference, train_archive, labels_dir, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    before = directory_bytes(out)
    assert build_tfrecords(
        train_archive, labels_dir, out, landmarks=LANDMARKS, shard_mb=SHARD_MB
    ) == read_json(out / "manifest.json")
    with pytest.raises(DeepFaceError, match="finished build with other settings.*image_size: 152 -> 96"):
        build_tfrecords(train_archive, labels_dir, out, landmarks=LANDMARKS, shard_mb=SHARD_MB, image_size=96)
    assert directory_bytes(out) == before

    (out / "manifest.json").unlink()  # shards that no manifest nor build state vouches for
    with pytest.raises(DeepFaceError, match="not from this build"):
        build_tfrecords(train_archive, labels_dir, out, landmarks=LANDMARKS, shard_mb=SHARD_MB)


# --------------------------------------------------------------------------------------------------
# Parameters and command line
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"split": "train-1"}, "split='train-1'"),
        ({"image_size": 0}, "image_size=0"),
        ({"jpeg_quality": 101}, "jpeg_quality=101"),
        ({"workers": 0}, "workers=0"),
        ({"max_bad_fraction": 2.0}, "max_bad_fraction=2.0"),
    ],
)
def test_bad_parameters_are_named(train_archive, labels_dir, tmp_path, options, expected):
    with pytest.raises(DeepFaceError, match=re.escape(expected)):
        build_tfrecords(train_archive, labels_dir, tmp_path, **options)


def test_an_image_list_is_not_a_source(synth_dir, labels_dir, tmp_path):
    with pytest.raises(DeepFaceError, match="is an image list"):
        build_tfrecords(synth_dir / "train_list.txt", labels_dir, tmp_path)


def test_command_line(train_archive, labels_dir, tmp_path):
    runner = CliRunner()
    arguments = ["tfrecords", "--source", str(train_archive), "--labels", str(labels_dir), "--out", str(tmp_path),
                 "--landmarks", str(LANDMARKS), "--shard-mb", "0.05", "--workers", "1", "--image-size", "64"]
    result = runner.invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert f"{NUM_TRAIN_IMAGES} records" in result.output
    manifest = read_json(tmp_path / "manifest.json")
    assert manifest["image_size"] == 64 and manifest["shard_bytes"] == int(0.05 * 2**20)

    result = runner.invoke(main, arguments[:-2] + ["--image-size", "-1"])
    assert result.exit_code == 2  # a bad option value is a usage error, reported as its flag
    assert "'--image-size'" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, arguments + ["--keep-original"])  # a rule between settings names the flag too
    assert result.exit_code == 2 and "'--keep-original'" in result.output and "align off" in result.output


# --------------------------------------------------------------------------------------------------
# Aligned faces (deepface.faces) from landmark CSVs
# --------------------------------------------------------------------------------------------------


def test_records_hold_the_aligned_crop_evaluate_makes_of_the_same_file(reference, train_archive):
    """Training and evaluation see the same crop: each record is, byte for byte, the JPEG (quality 90) of
    what evaluate's FaceCropper makes of the same file with the same landmarks."""
    cropper = FaceCropper(152, landmarks=read_landmarks(LANDMARKS, split="train"))
    originals = {member.name: member.read() for member in iter_members(train_archive)}
    records = read_records(reference)
    assert len(records) == NUM_TRAIN_IMAGES and read_json(reference / "manifest.json")["alignment"] == "landmarks"
    for record in records:
        crop, _ = cropper(record["filename"], originals[record["filename"]])
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, format="JPEG", quality=90)
        assert record["encoded"] == buffer.getvalue(), record["filename"]


def test_landmark_rows_and_images_that_do_not_match_are_skipped_or_counted(train_archive, labels_dir, tmp_path):
    table = read_landmarks(LANDMARKS, split="train")
    names = sorted(table.names())
    missing, outside = names[0], names[1]
    rows = [(name, table.get(name) + (5000 if name == outside else 0)) for name in names[1:]]
    rows.append(("n999999/0001_01", table.get(names[2])))  # an image the archive lacks
    landmarks = tmp_path / "loose_landmark_train.csv"
    landmarks.write_text(format_landmark_rows(rows))
    manifest = build_tfrecords(train_archive, labels_dir, tmp_path / "out", landmarks=landmarks, max_bad_fraction=0.1,
                               shard_mb=SHARD_MB, workers=1)
    skipped = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    assert skipped.pop(f"train/{missing}.jpg") == f"no landmarks: {missing} is not in {landmarks}"
    assert skipped.pop(f"train/{outside}.jpg").startswith("landmarks outside the image")
    assert skipped == {}
    assert manifest["landmarks_unused"] == {"count": 1, "examples": ["n999999/0001_01"]}
    assert manifest["num_records"] == NUM_TRAIN_IMAGES - 2


def test_keep_original_cannot_align(train_archive, labels_dir, tmp_path):
    with pytest.raises(DeepFaceError, match="keep_original=True: stores the files as they are, so it needs align off"):
        build_tfrecords(train_archive, labels_dir, tmp_path, keep_original=True, landmarks=LANDMARKS)
