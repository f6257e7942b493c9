"""The contracts between stages, in one place (no TensorFlow import).

- Every stage writes a ``manifest.json`` (``MANIFEST_FILE``) in its output directory, written last and
  atomically (`write_manifest`): its presence means the output is complete. A stage that rewrites a
  directory removes the old manifest first (`remove_manifest`), so a stale one never vouches for new files.
  Manifests are canonical JSON (`deepface.files.dumps_json`): the same manifest gives the same bytes.
- TFRecord record schema, version ``SCHEMA_VERSION`` (written by `deepface.tfrecords`, read by
  `deepface.data`; the tfrecords manifest says ``"schema_version": 1``), and how its images are stored
  (the manifest's ``encoding``): ``ENCODING_RESIZED`` (JPEGs of image_size x image_size) or
  ``ENCODING_ORIGINAL`` (the files' own bytes, ``keep_original``).
- A model directory is usable (evaluate, verify) only with the complete manifest of the stage that wrote it
  (`check_model_dir`): ``train``'s, or ``import-weights``'s, each of its files present at the size listed.
- Verification pairs: LFW's protocol deals the pairs into ``LFW_FOLDS`` folds (pairs.txt's first line
  says how many sets of how many pairs; `deepface.pairs`).

Readers of ``gs://`` directories (`deepface.data`, `deepface.train`) read through tf.io.gfile with these
names; `read_manifest` reads local directories.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from deepface.errors import DeepFaceError
from deepface.files import is_remote, local_path, read_json, write_json

MANIFEST_FILE = "manifest.json"

# TFRecord schema v1 (deepface.tfrecords writes it, deepface.data reads it).
SCHEMA_VERSION = 1
ENCODING_RESIZED = "jpeg-resized"
ENCODING_ORIGINAL = "original"

LFW_FOLDS = 10  # folds (sets) of the LFW verification protocol
MODEL_STAGES = ("train", "import-weights")  # the stages whose manifest makes a model directory usable


def manifest_path(directory: str | os.PathLike) -> str | Path:
    """The manifest's path in ``directory``: a string for remote URIs (``gs://...``), a local Path
    otherwise (a file:// URI as a local path)."""
    if is_remote(directory):
        return posixpath.join(str(directory), MANIFEST_FILE)
    return local_path(directory) / MANIFEST_FILE


def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    """Writes ``directory/manifest.json`` atomically (`deepface.files.write_json`: canonical JSON, temporary
    name then rename; gs:// through tf.io.gfile, whose objects appear whole). Call it last: its presence
    means the output is complete."""
    write_json(manifest_path(directory), manifest)


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The manifest of the local ``directory`` (a path or file:// URI), or None if it has none (the
    output is absent or incomplete)."""
    path = manifest_path(directory)
    if isinstance(path, str):
        raise ValueError(f"read_manifest reads local directories, not {directory}: read it through tf.io.gfile.")
    return read_json(path) if path.exists() else None


def remove_manifest(directory: str | os.PathLike) -> None:
    """Removes the manifest of the local ``directory``, if any: first thing when a stage rewrites its
    output, so the directory stops looking complete."""
    path = manifest_path(directory)
    if isinstance(path, str):
        raise ValueError(f"remove_manifest removes local manifests, not {directory}: use tf.io.gfile.")
    path.unlink(missing_ok=True)


def other_settings(out: str | os.PathLike, run: str, old: dict, new: dict, *, finished: bool) -> DeepFaceError:
    """The error for a resumable stage whose output directory ``out`` holds a ``run`` ("build",
    "landmarks run") made with other settings: names each difference as ``key: old -> new`` and the fix."""
    differences = ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in new if old.get(key) != new[key])
    if finished:
        return DeepFaceError(f"{out} already holds a finished {run} with other settings ({differences}): delete it "
                             "or choose another output directory.")
    return DeepFaceError(f"{out} holds an unfinished {run} with other settings ({differences}): rerun with the same "
                         "settings to finish it, or delete the directory or choose another output directory.")


def check_model_dir(model_dir: str | os.PathLike) -> dict:
    """The manifest of a complete model directory, after cheap checks (no hashing): it exists, was written
    by a stage of `MODEL_STAGES` (``deepface train`` or ``deepface import-weights``), and every file it
    lists is present, at the listed ``bytes`` where it gives them. Evaluate and verify call it first, so a
    directory that training (or ``train --overwrite``) left half-written is never evaluated.

    Args:
        model_dir: a local path, file:// URI or ``gs://`` URI.

    Returns:
        The manifest.

    Raises:
        DeepFaceError: one line naming the directory (or file) and the fix: no manifest (an interrupted or
            running training), a manifest of another stage or unreadable, a listed file missing or of
            another size.

    Example: ``check_model_dir("out/model")["files"]["embedding.keras"]["bytes"]``.
    """
    path = manifest_path(model_dir)
    fix = "rerun `deepface train` into it to finish it, or pass a complete model directory"
    if not _exists(path):
        raise DeepFaceError(f"{model_dir} has no {MANIFEST_FILE}: it is not a complete model directory (its "
                            f"training was interrupted, or is still writing it): {fix}.")
    try:
        manifest = read_json(path)
        stage, files = manifest.get("stage"), manifest["files"]
        sizes = {name: entry.get("bytes") for name, entry in files.items()} if isinstance(files, dict) else {
            str(name): None for name in files}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DeepFaceError(f"{path} is not a model manifest ({type(error).__name__}: {error}): {fix}.") from None
    if stage not in MODEL_STAGES:
        raise DeepFaceError(f"{path} is the manifest of a {stage!r} output, not of a model directory "
                            f"(stage {' or '.join(MODEL_STAGES)}): pass the output directory of `deepface train`.")
    for name, expected in sorted(sizes.items()):
        file = posixpath.join(str(model_dir), name) if is_remote(model_dir) else local_path(model_dir) / name
        size = _size(file)
        if size is None or (expected is not None and size != int(expected)):
            found = "is missing" if size is None else f"has {size} bytes, its manifest says {expected}"
            raise DeepFaceError(f"{file} {found} (the model directory was changed after training): {fix}.")
    return manifest


def _exists(path: str | Path) -> bool:
    return _size(path) is not None


def _size(path: str | Path) -> int | None:
    """The size of a local or remote file, None if it does not exist."""
    if isinstance(path, str):
        import tensorflow as tf  # lazy: only remote model directories need it

        return tf.io.gfile.stat(path).length if tf.io.gfile.exists(path) else None
    return path.stat().st_size if path.is_file() else None
