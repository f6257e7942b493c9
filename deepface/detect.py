"""The bundled face detector (MTCNN) and the ``landmarks`` stage that runs it over a whole source.

The detector: MTCNN (Zhang et al., 2016; the ``mtcnn`` package, its weights inside the wheel, nothing
downloaded) -> boxes, confidences and 5 landmarks. `FaceDetector.locate` returns the face a user means
when a photo holds several: among the faces at least half as large (box area) as the largest, the one
nearest the image centre; the number found is returned too, so that stages count photos with several
faces. TensorFlow and the detector's weights load on first use, once per process.

The stage, `detect_landmarks` (``deepface landmarks --source ARCHIVE --out DIR``): the detector runs
once per image of a tar archive (read as a stream, `deepface.archives.iter_members`) or a folder of
identity folders, on the image decoded as `deepface.faces.face_image` decodes it for detection, and the
chosen face is written in VGGFace2's ``bb_landmark`` format, so that ``deepface tfrecords --landmarks``
and ``deepface evaluate --landmarks`` reuse it instead of detecting again. Output directory::

    loose_landmark_<split>.csv   NAME_ID,P1X,...,P5Y: one row per image with a face, in source order
    loose_bb_<split>.csv         NAME_ID,X,Y,W,H: the chosen face's box (integer pixels), same rows
    manifest.json                written last: counts, images without a face, with several faces,
                                 undecodable ones with their reasons, settings

Coordinates are full-resolution pixels of the upright image (EXIF orientation applied), whatever
resolution the detector saw. Images are detected in parallel (`deepface.parallel.ordered_map`) and the
output is the same bytes whatever the number of workers. Results are kept in part files
(``parts/part-00000.json``, ``PART_IMAGES`` images each) listed by ``.landmarks_state.json``
(`deepface.landmark_parts`): a rerun with the same settings reuses them and finishes with the same bytes
as an uninterrupted run.

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
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepface.archives import check_source
from deepface.errors import DeepFaceError
from deepface.faces import DETECT_SIDE, BadImage, decode, unscale_points
from deepface.files import local_path
from deepface.landmark_parts import (
    IgnoredFiles,
    SourceImage,
    complete_manifest,
    finish,
    load_state,
    read_images,
    save_state,
    write_part,
)
from deepface.outputs import locks_output
from deepface.parallel import available_cpus, ordered_map
from deepface.settings import MIN_FACE, LandmarksSettings

logger = logging.getLogger(__name__)

# Smallest face searched for, in pixels of the image the detector sees (MTCNN's own default is 20).
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
PART_IMAGES = 1024  # images per part file: what an interrupted run loses at most
TASK_IMAGES = 16  # images per task handed to a worker process (their detection outweighs the hand-over)

_detector: FaceDetector | None = None  # one per process, loaded on first use (TensorFlow's import takes seconds)


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
# Running the workers over the source, part by part (main process; the parts: deepface.landmark_parts)
# --------------------------------------------------------------------------------------------------


def _tasks(images: Iterator[SourceImage], in_flight: collections.deque) -> Iterator[list[bytes]]:
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


def _entries(chunk: list[SourceImage], results: list[dict]) -> Iterator[dict]:
    """One part-file entry per image of a task: the name and `find_face`'s result (or the error)."""
    found = iter(results)
    for image in chunk:
        result = next(found) if image.error is None else {"points": None, "box": None, "faces": None,
                                                          "error": image.error}
        yield {"name": image.name, **result}


def _detect_parts(source: Path, out: Path, settings: dict, parts: list[dict], workers: int) -> IgnoredFiles:
    """Detects the images past the complete ``parts``, appending each new part to ``parts`` and to the
    saved state as it completes. Returns the ignored files of the source."""
    ignored, in_flight, pending = IgnoredFiles(), collections.deque(), []
    tasks = _tasks(read_images(source, parts, ignored), in_flight)
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
                    write_part(out, parts, pending[:PART_IMAGES])
                    save_state(out, settings, parts)
                    pending = pending[PART_IMAGES:]
        if pending:
            write_part(out, parts, pending)
            save_state(out, settings, parts)
    finally:
        progress.close()
    seconds = time.monotonic() - started
    logger.info("detected faces in %d images in %.1f s: %.1f img/s with %d workers",
                detected, seconds, detected / max(seconds, 1e-9), workers)
    return ignored


# --------------------------------------------------------------------------------------------------
# Settings and checks
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
        raise DeepFaceError(f"out_dir {out_dir} is inside the source directory {source}: choose another directory.")
    return source_path, out


# --------------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------------


@locks_output("out_dir", "landmarks", LandmarksSettings)  # one writer per output directory
def detect_landmarks(source: str | os.PathLike, out_dir: str | os.PathLike, **settings) -> dict:
    """Finds the face and its 5 landmarks in every image of ``source``; writes them as VGGFace2's
    ``loose_landmark_<split>.csv`` and ``loose_bb_<split>.csv`` in ``out_dir``, then ``manifest.json``.

    Args:
        source: a tar archive (any compression; read once as a stream, nothing extracted) or a directory
            of identity folders. Every file named like an image is one row's candidate; a CSV name is
            `deepface.landmarks.name_id` of its path (a later image with the same name is skipped).
        out_dir: output directory (created); for one source and split.
        **settings: fields of `deepface.settings.LandmarksSettings`: workers (processes running the
            detector, this one included; the output does not depend on it), min_face (in pixels of the
            image the detector sees), split (names the CSV files: use the split that `build_tfrecords`
            will read, or give it the CSV file).

    Returns:
        The manifest (also ``out_dir/manifest.json``): ``images``, ``faces_found``, ``no_face``
        (count, names), ``several_faces`` (count, examples; the face `choose_face` picks is written),
        ``undecodable`` (count, by reason, files with reasons), ``duplicates``, ``ignored_files``,
        ``settings``. If that file exists with the same settings, it is returned and nothing is done.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: a missing, remote or corrupt source, or an image list; ``out_dir``
            inside the source directory, or holding a finished or unfinished run with other settings
            (the message names the differences); a source holding no image.

    Example::

        manifest = detect_landmarks("lfw.tgz", "lfw_landmarks", split="lfw")
        table = deepface.landmarks.read_landmarks("lfw_landmarks/loose_landmark_lfw.csv")
    """
    options = LandmarksSettings.of(settings)
    workers = available_cpus() if options.workers is None else options.workers
    source_path, out = _check_paths(source, out_dir)
    settings = _settings(source, options.min_face, options.split)
    manifest = complete_manifest(out, settings)
    if manifest is not None:
        logger.info("%s already holds these landmarks (%d images): nothing to do", out, manifest["images"])
        return manifest
    out.mkdir(parents=True, exist_ok=True)
    parts = load_state(out, settings)
    if parts:
        logger.info("resuming: %d complete parts (%d images) in %s", len(parts),
                    sum(part["images"] for part in parts), out)
    ignored = _detect_parts(source_path, out, settings, parts, workers)
    if not parts:
        raise DeepFaceError(f"Source {source} holds no image files ({ignored.count} other files, e.g. "
                            f"{', '.join(ignored.examples[:3]) or 'none'}): pass an archive or folder of images.")
    manifest = finish(out, settings, parts, ignored)
    logger.info("%d of %d images have a face (%d without, %d with several, %d undecodable) -> %s",
                manifest["faces_found"], manifest["images"], manifest["no_face"]["count"],
                manifest["several_faces"]["count"], manifest["undecodable"]["count"], out)
    return manifest
