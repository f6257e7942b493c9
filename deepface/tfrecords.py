"""Stage 4: TFRecord shards of face images, read from a tar stream or a directory.

Record schema, version 1 (``deepface.contracts.SCHEMA_VERSION``): one ``tf.train.Example`` per image,
with the features

    image/encoded         bytes  the image. By default a JPEG of image_size x image_size: the face
                                 aligned from its 5 landmarks (`deepface.faces.face_image`, the crop
                                 evaluate and verify make too), the landmarks from a CSV or from the
                                 face detector; with align=False the whole picture fitted into the
                                 square (longer side image_size, centred, black padding). With
                                 keep_original, the file's own bytes (JPEG, PNG, GIF, BMP or WebP).
    image/class/label     int64  class id: the line index of the identity in classes.txt
    image/class/identity  bytes  the identity id, UTF-8 (e.g. b"n000002")
    image/filename        bytes  the image's path inside the archive or directory, UTF-8

Output directory (one split per directory):

    <split>-00000-of-00012.tfrecord ...  about shard_bytes each, records in source order
    manifest.json                        written last: settings, records per shard, skipped files

How it runs: the main process reads the source once, in order (a tar archive as a stream, nothing
extracted), and hands chunks of images to worker processes that validate, decode, resize and encode
them, the expensive part, and turn each into its finished TFRecord record (the serialized Example in
its framing). The records come back in source order and the main process only appends them to the
shard, so the shards are the same bytes whatever the number of workers. Neither side needs TensorFlow:
`make_example` and `frame_record` write the bytes TensorFlow's own Example and TFRecordWriter write.

Interruptions: a shard is written under a temporary name (``.<split>-00003.tfrecord.done.tmp``) and
renamed to ``<split>-00003.tfrecord.done`` when complete; ``.build_state.json`` lists the complete
shards and where in the source each ends. A rerun with the same settings keeps them, reads through the
source up to where they end, and finishes with the same bytes as an uninterrupted build. Once the
source is read, the shards get their final ``-of-N`` names, then the manifest is written.

Bad input: files whose names are not images are ignored and counted. Images that cannot be stored are
skipped and listed with their reason in the manifest: empty file, not an image, corrupt or truncated,
a decompression bomb (`deepface.faces.open_image`), a format TensorFlow cannot decode (keep_original
only), no landmarks row, landmarks outside the image, no face found, an identity missing from
classes.txt, no identity folder, or a name repeated in the archive. Landmark rows naming no image and
images where the detector found several faces (the one meant is stored) are counted in the manifest.
If more than max_bad_fraction of the images are skipped the build fails without a manifest; its shards
are kept, so a rerun with a higher limit finishes at once.

Images are decoded by `deepface.faces.decode` (EXIF orientation applied); keep_original records are
decoded by TensorFlow when read, which ignores EXIF.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import io
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import click
import google_crc32c
import numpy as np
from tqdm import tqdm

from deepface.contracts import (
    ENCODING_ORIGINAL,
    ENCODING_RESIZED,
    MANIFEST_FILE,
    SCHEMA_VERSION,
    read_manifest,
    write_manifest,
)
from deepface.errors import DeepFaceError
from deepface.faces import NO_FACE_CHOICES, BadImage, decode, face_image, open_image
from deepface.files import hash_file, local_path, read_json, remove_temporaries, write_json
from deepface.labels import (
    CLASSES_FILE,
    MAX_EXAMPLES,
    NO_IDENTITY_FOLDER,
    check_source,
    identity_of,
    is_image_name,
    iter_members,
    load_classes,
)
from deepface.landmarks import LandmarkTable, name_id, read_landmarks

logger = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 150 * 2**20
STATE_FILE = ".build_state.json"
# What tf.io.decode_image reads, so what keep_original may store as is (MPO: a phone's JPEG).
TF_DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "MPO", "PNG", "WEBP")
CHUNK_SIZE = 32  # files per chunk of work with one worker (in this process): records reach the shard chunk by chunk
# Files per task with several workers (run by a pool process, or by the main process, see ordered_map): fewer,
# larger messages, yet fine enough to balance the processes. 64 and 256 made 2 workers slower than 128 did
# (re-encode: 1.84x and 1.74x the rate of 1 worker, against 1.98x; benchmarks/bench_tfrecords.py).
POOL_CHUNK_SIZE = 128
WRITE_BUFFER = 1 << 20  # bytes buffered by a shard's file between system calls
IGNORED = "ignored"  # Item.reason of a file whose name is not an image's
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


# --------------------------------------------------------------------------------------------------
# One image (runs in the worker processes)
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How images are stored: the face aligned (or the whole frame fitted) at ``image_size`` and encoded
    at ``jpeg_quality``, or the file kept as is; ``no_face``: what happens when no face is found."""

    image_size: int = 152
    keep_original: bool = False
    jpeg_quality: int = 90
    align: bool = True
    no_face: str = "skip"


