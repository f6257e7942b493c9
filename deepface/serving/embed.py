"""``deepface embed``: the embedding of every face image of a folder or archive, in resumable shards.

`embed_folder(model_dir, source, out_dir, **EmbedSettings)` reads ``source`` once, as a stream
(`deepface.archives.iter_members`: a tar archive in archive order, a folder in sorted path order; every file
with an image suffix counts), cuts each face as the Python API and ``deepface evaluate`` do
(`deepface.faces.FaceCropper`: the detector, or ``landmarks``), embeds it with the model directory's
``embedding.keras`` (`deepface.serving.model.embed_crops`: the embeddings of `deepface.api.FaceVerifier`) and
writes ``out_dir``::

    embeddings-00000.npz ...   one shard per ``shard_size`` images of the source, in source order:
                               ``names`` (str [n]: paths inside the source) and ``embeddings`` (float32
                               [n, D], unit rows) of the images embedded, ``skipped`` (str [k, 2]: path,
                               reason) of those that could not be (undecodable, no face)
    manifest.json              written last: the shards (images, embedded, sha256), totals, skipped images
                               with their reasons, the model's sha256, the settings

Read it back with `read_embeddings(out_dir)` -> ``(names, embeddings)``, or shard by shard with ``np.load``.

Memory holds one shard (``shard_size x D`` float32: 4096 x 4096 x 4 B = 64 MiB for the paper's model).
Each shard is written atomically (temporary name, then rename) once complete; ``.embed_state.json`` records
the inputs and settings. A killed run rerun with the same inputs skips the complete shards (their images
are streamed past, not decoded) and gives the same bytes; other inputs are an error naming them. Shards
are written with fixed zip timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepface import files
from deepface.archives import check_source, is_image_name, iter_members
from deepface.contracts import MANIFEST_FILE, check_model_dir, other_settings, read_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.settings import EmbedSettings

logger = logging.getLogger(__name__)

STATE_FILE = ".embed_state.json"
SHARD_PATTERN = "embeddings-{:05d}.npz"
SCHEMA_VERSION = 1
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same arrays give the same bytes


def embed_folder(
    model_dir: str | os.PathLike,
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    landmarks: str | os.PathLike | None = None,
    **settings,
) -> dict:
    """Embed every image of ``source`` into shards in ``out_dir`` (see the module docstring).

    Args:
        model_dir: a complete local model directory of ``deepface train``.
        source: a tar archive (``.tar``, ``.tar.gz``, ...) or a folder of images (local).
        out_dir: the local output directory (created; resumed when it holds a run of the same inputs).
        landmarks: the images' landmarks (a ``loose_landmark_*.csv`` or ``bb_landmark`` archive) when faces
            are aligned; None: the face detector finds them.
        settings: `deepface.settings.EmbedSettings` fields (batch_size, shard_size, flip, align, no_face).

    Returns:
        The manifest written.

    Raises:
        SettingError: a bad setting (before anything is read).
        DeepFaceError: an incomplete model directory; a source that is missing or not an archive or folder;
            an ``out_dir`` holding a run of other inputs or settings.

    Example::

        embed_folder("out/model", "photos.tar.gz", "out/embeddings", batch_size=32)
        names, embeddings = read_embeddings("out/embeddings")
    """
    from deepface.faces import FaceCropper, aligned_for
    from deepface.landmarks import read_landmarks
    from deepface.model import load_embedding_model
    from deepface.outputs import output_lock

    chosen = EmbedSettings.of(settings)
    check_model_dir(model_dir)
    path, _ = check_source(source)
    out = files.local_path(out_dir)
    state = {"schema_version": SCHEMA_VERSION, "model_sha256": files.hash_file(Path(model_dir) / "embedding.keras"),
             "source": str(path), "source_bytes": path.stat().st_size if path.is_file() else None,
             "landmarks": None if landmarks is None else str(landmarks), **chosen.to_dict()}
    with output_lock(out, "embed"):
        done = _resume(out, state)
        if isinstance(done, dict):
            logger.info("%s already holds these embeddings; nothing to do", out)
            return done
        model, metadata = load_embedding_model(model_dir)
        align = aligned_for(metadata, chosen.align)
        table = read_landmarks(landmarks) if align and landmarks is not None else None
        cropper = FaceCropper(int(model.input_shape[1]), align=align, landmarks=table, no_face=chosen.no_face)
        shards = _embed_shards(model, cropper, path, out, chosen, first_shard=done)
        manifest = _manifest(out, state, shards, align=align, size=cropper.size,
                             embedding_size=int(model.output_shape[-1]))
        write_manifest(out, manifest)
    logger.info("embedded %d of %d images into %d shards in %s (%d skipped)", manifest["embedded"],
                manifest["images"], len(shards), out, len(manifest["skipped"]))
    return manifest


def read_embeddings(out_dir: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """All the names and embeddings of a complete ``embed_folder`` output, in source order.

    Raises:
        DeepFaceError: no manifest.json (an unfinished or missing run).
    """
    out = files.local_path(out_dir)
    manifest = read_manifest(out)
    if manifest is None or manifest.get("stage") != "embed":
        raise DeepFaceError(f"{out} has no {MANIFEST_FILE} of `deepface embed`: rerun it to finish the output.")
    names, rows = [], []
    for shard in manifest["shards"]:
        with np.load(out / shard["file"]) as arrays:
            names += arrays["names"].tolist()
            rows.append(arrays["embeddings"])
    return names, np.concatenate(rows) if rows else np.zeros((0, manifest["embedding_size"]), np.float32)


def _resume(out: Path, state: dict) -> dict | int:
    """The manifest of a finished run of ``state``, or the number of complete shards to keep (0: a fresh start).

    Raises:
        DeepFaceError: ``out`` holds a run (finished or not) of another ``state``.
    """
    old_state = files.read_json(out / STATE_FILE) if (out / STATE_FILE).exists() else None
    manifest = read_manifest(out)
    if old_state is not None and old_state != state:
        raise other_settings(out, "embedding run", old_state, state, finished=manifest is not None)
    if manifest is not None and old_state is None:
        raise DeepFaceError(f"{out} already holds another stage's output ({MANIFEST_FILE}): choose another "
                            "output directory.")
    if manifest is not None:
        return manifest
    files.remove_temporaries(out)
    if old_state is None:
        stale = sorted(out.glob("embeddings-*.npz"))
        if stale:
            raise DeepFaceError(f"{out} holds shards ({stale[0].name}, ...) of an unknown run: choose another "
                                "output directory, or delete them.")
        files.write_json(out / STATE_FILE, state)
        return 0
    complete = 0
    while (out / SHARD_PATTERN.format(complete)).exists():
        complete += 1
    if complete:
        logger.info("resuming: %d complete shards in %s", complete, out)
    return complete


def _embed_shards(model, cropper, source: Path, out: Path, settings: EmbedSettings, *, first_shard: int) -> list[dict]:
    """Stream ``source``, write each missing shard; returns every shard's ``{file, images, embedded, sha256}``."""
    from deepface.faces import BadImage
    from deepface.serving.model import embed_crops

    size = settings.shard_size
    shards = [_shard_entry(out, index) for index in range(first_shard)]
    names, crops, rows, skipped = [], [], [], []
    index, images, embedded_count = first_shard, 0, 0
    started = time.perf_counter()

    def flush_batch():
        if crops:
            rows.append(embed_crops(model, np.stack(crops), settings.flip).astype(np.float32))
            crops.clear()

    with tqdm(unit="img", desc="embedding", disable=None) as progress:
        for member in iter_members(source):
            if member.problem or not is_image_name(member.name):
                continue
            position = images
            images += 1
            if position < first_shard * size:
                continue  # in a complete shard: streamed past, not read
            try:
                crops.append(cropper(member.name, member.read())[0])
                names.append(member.name)
            except BadImage as error:
                skipped.append((member.name, str(error)))
            if len(crops) == settings.batch_size:
                flush_batch()
            progress.update(1)
            if images % size == 0:
                flush_batch()
                shards.append(_write_shard(out, index, names, rows, skipped, model))
                embedded_count += len(names)
                names, rows, skipped, index = [], [], [], index + 1
        if images == 0:
            raise DeepFaceError(f"{source} holds no image files (.jpg, .png, ...): pass a folder or archive of "
                                "face images.")
        if images > first_shard * size and images % size:  # the last, partial shard
            flush_batch()
            shards.append(_write_shard(out, index, names, rows, skipped, model))
            embedded_count += len(names)
    elapsed = time.perf_counter() - started
    logger.info("embedded %d images in %.1f s (%.1f img/s)", embedded_count, elapsed,
                embedded_count / max(elapsed, 1e-9))
    return shards


