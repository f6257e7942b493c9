"""The bundled face detector (MTCNN) and the ``landmarks`` stage that runs it over a whole source.

The detector: MTCNN (Zhang et al., 2016; the ``mtcnn`` package, its weights inside the wheel, nothing
downloaded) -> boxes, confidences and 5 landmarks. `FaceDetector.locate` returns the face a user means
when a photo holds several: among the faces at least half as large (box area) as the largest, the one
nearest the image centre; the number found is returned too, so that stages count photos with several
faces. TensorFlow and the detector's weights load on first use (about 4 s), once per process.

The stage, `detect_landmarks` (``deepface landmarks --source ARCHIVE --out DIR``): the detector runs
once per image of a tar archive (read as a stream, `deepface.labels.iter_members`) or a folder of
identity folders, on the image decoded as `deepface.faces.face_image` decodes it for detection, and the
chosen face is written in VGGFace2's ``bb_landmark`` format, so that ``deepface tfrecords --landmarks``
and ``deepface evaluate --landmarks`` reuse it instead of detecting again. Output directory::

    loose_landmark_<split>.csv   NAME_ID,P1X,...,P5Y: one row per image with a face, in source order
    loose_bb_<split>.csv         NAME_ID,X,Y,W,H: the chosen face's box (integer pixels), same rows
    manifest.json                written last: counts, images without a face, with several faces,
                                 undecodable ones with their reasons, settings

Coordinates are full-resolution pixels of the upright image (EXIF orientation applied), whatever
resolution the detector saw. Images are detected in parallel (`deepface.tfrecords.ordered_map`) and the
output is the same bytes whatever the number of workers. Results are kept in part files
(``parts/part-00000.json``, ``PART_IMAGES`` images each) listed by ``.landmarks_state.json``: a rerun
with the same settings reuses them and finishes with the same bytes as an uninterrupted run.

Example::

    detector = FaceDetector()
    points, faces = detector.locate(pil_rgb_image)  # float [5, 2] (P1..P5 of deepface.landmarks), count

    manifest = detect_landmarks("vggface2_test.tar.gz", "landmarks/", split="test")
    # then: deepface tfrecords --landmarks landmarks/ --split test ...
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.metadata
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
from PIL import Image
from tqdm import tqdm

from deepface.contracts import read_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.faces import DETECT_SIDE, BadImage, decode, unscale_points
from deepface.files import atomic_open, local_path, read_json, remove_temporaries, write_json, write_text
from deepface.labels import MAX_EXAMPLES, check_source, is_image_name, iter_members
from deepface.landmarks import box_file, format_box_rows, format_landmark_rows, landmark_file, name_id
from deepface.tfrecords import available_cpus, ordered_map

logger = logging.getLogger(__name__)

# Smallest face searched for, in pixels of the image the detector sees (MTCNN's own default is 20).
MIN_FACE = 20
# Faces whose box is at least this fraction of the largest one's area compete on closeness to the centre.
LARGE_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class Face:
    """One detection: ``box`` (x1, y1, x2, y2), ``confidence`` in [0, 1], ``points`` float64 [5, 2]."""

    box: tuple[float, float, float, float]
    confidence: float
    points: np.ndarray

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def choose_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The face a user means: among faces at least `LARGE_FRACTION` of the largest's area, the one whose
    box centre is nearest the image centre (ties: the larger, then the first). None if no face."""
    if not faces:
        return None
    largest = max(face.area for face in faces)
    centre = np.array([(width - 1) / 2, (height - 1) / 2])

    def distance(face: Face) -> float:
        box_centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
        return float(np.linalg.norm(box_centre - centre))

    large = [face for face in faces if face.area >= LARGE_FRACTION * largest]
    return min(large, key=lambda face: (distance(face), -face.area))


