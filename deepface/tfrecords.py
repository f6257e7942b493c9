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
`deepface.records` writes the bytes TensorFlow's own Example and TFRecordWriter write. The workers run
under `deepface.parallel.ordered_map`; `deepface.shards` keeps the shards, the build state and the manifest.

One build per directory: the build holds the directory's lock (`deepface.outputs.output_lock`) from
before it reads the old manifest until it returns; a second build into it is refused with one line
naming the holder. A killed build's lock dies with it.

Interruptions: a shard is written under a temporary name of this run's own
(``.<split>-00003.<pid>-<random>.tfrecord.done.tmp``) and renamed to ``<split>-00003.tfrecord.done``
when complete; ``.build_state.json`` lists the complete
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
import functools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from deepface.archives import MAX_EXAMPLES, NO_IDENTITY_FOLDER, check_source, identity_of, is_image_name, iter_members
from deepface.contracts import ENCODING_ORIGINAL, ENCODING_RESIZED, SCHEMA_VERSION, other_settings, read_manifest
from deepface.errors import DeepFaceError
from deepface.files import hash_file, local_path
from deepface.labels import CLASSES_FILE, load_classes
from deepface.landmarks import LandmarkTable, name_id, read_landmarks
from deepface.outputs import output_lock
from deepface.parallel import available_cpus, ordered_map
from deepface.records import ImageOptions, ImageTask, encode_records
from deepface.settings import TfrecordsSettings
from deepface.shards import (
    IGNORED,
    Item,
    Segment,
    ShardWriter,
    finish_build,
    load_state,
    save_state,
)

logger = logging.getLogger(__name__)

CHUNK_SIZE = 32  # files per chunk of work with one worker (in this process): records reach the shard chunk by chunk
# Files per task with several workers (run by a pool process, or by the main process, see ordered_map): fewer,
# larger messages, yet fine enough to balance the processes. Of 64, 128 and 256, 128 scaled best from 1 to 2
# workers (benchmarks/bench_tfrecords.py prints the 1 -> 2 workers scaling).
POOL_CHUNK_SIZE = 128


# --------------------------------------------------------------------------------------------------
# Reading the source (main process)
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Settings and parameters
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def build_tfrecords(
    source: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    landmarks: str | os.PathLike | None = None,
    **settings,
) -> dict:
    """Writes the images of ``source`` as TFRecord shards (schema v1) into ``out_dir``.

    Args:
        source: a tar archive (any compression; read once as a stream, nothing extracted) or a directory.
            The identity of an image is its parent folder's name (``train/n000002/0001_01.jpg``).
        labels_dir: output directory of `deepface.labels.build_labels`; its classes.txt gives the labels.
        out_dir: output directory, for this split only.
        landmarks: the 5 landmarks of the images (`deepface.landmarks.read_landmarks`: a
            ``loose_landmark_*.csv``, or VGGFace2's ``bb_landmark`` folder or archive, whose file for
            ``split`` is used); an image without a row is skipped, rows naming no image are counted.
            None: the face detector finds them (in the workers).
        **settings: fields of `deepface.settings.TfrecordsSettings`: split (prefix of the shard names,
            ``train-00000-of-00012.tfrecord``), image_size (of the stored square faces and the network
            input), keep_original (the file's bytes, validated, instead of a resized JPEG; needs align off),
            align (faces aligned to the template of `deepface.faces`; off: the whole frame fitted into the
            square), no_face (``skip``, counted by name, or ``center-crop``), max_bad_fraction (fail,
            without a manifest, when more images are skipped), jpeg_quality, shard_mb (a shard is closed
            once it holds this many MiB), workers (processes, this one included; the output does not
            depend on it).

    Returns:
        The manifest, also written to ``out_dir/manifest.json`` (last). If that file already exists
        with the same settings, the build is complete and nothing is done.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: missing or corrupt source or labels, an out_dir holding another
            build or being written by another run (its lock), no image stored, or more than
            max_bad_fraction of the images skipped.
    """
    chosen = TfrecordsSettings.of(settings)
    options = ImageOptions(image_size=chosen.image_size, keep_original=chosen.keep_original,
                           jpeg_quality=chosen.jpeg_quality, align=chosen.align, no_face=chosen.no_face)
    workers = available_cpus() if chosen.workers is None else chosen.workers
    split, shard_bytes = chosen.split, max(1, int(chosen.shard_mb * 2**20))
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
        raise DeepFaceError(f"out_dir {out_dir} is inside the source directory {source}: choose another directory.")
    settings = _settings(source, classes_file, len(classes), split, options, shard_bytes, landmarks)
    with output_lock(out, "tfrecords"):  # one build per directory; a dead run's leftovers are ours to remove
        manifest = read_manifest(out)
        if manifest is not None:
            if any(manifest.get(key) != value for key, value in settings.items()):
                raise other_settings(out, "build", manifest, settings, finished=True)
            logger.info("%s already holds this build (%d records): nothing to do", out, manifest["num_records"])
            return manifest

        shards, tail = load_state(out, split, settings)
        if tail is None:
            if shards:
                logger.info("resuming: %d complete shards (%d records) in %s; reading past the first %d files of %s",
                            len(shards), sum(s.records for s in shards), out, shards[-1].end, source)
            table = read_landmarks(landmarks, split=split) if settings["alignment"] == "landmarks" else None
            tail = _write_shards(source_path, kind, classes, out, settings, shards, options, shard_bytes, workers,
                                 table)
            save_state(out, settings, shards, tail)
        manifest = finish_build(out, settings, shards, tail, chosen.max_bad_fraction)
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
                    writer = writer or ShardWriter(out, settings["split"], len(shards))
                    writer.write(record)
                    if writer.bytes >= shard_bytes:
                        writer.finish()
                        segment.file, segment.bytes = writer.path.name, writer.bytes
                        shards.append(segment)
                        save_state(out, settings, shards)
                        segment, writer = Segment(end=segment.end), None
                counted = sum(item.reason != IGNORED for item in chunk)
                images += counted
                progress.update(counted)
        if writer is not None:
            writer.finish()
            segment.file, segment.bytes = writer.path.name, writer.bytes
            shards.append(segment)
            save_state(out, settings, shards)
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