def encode_image(data: bytes, options: ImageOptions, points: np.ndarray | None = None) -> tuple[bytes, int | None]:
    """The bytes to store for one image file: the face crop as JPEG (`deepface.faces.face_image`), or
    (keep_original) the file's own bytes.

    Args:
        data: the file's bytes.
        options: how to store it.
        points: the face's 5 landmarks (full-resolution pixels); None with ``options.align`` runs the
            detector of this process.

    Returns:
        ``(stored bytes, faces the detector found or None)``.

    Raises:
        BadImage: the file cannot be decoded or refused (see `deepface.faces.decode`), landmarks outside
            it, no face found (`NoFace`), or keep_original and a format TensorFlow does not decode.
    """
    if options.keep_original:
        image_format = open_image(data).format
        if image_format not in TF_DECODABLE_FORMATS:
            raise BadImage(
                f"unsupported format: {image_format} (TensorFlow decodes {', '.join(TF_DECODABLE_FORMATS)}); "
                "build without keep_original to convert it"
            )
        decode(data, scale=0.125)  # validation: DCT-reduced JPEGs still read every byte
        return data, None
    detector = None
    if options.align and points is None:
        from deepface.detect import process_detector  # this worker's, loaded once (TensorFlow: ~4 s)

        detector = process_detector()
    face, info = face_image(data, options.image_size, align_face=options.align, points=points, detector=detector,
                            no_face=options.no_face)
    buffer = io.BytesIO()
    face.save(buffer, format="JPEG", quality=options.jpeg_quality)
    return buffer.getvalue(), info["faces"]


# One image to store, as sent to a worker: (file name, class id, identity, file bytes, landmarks or None).
ImageTask = tuple[str, int, str, bytes, "np.ndarray | None"]
# What a worker returns per image: (record to append, or None; why it was skipped, or None; faces found).
Encoded = tuple["bytes | None", "str | None", "int | None"]


def encode_records(images: list[ImageTask], options: ImageOptions) -> list[Encoded]:
    """The TFRecord records of a chunk of images (in a worker process).

    Args:
        images: ``(name, label, identity, data, points)`` per image: its path in the source, class id,
            identity id, file bytes and landmarks (None: detect).
        options: how to store the images.

    Returns:
        One ``(record, reason, faces)`` per image, in order: the bytes to append to a shard
        (`frame_record` of the image's `make_example`) or, for an image that cannot be stored, None and
        the reason (see `BadImage`); ``faces``: how many faces the detector found (None without it).
    """
    results = []
    for name, label, identity, data, points in images:
        try:
            encoded, faces = encode_image(data, options, points)
            results.append((frame_record(make_example(encoded, label, identity, name)), None, faces))
        except BadImage as error:
            results.append((None, str(error), None))
    return results


# --------------------------------------------------------------------------------------------------
# Records: tf.train.Example and TFRecord framing, byte for byte, without TensorFlow
# --------------------------------------------------------------------------------------------------