class FaceDetector:
    """MTCNN on the CPU (or ``device``), loaded on first use.

    Args:
        min_face: smallest face searched for, in pixels.
        device: TensorFlow device name.
    """

    def __init__(self, min_face: int = MIN_FACE, device: str = "CPU:0"):
        self.min_face = min_face
        self.device = device
        self._mtcnn = None

    def _model(self):
        if self._mtcnn is None:
            import os

            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            from mtcnn import MTCNN

            self._mtcnn = MTCNN(device=self.device)
        return self._mtcnn

    def detect(self, image: Image.Image) -> list[Face]:
        """Every face in an RGB image, most confident first."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if min(pixels.shape[:2]) < self.min_face:
            return []
        rows = self._model().detect_faces(pixels, box_format="xyxy", output_type="numpy",
                                          min_face_size=self.min_face)
        faces = []
        for row in np.asarray(rows, np.float64).reshape(-1, 16):
            # [image, x1, y1, x2, y2, confidence, the 5 x (left eye, right eye, nose, mouth left, mouth right),
            #  the 5 y in the same order]
            faces.append(Face(box=tuple(float(v) for v in row[1:5]), confidence=float(row[5]),
                              points=np.stack([row[6:11], row[11:16]], axis=1)))
        return sorted(faces, key=lambda face: -face.confidence)

    def find(self, image: Image.Image) -> tuple[Face | None, int]:
        """``(the face a user means (see `choose_face`) or None, faces found)``."""
        faces = self.detect(image)
        return choose_face(faces, image.width, image.height), len(faces)

    def locate(self, image: Image.Image) -> tuple[np.ndarray, int] | None:
        """``(points [5, 2], faces found)`` of the face a user means (see `choose_face`), or None."""
        chosen, count = self.find(image)
        return None if chosen is None else (chosen.points, count)


# --------------------------------------------------------------------------------------------------
# The landmarks stage: one image (runs in the worker processes)
# --------------------------------------------------------------------------------------------------

DETECTOR_NAME = "mtcnn"
STATE_FILE = ".landmarks_state.json"
PARTS_DIR = "parts"
PART_IMAGES = 1024  # images per part file: what an interrupted run loses at most
TASK_IMAGES = 16  # images per task handed to a worker process (~2-5 s of detection)
MAX_LISTED = 1000  # names of images without a face / undecodable ones kept in the manifest
DUPLICATE = "duplicate: an earlier image of the source has the same NAME_ID"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

_detector: FaceDetector | None = None  # one per process, loaded on first use (TensorFlow: ~4 s)


def process_detector(min_face: int = MIN_FACE) -> FaceDetector:
    """This process's detector, made on first use (or when ``min_face`` changes): worker processes of
    `detect_landmarks` and `deepface.tfrecords` load TensorFlow and the weights once each."""
    global _detector
    if _detector is None or _detector.min_face != min_face:
        _detector = FaceDetector(min_face=min_face)
    return _detector


def find_face(data: bytes, detector: FaceDetector) -> dict:
    """The face a user means in one image file, in full-resolution upright pixels.

    The image is decoded as `deepface.faces.face_image` decodes it for detection (longer side reduced
    towards `DETECT_SIDE` by the JPEG decoder, EXIF orientation applied); points and box found there are
    mapped back with `unscale_points`.

    Args:
        data: the file's bytes.
        detector: the detector to run.

    Returns:
        ``{"points": [[x, y]] * 5 or None, "box": [x1, y1, x2, y2] or None, "faces": faces found,
        "error": None}``; for an undecodable file ``{"points": None, "box": None, "faces": None,
        "error": reason}`` (`deepface.faces.BadImage`'s message).

    Example: ``find_face(open("a.jpg", "rb").read(), FaceDetector())["points"]``.
    """
    try:
        image, factor = decode(data, min_side=DETECT_SIDE)
    except BadImage as error:
        return {"points": None, "box": None, "faces": None, "error": str(error)}
    chosen, count = detector.find(image)
    if chosen is None:
        return {"points": None, "box": None, "faces": count, "error": None}
    corners = unscale_points(np.reshape(chosen.box, (2, 2)), factor)
    return {"points": unscale_points(chosen.points, factor).tolist(), "box": corners.reshape(4).tolist(),
            "faces": count, "error": None}


def detect_chunk(images: list[bytes], min_face: int) -> list[dict]:
    """`find_face` for each image file of a task, in order, with this process's detector."""
    detector = process_detector(min_face)
    return [find_face(data, detector) for data in images]


# --------------------------------------------------------------------------------------------------
# Reading the source, running the workers, part files (main process)
# --------------------------------------------------------------------------------------------------


class _Image(NamedTuple):
    """One image file of the source: its index among the source's images, path, bytes (None: not to
    detect) and why it is not detected (None: detect it)."""

    ordinal: int
    name: str
    data: bytes | None
    error: str | None


@dataclasses.dataclass
class _Ignored:
    """Files of the source that are not images (by name), or must not be read (links, unsafe names)."""

    count: int = 0
    examples: list = dataclasses.field(default_factory=list)

    def add(self, name: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(name)


def _read_images(source: Path, parts: list[dict], ignored: _Ignored) -> Iterator[_Image]:
    """The source's image files past those the ``parts`` hold, in source order; ignored files are
    counted in ``ignored``. Bytes are read only for images to detect.

    Raises:
        DeepFaceError: the source's images are not those the ``parts`` were made from.
    """
    done = sum(part["images"] for part in parts)
    expected = _part_bounds(parts)
    seen, ordinal = set(), 0
    for member in iter_members(source):
        if member.problem or not is_image_name(member.name):
            ignored.add(member.name)
            continue
        key = name_id(member.name)
        duplicate = key in seen
        seen.add(key)
        if ordinal < done:
            _check_bound(source, expected, ordinal, member.name)
        elif duplicate:
            yield _Image(ordinal, member.name, None, DUPLICATE)
        else:
            yield _Image(ordinal, member.name, member.read(), None)
        ordinal += 1
    if ordinal < done:
        raise _changed_source(source, f"it holds {ordinal} images, the parts {done}")


def _part_bounds(parts: list[dict]) -> dict[int, str]:
    """Image index -> name of the first and last image of each part."""
    bounds, start = {}, 0
    for part in parts:
        bounds[start], bounds[start + part["images"] - 1] = part["first"], part["last"]
        start += part["images"]
    return bounds


def _check_bound(source: Path, expected: dict[int, str], ordinal: int, name: str) -> None:
    if ordinal in expected and expected[ordinal] != name:
        raise _changed_source(source, f"image {ordinal} is {name}, was {expected[ordinal]}")


def _changed_source(source: Path, detail: str) -> DeepFaceError:
    return DeepFaceError(f"{source} is not the source the unfinished run read ({detail}): delete the "
                         f"{STATE_FILE} and {PARTS_DIR}/ of the output directory, or choose another --out.")


def _tasks(images: Iterator[_Image], in_flight: collections.deque) -> Iterator[list[bytes]]:
    """Per task of `TASK_IMAGES` images, the bytes of those to detect; each task's images are appended
    to ``in_flight`` as it is handed out, so results (which come back in order) pair with popleft()."""
    chunk = []
    for image in images:
        chunk.append(image)
        if len(chunk) == TASK_IMAGES:
            in_flight.append(chunk)
            yield [item.data for item in chunk if item.error is None]
            chunk = []
    if chunk:
        in_flight.append(chunk)
        yield [item.data for item in chunk if item.error is None]


def _entries(chunk: list[_Image], results: list[dict]) -> Iterator[dict]:
    """One part-file entry per image of a task: the name and `find_face`'s result (or the error)."""
    found = iter(results)
    for image in chunk:
        result = next(found) if image.error is None else {"points": None, "box": None, "faces": None,
                                                          "error": image.error}
        yield {"name": image.name, **result}


def _write_part(out: Path, parts: list[dict], entries: list[dict]) -> None:
    """Writes ``entries`` as the next part file (atomically) and appends its record to ``parts`` (the
    caller saves the state)."""
    file = f"part-{len(parts):05d}.json"
    text = json.dumps({"entries": entries}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    write_text(out / PARTS_DIR / file, text)
    parts.append({"file": file, "images": len(entries), "bytes": (out / PARTS_DIR / file).stat().st_size,
                  "first": entries[0]["name"], "last": entries[-1]["name"]})


def _detect_parts(source: Path, out: Path, settings: dict, parts: list[dict], workers: int) -> _Ignored:
    """Detects the images past the complete ``parts``, appending each new part to ``parts`` and to the
    saved state as it completes. Returns the ignored files of the source."""
    ignored, in_flight, pending = _Ignored(), collections.deque(), []
    tasks = _tasks(_read_images(source, parts, ignored), in_flight)
    detected, started = 0, time.monotonic()
    progress = tqdm(desc="landmarks", unit="img", disable=None)
    try:
        with ordered_map(workers) as run:
            for results in run(functools.partial(detect_chunk, min_face=settings["min_face"]), tasks):
                chunk = in_flight.popleft()
                pending.extend(_entries(chunk, results))
                detected += len(results)
                progress.update(len(chunk))
                while len(pending) >= PART_IMAGES:
                    _write_part(out, parts, pending[:PART_IMAGES])
                    _save_state(out, settings, parts)
                    pending = pending[PART_IMAGES:]
        if pending:
            _write_part(out, parts, pending)
            _save_state(out, settings, parts)
    finally:
        progress.close()
    seconds = time.monotonic() - started
    logger.info("detected faces in %d images in %.1f s: %.1f img/s with %d workers",
                detected, seconds, detected / max(seconds, 1e-9), workers)
    return ignored


# --------------------------------------------------------------------------------------------------
# Settings, state and the final files
# --------------------------------------------------------------------------------------------------


def _settings(source, min_face: int, split: str) -> dict:
    """What determines the output bytes; an unfinished run resumes only with the same settings."""
    return {
        "source": str(source),
        "split": split,
        "min_face": min_face,
        "detect_side": DETECT_SIDE,
        "detector": DETECTOR_NAME,
        "detector_version": importlib.metadata.version(DETECTOR_NAME),
    }


def _differences(old: dict, new: dict) -> str:
    return ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in new if old.get(key) != new[key])


def _load_state(out: Path, settings: dict) -> list[dict]:
    """The complete parts of an unfinished run with these settings; removes temporaries and part files
    the state does not vouch for.

    Raises:
        DeepFaceError: ``out`` holds an unfinished run with other settings.
    """
    parts, state_path = [], out / STATE_FILE
    if state_path.exists():
        state = read_json(state_path)
        if state["settings"] != settings:
            raise DeepFaceError(
                f"{out} holds an unfinished landmarks run with other settings "
                f"({_differences(state['settings'], settings)}): rerun with the same settings to finish it, "
                "or delete the directory or choose another --out."
            )
        for part in state["parts"]:
            path = out / PARTS_DIR / part["file"]
            if not (path.is_file() and path.stat().st_size == part["bytes"]):
                logger.warning("part %s of the unfinished run is missing or damaged: detecting again from it", path)
                break
            parts.append(part)
    remove_temporaries(out)
    if (out / PARTS_DIR).is_dir():
        remove_temporaries(out / PARTS_DIR)
        vouched = {part["file"] for part in parts}
        for leftover in (out / PARTS_DIR).glob("part-*.json"):
            if leftover.name not in vouched:
                leftover.unlink()
    return parts


def _save_state(out: Path, settings: dict, parts: list[dict]) -> None:
    write_json(out / STATE_FILE, {"settings": settings, "parts": parts})


@dataclasses.dataclass
class _Tally:
    """What the manifest counts, gathered while the part files are merged."""

    images: int = 0
    faces_found: int = 0
    no_face: list = dataclasses.field(default_factory=list)
    no_face_count: int = 0
    several: list = dataclasses.field(default_factory=list)
    several_count: int = 0
    undecodable: list = dataclasses.field(default_factory=list)
    undecodable_count: int = 0
    by_reason: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    duplicates: list = dataclasses.field(default_factory=list)
    duplicate_count: int = 0

    def add(self, entry: dict) -> None:
        self.images += 1
        name, error = entry["name"], entry["error"]
        if error == DUPLICATE:
            self.duplicate_count += 1
            _keep(self.duplicates, name, MAX_EXAMPLES)
        elif error is not None:
            self.undecodable_count += 1
            self.by_reason[error.split(":")[0]] += 1
            _keep(self.undecodable, {"file": name, "reason": error}, MAX_LISTED)
        elif entry["points"] is None:
            self.no_face_count += 1
            _keep(self.no_face, name, MAX_LISTED)
        else:
            self.faces_found += 1
        if (entry["faces"] or 0) > 1:
            self.several_count += 1
            _keep(self.several, name, MAX_EXAMPLES)


def _keep(listed: list, value, limit: int) -> None:
    if len(listed) < limit:
        listed.append(value)


def _merge_parts(out: Path, split: str, parts: list[dict]) -> _Tally:
    """Writes the two CSV files from the part files, rows in source order, part by part (atomically).
    Returns the counts for the manifest."""
    tally = _Tally()
    with atomic_open(out / landmark_file(split), "wb") as points_file, \
            atomic_open(out / box_file(split), "wb") as boxes_file:
        for index, part in enumerate(parts):
            entries = read_json(out / PARTS_DIR / part["file"])["entries"]
            for entry in entries:
                tally.add(entry)
            found = [entry for entry in entries if entry["points"] is not None]
            points = format_landmark_rows((name_id(e["name"]), e["points"]) for e in found)
            boxes = format_box_rows((name_id(e["name"]), _xywh(e["box"])) for e in found)
            points_file.write((points if index == 0 else points.split("\n", 1)[1]).encode("utf-8"))
            boxes_file.write((boxes if index == 0 else boxes.split("\n", 1)[1]).encode("utf-8"))
    return tally


def _xywh(box: list[float]) -> tuple[float, float, float, float]:
    """(x1, y1, x2, y2) -> (X, Y, W, H), as the loose_bb CSVs give boxes."""
    return box[0], box[1], box[2] - box[0], box[3] - box[1]


def _finish(out: Path, settings: dict, parts: list[dict], ignored: _Ignored) -> dict:
    """Merges the parts into the CSV files, writes the manifest (last), removes the parts and state."""
    tally = _merge_parts(out, settings["split"], parts)
    manifest = {
        "settings": settings,
        "files": {"landmarks": landmark_file(settings["split"]), "boxes": box_file(settings["split"])},
        "images": tally.images,
        "faces_found": tally.faces_found,
        "no_face": {"count": tally.no_face_count, "images": tally.no_face},
        "several_faces": {"count": tally.several_count, "examples": tally.several},
        "undecodable": {"count": tally.undecodable_count, "by_reason": dict(sorted(tally.by_reason.items())),
                        "images": tally.undecodable},
        "duplicates": {"count": tally.duplicate_count, "examples": tally.duplicates},
        "ignored_files": {"count": ignored.count, "examples": ignored.examples},
    }
    write_manifest(out, manifest)  # last: the output is complete
    (out / STATE_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / PARTS_DIR, ignore_errors=True)
    return manifest


def _check_parameters(split: str, workers: int, min_face: int) -> None:
    if not _SPLIT_NAME.match(split):
        raise DeepFaceError(f"split={split!r}: use letters, digits and '_' only (it names the CSV files).")
    if workers < 1:
        raise DeepFaceError(f"workers={workers}: use at least 1 (default: the number of CPUs).")
    if isinstance(min_face, bool) or not isinstance(min_face, int) or min_face < 1:
        raise DeepFaceError(f"min_face={min_face!r}: use a positive number of pixels (default {MIN_FACE}).")


def _check_paths(source, out_dir) -> tuple[Path, Path]:
    """The local source (an archive or a directory) and output directory.

    Raises:
        DeepFaceError: the source is missing, remote or an image list, or the output is inside it.
    """
    source_path, kind = check_source(source)
    if kind == "list":
        raise DeepFaceError(f"Source {source} is an image list: landmarks needs the images, as an archive "
                            "(e.g. vggface2_test.tar.gz) or a directory of identity folders.")
    out = local_path(out_dir)
    if kind == "directory" and out.resolve().is_relative_to(source_path.resolve()):
        raise DeepFaceError(f"--out {out_dir} is inside the source directory {source}: choose another directory.")
    return source_path, out


def _finished(out: Path, settings: dict) -> dict | None:
    """The manifest of a complete output with these settings, or None when there is none.

    Raises:
        DeepFaceError: ``out`` holds a complete output with other settings.
    """
    manifest = read_manifest(out)
    if manifest is None:
        return None
    if manifest.get("settings") != settings:
        raise DeepFaceError(f"{out} already holds landmarks made with other settings "
                            f"({_differences(manifest.get('settings') or {}, settings)}): "
                            "delete it or choose another --out.")
    return manifest


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


def detect_landmarks(source: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int | None = None,
                     min_face: int = MIN_FACE, split: str = "images") -> dict:
    """Finds the face and its 5 landmarks in every image of ``source``; writes them as VGGFace2's
    ``loose_landmark_<split>.csv`` and ``loose_bb_<split>.csv`` in ``out_dir``, then ``manifest.json``.

    Args:
        source: a tar archive (any compression; read once as a stream, nothing extracted) or a directory
            of identity folders. Every file named like an image is one row's candidate; a CSV name is
            `deepface.landmarks.name_id` of its path (a later image with the same name is skipped).
        out_dir: output directory (created); for one source and split.
        workers: processes running the detector, this one included (`ordered_map`); None = all CPUs.
            The output does not depend on it.
        min_face: smallest face searched for, in pixels of the image the detector sees.
        split: names the CSV files; use the split that ``deepface tfrecords --landmarks DIR --split``
            will read (or pass it the CSV file).

    Returns:
        The manifest (also ``out_dir/manifest.json``): ``images``, ``faces_found``, ``no_face``
        (count, names), ``several_faces`` (count, examples; the face `choose_face` picks is written),
        ``undecodable`` (count, by reason, files with reasons), ``duplicates``, ``ignored_files``,
        ``settings``. If that file exists with the same settings, it is returned and nothing is done.

    Raises:
        DeepFaceError: bad parameters; a missing, remote or corrupt source, or an image list; ``out_dir``
            inside the source directory, or holding a finished or unfinished run with other settings
            (the message names the differences); a source holding no image.

    Example::

        manifest = detect_landmarks("lfw.tgz", "lfw_landmarks", split="lfw")
        table = deepface.landmarks.read_landmarks("lfw_landmarks/loose_landmark_lfw.csv")
    """
    workers = available_cpus() if workers is None else workers
    _check_parameters(split, workers, min_face)
    source_path, out = _check_paths(source, out_dir)
    settings = _settings(source, min_face, split)
    manifest = _finished(out, settings)
    if manifest is not None:
        logger.info("%s already holds these landmarks (%d images): nothing to do", out, manifest["images"])
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    parts = _load_state(out, settings)
    if parts:
        logger.info("resuming: %d complete parts (%d images) in %s", len(parts),
                    sum(part["images"] for part in parts), out)
    ignored = _detect_parts(source_path, out, settings, parts, workers)
    if not parts:
        raise DeepFaceError(f"Source {source} holds no image files ({ignored.count} other files, e.g. "
                            f"{', '.join(ignored.examples[:3]) or 'none'}): pass an archive or folder of images.")
    manifest = _finish(out, settings, parts, ignored)
    logger.info("%d of %d images have a face (%d without, %d with several, %d undecodable) -> %s",
                manifest["faces_found"], manifest["images"], manifest["no_face"]["count"],
                manifest["several_faces"]["count"], manifest["undecodable"]["count"], out)
    return manifest


@click.command("landmarks")
@click.option("--source", required=True,
              help="Image archive (tar, tar.gz...; read as a stream) or directory of identity folders.")
@click.option("--out", "out_dir", required=True,
              help="Output directory: loose_landmark_<split>.csv, loose_bb_<split>.csv, manifest.json.")
@click.option("--workers", type=int, default=None,
              help="Processes running the detector, this one included  [default: the number of CPUs]")
@click.option("--min-face", type=int, default=MIN_FACE, show_default=True,
              help="Smallest face searched for, in pixels of the image the detector sees.")
@click.option("--split", default="images", show_default=True,
              help="Names the CSV files: the --split that `deepface tfrecords --landmarks` will read.")
def command(source: str, out_dir: str, workers: int | None, min_face: int, split: str) -> None:
    """Find the face and its 5 landmarks in every image (VGGFace2 bb_landmark CSVs); resumable."""
    manifest = detect_landmarks(source, out_dir, workers=workers, min_face=min_face, split=split)
    click.echo(f"{manifest['faces_found']} of {manifest['images']} images have a face "
               f"({manifest['no_face']['count']} without, {manifest['undecodable']['count']} undecodable) -> {out_dir}")
