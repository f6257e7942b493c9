"""`make_synthetic_dataset`: the synthetic VGGFace2 and LFW releases written to a directory, and the
``deepface synth`` command.

The output directory holds, byte for byte the same for the same arguments:

    vggface2_train.tar.gz   train/nXXXXXX/NNNN_NN.jpg (varied, non-square sizes around image_size)
    vggface2_test.tar.gz    test/nXXXXXX/NNNN_NN.jpg  (identities disjoint from train)
    train_list.txt          nXXXXXX/NNNN_NN.jpg, one per line, sorted
    test_list.txt
    lfw.tgz                 lfw/First_Last/First_Last_NNNN.jpg (lfw_image_size square)
    pairs.txt               LFW View 2 format: "folds<TAB>pairs_per_fold", then per fold the matched
                            lines "name<TAB>n1<TAB>n2" and the mismatched lines "name1<TAB>n1<TAB>name2<TAB>n2"
    bb_landmark.tar.gz      bb_landmark/loose_bb_{train,test}.csv ("NAME_ID,X,Y,W,H", the face from the
                            forehead to the chin in integer pixels) and bb_landmark/loose_landmark_{train,test}.csv
                            ("NAME_ID,P1X,P1Y,...,P5Y": eye centres on the image's left and right, nose tip,
                            mouth corners on the left and right, float pixels with pixel centres at integers);
                            names like "n000002/0001_01", rows in the order of the split's list
    lfw_landmarks.csv       the landmarks of every LFW image in that format ("First_Last/First_Last_0001",
                            sorted): what `deepface landmarks` would write for lfw.tgz (real LFW ships
                            none, and a real face detector misses most of these drawn faces)
    MD5SUMS                 md5sum format, written last: its presence means the dataset is complete

Randomness comes from numpy generators keyed on (seed, split, identity, image), so the bytes do not
depend on the number of worker processes (`deepface.parallel.ordered_map` runs
`deepface.synth.jobs.render_identity` over the identities). Bad arguments, a remote or file
``out_dir`` and too few LFW people for pairs raise `DeepFaceError` before any file changes.
The run holds ``out_dir``'s lock (`deepface.outputs.output_lock`): a second synth into it is refused.
"""


from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepface.errors import DeepFaceError
from deepface.files import atomic_open, is_remote, local_path, md5_file, write_text
from deepface.landmarks import (
    BB_LANDMARK_ARCHIVE,
    BB_LANDMARK_FOLDER,
    box_file,
    format_box_rows,
    format_landmark_rows,
    landmark_file,
    name_id,
)
from deepface.outputs import output_lock
from deepface.pairs import format_pairs
from deepface.parallel import available_cpus, ordered_map
from deepface.settings import SynthSettings
from deepface.synth.jobs import (
    LFW_FOLDS,
    IdentityJob,
    make_lfw_pairs,
    plan_identity_jobs,
    render_identity,
)

logger = logging.getLogger(__name__)

TRAIN_ARCHIVE = "vggface2_train.tar.gz"
TEST_ARCHIVE = "vggface2_test.tar.gz"
TRAIN_LIST = "train_list.txt"
TEST_LIST = "test_list.txt"
LFW_ARCHIVE = "lfw.tgz"
LFW_PAIRS = "pairs.txt"
LFW_LANDMARKS = "lfw_landmarks.csv"  # what `deepface landmarks` would write for lfw.tgz (real LFW has none)
MD5SUMS = "MD5SUMS"