def _example_class() -> type:
    """The message class of ``tensorflow.Example`` (tensorflow/core/example/{example,feature}.proto, the
    fields schema v1 uses), declared here to the protobuf library so that workers serialize Examples with
    protobuf's own encoder without importing TensorFlow (2.9 s per worker process)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806 - its constants read as in the .proto files
    proto = descriptor_pb2.FileDescriptorProto(name="deepface/example.proto", package="tensorflow", syntax="proto3")
    bytes_list = proto.message_type.add(name="BytesList")
    bytes_list.field.add(name="value", number=1, type=F.TYPE_BYTES, label=F.LABEL_REPEATED)
    int64_list = proto.message_type.add(name="Int64List")
    int64_list.field.add(name="value", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)  # packed (proto3)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    feature.field.add(name="bytes_list", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.BytesList",
                      oneof_index=0)
    feature.field.add(name="int64_list", number=3, type=F.TYPE_MESSAGE, type_name=".tensorflow.Int64List",
                      oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=F.TYPE_STRING)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                       type_name=".tensorflow.Features.FeatureEntry")
    example = proto.message_type.add(name="Example")
    example.field.add(name="features", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


_Example = _example_class()


def make_example(encoded: bytes, label: int, identity: str, filename: str) -> bytes:
    """One serialized ``tf.train.Example`` of schema v1: the bytes of
    ``tf.train.Example(...).SerializeToString(deterministic=True)`` (map entries sorted by key, so the
    same input gives the same bytes); tests/test_tfrecords.py checks the two agree."""
    example = _Example()
    feature = example.features.feature
    feature["image/encoded"].bytes_list.value.append(encoded)
    feature["image/class/label"].int64_list.value.append(label)
    feature["image/class/identity"].bytes_list.value.append(identity.encode("utf-8"))
    feature["image/filename"].bytes_list.value.append(filename.encode("utf-8"))
    return example.SerializeToString(deterministic=True)


def _masked_crc32c(data: bytes) -> bytes:
    """TFRecord's checksum of ``data``: its CRC-32C, rotated and offset ("masked"), 4 bytes little-endian."""
    crc = google_crc32c.value(data)
    return (((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFF_FFFF).to_bytes(4, "little")


def frame_record(data: bytes) -> bytes:
    """``data`` as one TFRecord record, the bytes ``tf.io.TFRecordWriter.write(data)`` appends.

    Layout: length (uint64 little-endian), masked CRC-32C of those 8 bytes, ``data``, masked CRC-32C
    of ``data``: ``len(data) + 16`` bytes.
    """
    length = len(data).to_bytes(8, "little")
    return b"".join((length, _masked_crc32c(length), data, _masked_crc32c(data)))


# --------------------------------------------------------------------------------------------------
# Reading the source and running the workers (main process)
# --------------------------------------------------------------------------------------------------


class Item(NamedTuple):
    """One file of the source on its way to a shard (main process).

    ``ordinal``: index among the source's files; ``name``: path inside the source; ``label``: class id
    (-1 when skipped); ``data``: the file's bytes, None when skipped; ``reason``: why it is skipped,
    ``IGNORED`` for a file that is not an image, else None; ``points``: its landmarks, None to detect.
    """

    ordinal: int
    name: str
    label: int
    data: bytes | None
    reason: str | None
    points: np.ndarray | None = None


def _read_items(source: Path, class_ids: dict[str, int], start: int, track_duplicates: bool,
                landmarks: LandmarkTable | None = None) -> Iterator[Item]:
    """The source's files from index ``start`` on, as Items; image bytes are read only for known identities.
    With ``landmarks``, an image without a row is skipped, and every row matched is marked used (from
    index 0 on, so that a resumed build knows them too)."""
    seen = set()
    for ordinal, member in enumerate(iter_members(source)):
        name = member.name
        if member.problem or not is_image_name(name):
            if ordinal >= start:
                yield Item(ordinal, name, -1, None, IGNORED)
            continue
        duplicate = track_duplicates and name in seen
        if track_duplicates:
            seen.add(name)
        points = landmarks.get(name, mark_used=True) if landmarks is not None and not duplicate else None
        if ordinal < start:
            continue
        identity = identity_of(name)
        if duplicate:
            reason = "duplicate: an earlier file of the archive has the same name"
        elif identity is None:
            reason = NO_IDENTITY_FOLDER
        elif identity not in class_ids:
            reason = f"unknown identity: {identity} is not in {CLASSES_FILE}"
        elif landmarks is not None and points is None:
            reason = f"no landmarks: {name_id(name)} is not in {landmarks.source}"
        else:
            yield Item(ordinal, name, class_ids[identity], member.read(), None, points)
            continue
        yield Item(ordinal, name, -1, None, reason)


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _image_tasks(chunks: Iterable[list[Item]], classes: list[str],
                 in_flight: collections.deque) -> Iterator[list[ImageTask]]:
    """Per chunk, the work for `encode_records`: plain tuples of the images still to store, nothing
    for the files already skipped. Each chunk is appended to ``in_flight`` as its work is handed out,
    so the results, which come back in order, pair with ``in_flight.popleft()``."""
    for chunk in chunks:
        in_flight.append(chunk)
        yield [(item.name, item.label, classes[item.label], item.data, item.points)
               for item in chunk if item.reason is None]


@contextlib.contextmanager
def ordered_map(workers: int) -> Iterator[Callable]:
    """A ``map(function, iterable)`` running on ``workers`` processes, this one included, yielding
    results in input order as soon as they are ready.

    ``workers - 1`` pool processes take tasks while one more task waits for each of them; beyond that,
    this process runs the next task itself. It is the one reading the source, so in the time left over
    it works too: with ``keep_original``, whose per-image work is small next to the reading, two
    processes beat three on two cores (less data between processes, none fighting for a core). At most
    ``2 * workers + 2`` tasks are in flight, so memory stays bounded however long the input. With one
    worker, everything runs in this process. Pool processes are forked from multiprocessing's
    forkserver, never from this (possibly multi-threaded, TensorFlow-holding) process; the forkserver
    preloads this module, so a process starts in ~0.05 s. As with any spawn or forkserver pool, a
    script calling this needs the ``if __name__ == "__main__":`` guard.
    """
    if workers == 1:
        yield map
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # effective if the forkserver is not running yet
    pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=context)

    tasks = collections.Counter()

    def bounded_map(function: Callable, iterable: Iterable) -> Iterator:
        pending = collections.deque()  # futures, in input order
        for argument in iterable:
            if sum(not future.done() for future in pending) < 2 * (workers - 1):
                pending.append(pool.submit(function, argument))
                tasks["pool"] += 1
            else:  # every pool process has a task and another waiting: do this one here
                pending.append(Future())
                pending[-1].set_result(function(argument))
                tasks["here"] += 1
            while pending and (pending[0].done() or len(pending) > 2 * workers + 2):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield bounded_map
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        logger.info("%d of %d tasks ran in the main process, the others in %d pool processes",
                    tasks["here"], tasks["here"] + tasks["pool"], workers - 1)


# --------------------------------------------------------------------------------------------------
# Shards, build state and manifest
# --------------------------------------------------------------------------------------------------


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Final name of a shard: ``train-00012-of-00256.tfrecord``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _pending_name(split: str, index: int) -> str:
    """Name of a complete shard while the total is unknown (it does not match ``*.tfrecord``)."""
    return f"{split}-{index:05d}.tfrecord.done"


class _ShardWriter:
    """Appends framed records (`frame_record`) to one shard under a temporary name; `finish` syncs it
    to disk and renames it to its pending name. ``bytes``: the shard's size so far."""

    def __init__(self, out: Path, split: str, index: int):
        self.path = out / _pending_name(split, index)
        self._temporary = out / f".{self.path.name}.tmp"
        self._file = open(self._temporary, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 (closed by finish/discard)
        self.bytes = 0

    def write(self, record: bytes) -> None:
        self._file.write(record)
        self.bytes += len(record)

    def finish(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temporary, self.path)

    def discard(self) -> None:
        self._file.close()
        self._temporary.unlink(missing_ok=True)


@dataclasses.dataclass
class Segment:
    """A run of consecutive source files: the records of one shard and the files skipped among them.

    ``end`` is the index (in the source) just past the segment's last file; the segment after the last
    shard (the tail) has no shard ``file``.
    """

    file: str | None = None
    records: int = 0
    bytes: int = 0
    end: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # [{"file": name, "reason": text}]
    ignored: int = 0
    ignored_examples: list = dataclasses.field(default_factory=list)
    several_faces: int = 0  # images where the detector found more than one face (the one meant is stored)
    several_faces_examples: list = dataclasses.field(default_factory=list)
    landmarks_unused: int = 0  # (tail only) landmark rows naming no image of the source
    landmarks_unused_examples: list = dataclasses.field(default_factory=list)

    def add(self, item: Item, faces: int | None = None) -> None:
        if faces is not None and faces > 1:
            self.several_faces += 1
            if len(self.several_faces_examples) < MAX_EXAMPLES:
                self.several_faces_examples.append(item.name)
        self.end = item.ordinal + 1
        if item.reason == IGNORED:
            self.ignored += 1
            if len(self.ignored_examples) < MAX_EXAMPLES:
                self.ignored_examples.append(item.name)
        elif item.reason is not None:
            self.skipped.append({"file": item.name, "reason": item.reason})
        else:
            self.records += 1


def _settings(source, classes_file: Path, num_classes: int, split: str, options: ImageOptions,
              shard_bytes: int, landmarks: str | None) -> dict:
    """What determines the output bytes; an unfinished build resumes only with the same settings."""
    if options.keep_original or not options.align:
        alignment = "none"
    else:
        alignment = "landmarks" if landmarks else "detector"
    return {
        "schema_version": SCHEMA_VERSION,
        "source": str(source),
        "split": split,
        "image_size": options.image_size,
        "encoding": ENCODING_ORIGINAL if options.keep_original else ENCODING_RESIZED,
        "jpeg_quality": None if options.keep_original else options.jpeg_quality,
        "shard_bytes": shard_bytes,
        "num_classes": num_classes,
        "classes_sha256": hash_file(classes_file),
        "alignment": alignment,
        "landmarks": str(landmarks) if alignment == "landmarks" else None,
        "landmarks_sha256": hash_file(landmarks) if alignment == "landmarks" and Path(landmarks).is_file() else None,
        "no_face": options.no_face if alignment == "detector" else None,
    }


def _differences(old: dict, new: dict) -> str:
    return ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in new if old.get(key) != new[key])


def _load_state(out: Path, split: str, settings: dict) -> tuple[list[Segment], Segment | None]:
    """The complete shards of an unfinished build with these settings (under their pending names), and
    its tail if the source was read to the end. Removes temporaries and shards the state does not vouch for.
    """
    state_path = out / STATE_FILE
    shards, tail = [], None
    if state_path.exists():
        state = read_json(state_path)
        if state["settings"] != settings:
            raise DeepFaceError(
                f"{out} holds an unfinished build with other settings ({_differences(state['settings'], settings)}): "
                "rerun with the same settings to finish it, or delete the directory or choose another --out."
            )
        saved = [Segment(**shard) for shard in state["shards"]]
        tail = Segment(**state["tail"]) if state.get("tail") else None
        for index, shard in enumerate(saved):
            pending, final = out / shard.file, out / shard_name(split, index, len(saved))
            if tail and not pending.exists() and final.exists():
                os.replace(final, pending)  # the final renaming was interrupted: `_finish` redoes it
            if not (pending.is_file() and pending.stat().st_size == shard.bytes):
                logger.warning("shard %s of the unfinished build is missing or damaged: rebuilding from it", shard.file)
                tail = None
                break
            shards.append(shard)
    if any(out.glob(f"{split}-*-of-*.tfrecord")):
        raise DeepFaceError(
            f"{out} already holds {split} shards but no {MANIFEST_FILE}: they are not from this build. "
            "Delete them or choose another --out."
        )
    vouched = {shard.file for shard in shards}
    remove_temporaries(out)  # partial shards and state files of a killed build
    for leftover in out.glob(f"{split}-*.tfrecord.done"):
        if leftover.name not in vouched:
            leftover.unlink()
    return shards, tail


def _save_state(out: Path, settings: dict, shards: list[Segment], tail: Segment | None = None) -> None:
    state = {"settings": settings, "shards": [dataclasses.asdict(shard) for shard in shards]}
    if tail is not None:
        state["tail"] = dataclasses.asdict(tail)
    write_json(out / STATE_FILE, state)


def _reason_counts(skipped: list[dict]) -> dict[str, int]:
    return dict(sorted(collections.Counter(entry["reason"].split(":")[0] for entry in skipped).items()))


def _finish(out: Path, settings: dict, shards: list[Segment], tail: Segment, max_bad_fraction: float) -> dict:
    """Checks the skipped fraction, gives the shards their final names, writes the manifest."""
    segments = [*shards, tail]
    skipped = [entry for segment in segments for entry in segment.skipped]
    records = sum(shard.records for shard in shards)
    ignored = sum(segment.ignored for segment in segments)
    source = settings["source"]
    if records == 0:
        raise DeepFaceError(
            f"No image of {source} could be stored ({len(skipped)} skipped: {_reason_counts(skipped)}; "
            f"{ignored} files ignored as not images): check --source and --labels."
        )
    fraction = len(skipped) / (records + len(skipped))
    if fraction > max_bad_fraction:
        examples = "; ".join(f"{entry['file']}: {entry['reason']}" for entry in skipped[:5])
        raise DeepFaceError(
            f"{len(skipped)} of {records + len(skipped)} images of {source} were skipped ({fraction:.2%} > "
            f"max_bad_fraction {max_bad_fraction:.2%}): {_reason_counts(skipped)}, e.g. {examples}. Fix the "
            "source or --labels, or raise --max-bad-fraction: a rerun keeps the shards already built."
        )
    split = settings["split"]
    files = []
    for index, shard in enumerate(shards):
        final = shard_name(split, index, len(shards))
        os.replace(out / shard.file, out / final)
        files.append({"file": final, "records": shard.records, "bytes": shard.bytes})
    manifest = {
        **settings,
        "shards": files,
        "num_shards": len(files),
        "num_records": records,
        "num_skipped": len(skipped),
        "skipped_by_reason": _reason_counts(skipped),
        "skipped": skipped,
        "ignored_files": {
            "count": ignored,
            "examples": [name for segment in segments for name in segment.ignored_examples][:MAX_EXAMPLES],
        },
        "several_faces": {
            "count": sum(segment.several_faces for segment in segments),
            "examples": [name for segment in segments for name in segment.several_faces_examples][:MAX_EXAMPLES],
        },
        "landmarks_unused": {"count": tail.landmarks_unused, "examples": tail.landmarks_unused_examples},
    }
    write_manifest(out, manifest)  # last: the build is complete
    (out / STATE_FILE).unlink(missing_ok=True)
    return manifest


def _check_parameters(split: str, options: ImageOptions, shard_bytes: int, workers: int,
                      max_bad_fraction: float) -> None:
    if not _SPLIT_NAME.match(split):
        raise DeepFaceError(f"split={split!r}: use letters, digits and '_' only (it names the shard files).")
    if not 1 <= options.image_size <= 4096:
        raise DeepFaceError(f"image_size={options.image_size}: use a side between 1 and 4096 pixels (the paper: 152).")
    if not 1 <= options.jpeg_quality <= 100:
        raise DeepFaceError(f"jpeg_quality={options.jpeg_quality}: use 1..100 (default 90).")
    if shard_bytes < 1:
        raise DeepFaceError(f"shard_bytes={shard_bytes}: use a positive size (default {DEFAULT_SHARD_BYTES}, 150 MiB).")
    if workers < 1:
        raise DeepFaceError(f"workers={workers}: use at least 1 (default: the number of CPUs).")
    if not 0 <= max_bad_fraction <= 1:
        raise DeepFaceError(f"max_bad_fraction={max_bad_fraction}: use a fraction between 0 and 1.")
    if options.no_face not in NO_FACE_CHOICES:
        raise DeepFaceError(f"no_face={options.no_face!r}: choose one of {', '.join(NO_FACE_CHOICES)}.")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def build_tfrecords(
    source: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split: str = "train",
    image_size: int = 152,
    keep_original: bool = False,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    workers: int | None = None,
    max_bad_fraction: float = 0.01,
    jpeg_quality: int = 90,
    align: bool = True,
    landmarks: str | os.PathLike | None = None,
    no_face: str = "skip",
) -> dict:
    """Writes the images of ``source`` as TFRecord shards (schema v1) into ``out_dir``.

    Args:
        source: a tar archive (any compression; read once as a stream, nothing extracted) or a directory.
            The identity of an image is its parent folder's name (``train/n000002/0001_01.jpg``).
        labels_dir: output directory of `deepface.labels.build_labels`; its classes.txt gives the labels.
        out_dir: output directory, for this split only.
        split: prefix of the shard names (``train-00000-of-00012.tfrecord``).
        image_size: side of the stored square faces (and of the network input).
        keep_original: store the original file bytes (still validated by decoding) instead of a resized JPEG.
        shard_bytes: a shard is closed once it holds at least this many bytes.
        workers: processes decoding and encoding images, this one included (see `ordered_map`); None = all
            CPUs. The output does not depend on it.
        max_bad_fraction: fail (without a manifest) when a larger fraction of the images is skipped.
        jpeg_quality: quality of the re-encoded JPEGs.
        align: store each face aligned to the template (`deepface.faces`); False stores the whole frame
            fitted into the square. keep_original stores files unaligned and needs ``align=False``.
        landmarks: the 5 landmarks of the images (`deepface.landmarks.read_landmarks`: a
            ``loose_landmark_*.csv``, or VGGFace2's ``bb_landmark`` folder or archive, whose file for
            ``split`` is used); an image without a row is skipped, rows naming no image are counted.
            None: the face detector finds them (in the workers).
        no_face: when the detector finds no face: ``skip`` (counted by name) or ``center-crop``.

    Returns:
        The manifest, also written to ``out_dir/manifest.json`` (last). If that file already exists
        with the same settings, the build is complete and nothing is done.

    Raises:
        DeepFaceError: bad parameters, missing or corrupt source or labels, an out_dir holding another
            build, no image stored, or more than max_bad_fraction of the images skipped.
    """
    options = ImageOptions(image_size=image_size, keep_original=keep_original, jpeg_quality=jpeg_quality,
                           align=align, no_face=no_face)
    workers = available_cpus() if workers is None else workers
    _check_parameters(split, options, shard_bytes, workers, max_bad_fraction)
    if keep_original and align:
        raise DeepFaceError("keep_original stores files as they are, unaligned: pass align=False (--no-align) "
                            "with it, or drop keep_original to store aligned faces.")
    source_path, kind = check_source(source)
    if kind == "list":
        raise DeepFaceError(
            f"Source {source} is an image list: tfrecords needs the images, as an archive "
            "(e.g. vggface2_train.tar.gz) or a directory of identity folders."
        )
    classes = load_classes(labels_dir)
    classes_file = local_path(labels_dir)
    classes_file = classes_file / CLASSES_FILE if classes_file.is_dir() else classes_file
    out = local_path(out_dir)
    if kind == "directory" and out.resolve().is_relative_to(source_path.resolve()):
        raise DeepFaceError(f"--out {out_dir} is inside the source directory {source}: choose another directory.")
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(source, classes_file, len(classes), split, options, shard_bytes, landmarks)

    manifest = read_manifest(out)
    if manifest is not None:
        if any(manifest.get(key) != value for key, value in settings.items()):
            raise DeepFaceError(
                f"{out} already holds a finished build with other settings ({_differences(manifest, settings)}): "
                "delete it or choose another --out."
            )
        logger.info("%s already holds this build (%d records): nothing to do", out, manifest["num_records"])
        return manifest

    shards, tail = _load_state(out, split, settings)
    if tail is None:
        if shards:
            logger.info("resuming: %d complete shards (%d records) in %s; reading past the first %d files of %s",
                        len(shards), sum(s.records for s in shards), out, shards[-1].end, source)
        table = read_landmarks(landmarks, split=split) if settings["alignment"] == "landmarks" else None
        tail = _write_shards(source_path, kind, classes, out, settings, shards, options, shard_bytes, workers, table)
        _save_state(out, settings, shards, tail)
    manifest = _finish(out, settings, shards, tail, max_bad_fraction)
    logger.info("%d records in %d shards -> %s; skipped %d %s; ignored %d files that are not images",
                manifest["num_records"], manifest["num_shards"], out, manifest["num_skipped"],
                manifest["skipped_by_reason"], manifest["ignored_files"]["count"])
    return manifest


def _write_shards(source: Path, kind: str, classes: list[str], out: Path, settings: dict, shards: list[Segment],
                  options: ImageOptions, shard_bytes: int, workers: int,
                  landmarks: LandmarkTable | None = None) -> Segment:
    """Reads the source past the complete ``shards`` and writes the rest, appending each shard to
    ``shards`` (and to the saved state) as it completes. Returns the tail: the files after the last shard."""
    class_ids = {identity: label for label, identity in enumerate(classes)}
    start = shards[-1].end if shards else 0
    items = _read_items(source, class_ids, start, track_duplicates=kind == "archive", landmarks=landmarks)
    in_flight = collections.deque()  # chunks whose images are being encoded, in source order
    tasks = _image_tasks(_chunks(items, CHUNK_SIZE if workers == 1 else POOL_CHUNK_SIZE), classes, in_flight)
    segment, writer = Segment(end=start), None
    images, started = 0, time.monotonic()
    progress = tqdm(desc=f"tfrecords {settings['split']}", unit="img", disable=None)
    try:
        with ordered_map(workers) as run:
            for results in run(functools.partial(encode_records, options=options), tasks):
                chunk, encoded = in_flight.popleft(), iter(results)
                for item in chunk:
                    record, reason, faces = next(encoded) if item.reason is None else (None, None, None)
                    if reason is not None:  # the image cannot be stored
                        item = item._replace(reason=reason)
                    segment.add(item, faces)
                    if record is None:
                        continue
                    writer = writer or _ShardWriter(out, settings["split"], len(shards))
                    writer.write(record)
                    if writer.bytes >= shard_bytes:
                        writer.finish()
                        segment.file, segment.bytes = writer.path.name, writer.bytes
                        shards.append(segment)
                        _save_state(out, settings, shards)
                        segment, writer = Segment(end=segment.end), None
                counted = sum(item.reason != IGNORED for item in chunk)
                images += counted
                progress.update(counted)
        if writer is not None:
            writer.finish()
            segment.file, segment.bytes = writer.path.name, writer.bytes
            shards.append(segment)
            _save_state(out, settings, shards)
            segment, writer = Segment(end=segment.end), None
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        progress.close()
    if landmarks is not None:
        segment.landmarks_unused, segment.landmarks_unused_examples = landmarks.unused(MAX_EXAMPLES)
        if segment.landmarks_unused:
            logger.warning("%d landmark rows of %s name no image of %s, e.g. %s", segment.landmarks_unused,
                           landmarks.source, source, ", ".join(segment.landmarks_unused_examples[:3]))
    seconds = time.monotonic() - started
    logger.info("processed %d images in %.1f s: %.0f img/s with %d workers (%.0f per worker)",
                images, seconds, images / max(seconds, 1e-9), workers, images / max(seconds, 1e-9) / workers)
    return segment


@click.command("tfrecords")
@click.option("--source", required=True,
              help="Image archive (tar, tar.gz...; read as a stream) or directory of identity folders.")
@click.option("--labels", "labels_dir", required=True, help="Output directory of `deepface labels` (classes.txt).")
@click.option("--out", "out_dir", required=True, help="Output directory: the shards and manifest.json.")
@click.option("--split", default="train", show_default=True, help="Split name, the prefix of the shard files.")
@click.option("--image-size", default=152, show_default=True, help="Side of the stored square faces, in pixels.")
@click.option("--keep-original", is_flag=True,
              help="Store the original file bytes (still validated) instead of a resized JPEG.")
@click.option("--shard-mb", default=DEFAULT_SHARD_BYTES / 2**20, show_default=True, help="Target shard size in MiB.")
@click.option("--workers", type=int, default=None,
              help="Processes encoding images, this one included  [default: the number of CPUs]")
@click.option("--max-bad-fraction", default=0.01, show_default=True,
              help="Fail when a larger fraction of the images must be skipped.")
@click.option("--jpeg-quality", default=90, show_default=True, help="Quality of the re-encoded JPEGs.")
@click.option("--align/--no-align", default=True, show_default=True,
              help="Store faces aligned from 5 landmarks (--no-align: the whole frame, fitted).")
@click.option("--landmarks", type=click.Path(exists=True), default=None,
              help="loose_landmark_*.csv, or VGGFace2's bb_landmark folder/archive  [default: run the face detector]")
@click.option("--no-face", type=click.Choice(NO_FACE_CHOICES), default="skip", show_default=True,
              help="When the detector finds no face: skip the image (counted), or store a centre crop.")
def command(source: str, labels_dir: str, out_dir: str, shard_mb: float, **options) -> None:
    """Write the images as sharded TFRecords (schema v1), in parallel; resumes an interrupted build."""
    manifest = build_tfrecords(source, labels_dir, out_dir, shard_bytes=max(1, int(shard_mb * 2**20)), **options)
    click.echo(f"{manifest['num_records']} records in {manifest['num_shards']} shards, "
               f"{manifest['num_skipped']} skipped -> {out_dir}")
