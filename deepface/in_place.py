"""A gs:// data folder verified where it is: the fetch stage without the copy.

A release already in a bucket (VGGFace2's train archive is 36 GB) need not be copied into the pipeline's
storage on every run. GCS computes each object's MD5 on upload and keeps it, so the folder is verified from
its listing alone, against the same expectations `deepface.fetch` applies to a copy: the folder's
``MD5SUMS`` file, else the published VGGFace2 checksums, else the stored MD5 itself. An object without a
stored MD5 (a composite upload keeps only a CRC32C) is streamed through the client, which checks the
CRC32C, and hashed on the way: it is never written to disk. Only ``out_dir/manifest.json`` is written.

The data is then read where it is, through the Cloud Storage FUSE mount (`GCS_MOUNT`: gs://BUCKET/PATH is
/gcs/BUCKET/PATH, which Vertex AI gives every pipeline task). `mounted_path` says whether this machine
shows a folder there; `deepface.fetch.fetch` verifies in place only then, and copies otherwise (a laptop,
kfp.local, a Kubeflow cluster).

Each object is read at the generation that was listed, and the manifest records it: an object replaced
later is a different generation, and the pipeline's fingerprint step (`deepface.fingerprint`) sees it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from deepface.contracts import MANIFEST_FILE, write_manifest
from deepface.errors import DeepFaceError
from deepface.fetch import CHUNK_SIZE, checked_out_dir, expected_md5, prepare_out_dir
from deepface.transfer import GcsBackend, HashSink, Interrupted, SourceFile
from deepface.uris import MD5SUMS_NAME, checked_relative_name, parse_md5sums, redact_uri, scheme_of, sibling_uri

logger = logging.getLogger(__name__)

GCS_MOUNT = "/gcs"  # where Vertex AI's Cloud Storage FUSE shows gs://BUCKET/PATH as /gcs/BUCKET/PATH


def mounted_path(location: str, mount: str | os.PathLike | None = None) -> Path | None:
    """The local folder that shows gs:// folder ``location`` through the Cloud Storage FUSE mount, or None
    when this machine does not show it (no mount, or not this folder).

    Args:
        location: ``gs://BUCKET/PATH/`` (a trailing ``/`` is implied); any other URI gives None.
        mount: the mount's root; None: `GCS_MOUNT`.

    Example: ``mounted_path("gs://faces/vggface2/")`` is ``Path("/gcs/faces/vggface2")`` on Vertex AI.
    """
    if scheme_of(location) != "gs":
        return None
    bucket, _, prefix = location[len("gs://"):].partition("/")
    path = Path(mount if mount is not None else GCS_MOUNT, bucket, *[part for part in prefix.split("/") if part])
    return path if path.is_dir() else None


def verify_in_place(
    source: str,
    out_dir: str | os.PathLike,
    *,
    retries: int = 2,
    chunk_size: int = CHUNK_SIZE,
    mount: str | os.PathLike | None = None,
) -> dict:
    """Verify every object of gs:// folder ``source`` where it is, and write only ``out_dir/manifest.json``.

    Args:
        source: ``gs://BUCKET/PATH/`` (a trailing ``/`` is implied); its ``manifest.json``, if any, is not data.
        out_dir: local directory receiving the manifest (nothing else).
        retries: restarts of an interrupted stream (objects without a stored MD5 only).
        chunk_size: bytes per read of such a stream.
        mount: root of the Cloud Storage FUSE mount that must show the folder; None: `GCS_MOUNT`.

    Returns:
        The manifest: ``{"stage": "fetch", "location": "gs://BUCKET/PATH/", "files": {name: {"source",
        "bytes", "md5", "generation", "verified"}}}``, ``verified`` as in `deepface.fetch` (``MD5SUMS``,
        ``known-vggface2``, ``gcs-object-md5``, ``unverified``).

    Raises:
        DeepFaceError: not a gs:// URI; the folder is empty, cannot be listed, or is not shown by the mount
            (naming copy_gs); an object whose MD5 differs from the expected one (one line naming it).

    Example::

        verify_in_place("gs://faces/vggface2/", "/gcs/runs/fetch/data")["location"]  # 'gs://faces/vggface2/'
    """
    location = source if source.endswith("/") else source + "/"
    if scheme_of(location) != "gs":
        raise DeepFaceError(f"sources: {redact_uri(source)} is not a gs:// folder; only gs:// data is verified in "
                            "place (copy it with deepface.fetch.fetch)")
    backend = GcsBackend()
    files, md5sums = _listing(backend, location)
    _check_mounted(location, files[0], mount)
    out = checked_out_dir(out_dir)
    prepare_out_dir(out)
    entries = {file.name: _verified(backend, file, md5sums, retries, chunk_size) for file in files}
    manifest = {"stage": "fetch", "location": location, "files": entries}
    write_manifest(out, manifest)  # last: the output is complete
    logger.info("%d file(s), %d bytes, verified in place at %s; manifest in %s",
                len(entries), sum(entry["bytes"] for entry in entries.values()), location, out)
    return manifest


def _listing(backend: GcsBackend, location: str) -> tuple[list[SourceFile], dict[str, str]]:
    """The folder's objects (relative names, sorted, without a manifest.json) and its MD5SUMS entries."""
    try:
        listed = backend.list(location)
        md5sums_uri = sibling_uri(location, MD5SUMS_NAME)
        md5sums_data = backend.read_optional(md5sums_uri)
    except Interrupted as error:
        raise DeepFaceError(f"could not list {location}: {error}; check the URI and run again") from error
    md5sums = parse_md5sums(md5sums_data, md5sums_uri) if md5sums_data is not None else {}
    files = [replace(file, name=checked_relative_name(file.name, location)) for file in listed]
    files = sorted((file for file in files if file.name != MANIFEST_FILE), key=lambda file: file.name)
    if not files:
        raise DeepFaceError(f"no files under {location}: check the prefix (sources)")
    return files, md5sums