def _tar_info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    """A member header with fixed owner, mode and time, so the archive bytes depend only on content."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar_gz(path: Path, top: str, members: Iterable[tuple[str, bytes]]) -> int:
    """Write ``members`` (name, bytes), already in sorted order, into a deterministic .tar.gz at ``path``.

    Directory entries (``top/`` and each ``top/<identity>/``) are added once, before their files, as
    tar does. Returns the number of files written.
    """
    written = 0
    with atomic_open(path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(_tar_info(top, directory=True))
        folder = top
        for name, data in members:
            parent = name.rsplit("/", 1)[0]
            if parent != folder:
                archive.addfile(_tar_info(parent, directory=True))
                folder = parent
            archive.addfile(_tar_info(name, len(data)), io.BytesIO(data))
            written += 1
    return written


def _render_split(jobs: Sequence[IdentityJob], render_map, description: str,
                  faces: dict[str, tuple[np.ndarray, tuple]]) -> Iterator[tuple[str, bytes]]:
    """Stream (member name, JPEG bytes) of the images of ``jobs`` in job order, with a progress bar;
    record each image's (landmarks, box) in ``faces`` under its member name."""
    total = sum(len(job.names) for job in jobs)
    with tqdm(total=total, desc=description, unit="img", disable=None) as progress:
        for members in render_map(render_identity, jobs):
            for member in members:
                faces[member.name] = (member.landmarks, member.box)
                yield member.name, member.data
            progress.update(len(members))