def _write_shard(out: Path, index: int, names: list[str], rows: list[np.ndarray], skipped: list, model) -> dict:
    """Write shard ``index`` atomically, with fixed zip timestamps (deterministic bytes)."""
    embeddings = np.concatenate(rows) if rows else np.zeros((0, int(model.output_shape[-1])), np.float32)
    arrays = {"names": np.array(names, dtype=str), "embeddings": embeddings,
              "skipped": np.array(skipped, dtype=str).reshape(-1, 2)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE), member.getvalue())
    files.write_bytes(out / SHARD_PATTERN.format(index), buffer.getvalue())
    return _shard_entry(out, index)


def _shard_entry(out: Path, index: int) -> dict:
    """A complete shard's line of the manifest."""
    path = out / SHARD_PATTERN.format(index)
    with np.load(path) as arrays:
        embedded, skipped = len(arrays["names"]), arrays["skipped"].tolist()
    return {"file": path.name, "images": embedded + len(skipped), "embedded": embedded, "skipped": skipped,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _manifest(out: Path, state: dict, shards: list[dict], *, align: bool, size: int, embedding_size: int) -> dict:
    skipped = {name: reason for shard in shards for name, reason in shard["skipped"]}
    return {
        "stage": "embed",
        "schema_version": SCHEMA_VERSION,
        "shards": [{key: shard[key] for key in ("file", "images", "embedded", "sha256")} for shard in shards],
        "images": sum(shard["images"] for shard in shards),
        "embedded": sum(shard["embedded"] for shard in shards),
        "skipped": skipped,
        "embedding_size": embedding_size,
        "image_size": size,
        "align": align,
        "settings": state,
    }