def _check_mounted(location: str, first: SourceFile, mount: str | os.PathLike | None) -> None:
    """Refuse a folder that the readers downstream will not find under the mount."""
    folder = mounted_path(location, mount)
    if folder is None or not (folder / first.name).is_file():
        shown = Path(mount if mount is not None else GCS_MOUNT) / location[len("gs://"):] / first.name
        raise DeepFaceError(
            f"{location} cannot be read in place: {shown} is not visible through the Cloud Storage FUSE mount "
            "here; set copy_gs to copy the folder instead"
        )


def _verified(backend: GcsBackend, file: SourceFile, md5sums: dict[str, str], retries: int, chunk_size: int) -> dict:
    """The manifest entry of ``file``, its MD5 from GCS's metadata (or a stream) checked against the expected."""
    expected, verified = expected_md5(file, None, md5sums)
    actual = file.stored_md5 or _streamed_md5(backend, file, retries, chunk_size)
    if expected is not None and actual != expected:
        how = "stored by GCS" if file.stored_md5 else "of its bytes"
        raise DeepFaceError(
            f"MD5 mismatch for {file.uri} (generation {file.generation}): expected {expected} ({verified}), the "
            f"object's MD5 {how} is {actual}; upload the right file, or correct the checksum if the file is right"
        )
    return {"source": file.uri, "bytes": file.size, "md5": actual, "generation": file.generation,
            "verified": verified}


def _streamed_md5(backend: GcsBackend, file: SourceFile, retries: int, chunk_size: int) -> str:
    """The MD5 of an object GCS keeps none for, from its bytes read as a stream (never stored)."""
    logger.info("%s has no stored MD5 (a composite object): hashing its %s bytes as a stream", file.uri, file.size)
    with tqdm(total=file.size, unit="B", unit_scale=True, unit_divisor=1024, desc=file.name, disable=None,
              leave=False) as progress:
        sink = HashSink(progress)
        for attempt in range(retries + 1):
            try:
                backend.download(file, sink, chunk_size)
                break
            except Interrupted as error:
                if attempt == retries:
                    raise DeepFaceError(f"reading {file.uri} to hash it stopped ({error}); run again") from error
                logger.warning("%s: %s; reading it again (retry %d of %d)", file.uri, error, attempt + 1, retries)
                sink.restart()
    if file.size is not None and sink.received != file.size:
        raise DeepFaceError(f"{file.uri}: read {sink.received} bytes, GCS lists {file.size}; run again")
    return sink.md5