def _output_directory(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a local Path, refusing remote URIs and existing files."""
    if is_remote(out_dir):
        raise DeepFaceError(f"out_dir={str(out_dir)!r}: must be a local directory (on Vertex AI use the /gcs/ "
                            f"mount of the bucket, or copy the files afterwards)")
    out = local_path(out_dir)
    if out.exists() and not out.is_dir():
        raise DeepFaceError(f"out_dir={str(out_dir)!r} is a file: give a directory")
    return out


_ARCHIVES = {"train": TRAIN_ARCHIVE, "test": TEST_ARCHIVE, "lfw": LFW_ARCHIVE}
_LISTS = {"train": TRAIN_LIST, "test": TEST_LIST}


def _write_archives(out: Path, jobs: dict[str, list[IdentityJob]], workers: int,
                    faces: dict[str, tuple[np.ndarray, tuple]]) -> dict[str, int]:
    """Render every split into its archive, recording each image's (landmarks, box) in ``faces`` under
    its member name; returns the number of images per split."""
    images = {}
    with ordered_map(min(workers, max(map(len, jobs.values())))) as render_map:
        for split, split_jobs in jobs.items():
            started = time.perf_counter()
            images[split] = write_tar_gz(out / _ARCHIVES[split], split,
                                         _render_split(split_jobs, render_map, _ARCHIVES[split], faces))
            seconds = time.perf_counter() - started
            logger.info("%s: %d identities, %d images in %.1f s (%.0f images/s)", _ARCHIVES[split],
                        len(split_jobs), images[split], seconds, images[split] / max(seconds, 1e-9))
    return images


def _split_list(jobs: Sequence[IdentityJob]) -> list[str]:
    """The lines of a VGGFace2 list file: ``nXXXXXX/NNNN_NN.jpg`` of every image of ``jobs``, sorted."""
    return sorted(f"{job.prefix.split('/', 1)[1]}/{name}" for job in jobs for name in job.names)


def _member_paths(jobs: Sequence[IdentityJob]) -> list[str]:
    """Archive member names of every image of ``jobs``, sorted."""
    return sorted(f"{job.prefix}/{name}" for job in jobs for name in job.names)


def _landmark_text(paths: Sequence[str], faces: dict[str, tuple[np.ndarray, tuple]]) -> str:
    """A ``loose_landmark_*.csv``: one row per archive path of ``paths``, in that order."""
    return format_landmark_rows((name_id(path), faces[path][0]) for path in paths)


def _box_text(paths: Sequence[str], faces: dict[str, tuple[np.ndarray, tuple]]) -> str:
    """A ``loose_bb_*.csv``: one row per archive path of ``paths``, in that order."""
    return format_box_rows((name_id(path), faces[path][1]) for path in paths)


def _write_bb_landmark(path: Path, jobs: dict[str, list[IdentityJob]],
                       faces: dict[str, tuple[np.ndarray, tuple]]) -> None:
    """VGGFace2's ``bb_landmark.tar.gz``: the loose boxes and landmarks of the train and test images,
    rows in the order of the split's list."""
    members = {}
    for split in _LISTS:
        paths = [f"{split}/{line}" for line in _split_list(jobs[split])]
        members[f"{BB_LANDMARK_FOLDER}/{box_file(split)}"] = _box_text(paths, faces).encode()
        members[f"{BB_LANDMARK_FOLDER}/{landmark_file(split)}"] = _landmark_text(paths, faces).encode()
    write_tar_gz(path, BB_LANDMARK_FOLDER, sorted(members.items()))


def make_synthetic_dataset(out_dir: str | os.PathLike, **settings) -> dict:
    """Write a synthetic VGGFace2 (train/test archives, lists, bb_landmark) and LFW (archive, pairs.txt,
    landmarks) to ``out_dir``, laid out as in the module docstring.

    Args:
        out_dir: local directory; created if missing. Files already there with the same names are replaced.
        **settings: fields of `deepface.settings.SynthSettings`: the number of identities per archive
            (VGGFace2 train and test disjoint; each LFW person has 1..images_per_identity images), image
            sizes (VGGFace2 images are 0.8-1.2x wide and 1.0-1.2x taller than image_size), seed, workers
            (which do not change the output).

    Returns:
        A summary: the settings, per split identity and image counts, the LFW fold structure and the MD5 of
        every file written.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: out_dir remote or a file, or being written by another run
            (`deepface.outputs.output_lock`).

    Example: ``make_synthetic_dataset("data", train_identities=10, seed=1)``.
    """
    options = SynthSettings.of(settings)
    out = _output_directory(out_dir)
    workers = options.workers or available_cpus()
    # The whole layout first: it is cheap and fails early (too few people for pairs) before any file changes.
    jobs = plan_identity_jobs(train_identities=options.train_identities, test_identities=options.test_identities,
                              lfw_identities=options.lfw_identities, images_per_identity=options.images_per_identity,
                              image_size=options.image_size, lfw_image_size=options.lfw_image_size,
                              seed=options.seed)
    pairs, disjoint = make_lfw_pairs({job.prefix.split("/")[1]: len(job.names) for job in jobs["lfw"]},
                                     options.seed)

    started = time.perf_counter()
    with output_lock(out, "synth"):  # one writer per directory (deepface.outputs)
        (out / MD5SUMS).unlink(missing_ok=True)  # the completion marker goes first and comes back last
        faces: dict[str, tuple[np.ndarray, tuple]] = {}
        images = _write_archives(out, jobs, workers, faces)
        for split, list_name in _LISTS.items():
            write_text(out / list_name, "".join(f"{line}\n" for line in _split_list(jobs[split])))
        _write_bb_landmark(out / BB_LANDMARK_ARCHIVE, jobs, faces)
        write_text(out / LFW_LANDMARKS, _landmark_text(_member_paths(jobs["lfw"]), faces))
        write_text(out / LFW_PAIRS, format_pairs(pairs))
        md5s = {name: md5_file(out / name) for name in
                sorted([*_ARCHIVES.values(), *_LISTS.values(), BB_LANDMARK_ARCHIVE, LFW_LANDMARKS, LFW_PAIRS])}
        write_text(out / MD5SUMS, "".join(f"{md5}  {name}\n" for name, md5 in md5s.items()))

    seconds = time.perf_counter() - started
    total = sum(images.values())
    per_fold = len(pairs) // (2 * LFW_FOLDS)
    logger.info("wrote %d images to %s in %.1f s (%.0f images/s, %d workers); pairs.txt: %d folds x %d "
                "matched + %d mismatched pairs (%s)", total, out, seconds, total / max(seconds, 1e-9), workers,
                LFW_FOLDS, per_fold, per_fold, "people disjoint across folds" if disjoint else "folds share people")
    return {
        "out_dir": str(out),
        "seed": options.seed,
        "image_size": options.image_size,
        "lfw_image_size": options.lfw_image_size,
        "images_per_identity": options.images_per_identity,
        "splits": {split: {"identities": len(jobs[split]), "images": images[split]} for split in jobs},
        "lfw_pairs": {"folds": LFW_FOLDS, "pairs_per_fold": per_fold, "disjoint_folds": disjoint},
        "md5": md5s,
    }
