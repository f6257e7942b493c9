"""The fetch stage: copy source files into a local directory, verifying their MD5 checksums.

A source is a local path, a ``file://``, ``gs://``, ``https://`` or ``http://`` URI. A source ending in
``/`` (or a local directory) is a prefix: every file under it is fetched, keeping its relative name. An
``http(s)://`` prefix is listed through the ``MD5SUMS`` file it holds (HTTP has no directory listing).

Each file is streamed in chunks to ``<name>.part`` and renamed when complete and verified, so a file under
its final name is always whole. An interrupted download resumes from its ``.part`` file: with an HTTP
``Range`` request (starting again from zero when the server ignores it) or a ranged GCS read.

The expected MD5 of a file comes from, in order: the ``md5`` argument (one single-file source only), an
``MD5SUMS`` file (``md5sum`` format) beside the source, the published VGGFace2 checksums by file name,
the MD5 that GCS stores with a gs:// object. Otherwise the computed MD5 is recorded as ``unverified``.
A mismatch deletes the file and raises.

An optional HTTP header carrying credentials is read from the environment variable whose *name* is given
(``auth_header_env``) or from a Google Secret Manager secret version (``auth_secret``, `deepface.secrets`);
its value is never logged nor written anywhere, and is not sent to another host after a redirect. Recorded
URIs lose their user info and token-like query parameters.

One gs:// folder that the Cloud Storage FUSE mount shows (/gcs/BUCKET/..., as on Vertex AI) is not
copied unless ``copy_gs`` asks for it: `deepface.in_place` verifies it from the MD5s GCS stores and writes
only the manifest, whose ``location`` says where the data stays.

``manifest.json`` (written last) maps each fetched file's relative name to its sanitised source, size,
MD5 and how the MD5 was verified.

The sources are read by the backends of `deepface.transfer`; their URIs and listed names are checked and
redacted by `deepface.uris`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from deepface.contracts import MANIFEST_FILE, remove_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import local_path, md5_file
from deepface.outputs import locks_output
from deepface.settings import FetchSettings, SettingError
from deepface.transfer import GcsBackend, HttpBackend, Interrupted, LocalBackend, PartFile, SourceFile, disk_error
from deepface.uris import (
    MD5SUMS_NAME,
    PART_SUFFIX,
    checked_relative_name,
    is_prefix,
    parse_md5sums,
    redact_uri,
    scheme_of,
    sibling_uri,
)

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20

# Published checksums of the VGGFace2 release archives, by file name.
KNOWN_MD5 = {
    "vggface2_train.tar.gz": "88813c6b15de58afc8fa75ea83361d7f",
    "vggface2_test.tar.gz": "bb7a323824d1004e14e00c23974facd3",
}

# How a file's MD5 was checked (the manifest's "verified" field).
VERIFIED_BY_OPTION = "md5-option"
VERIFIED_BY_MD5SUMS = "MD5SUMS"
VERIFIED_BY_KNOWN = "known-vggface2"
VERIFIED_BY_GCS = "gcs-object-md5"
UNVERIFIED = "unverified"

_HEADER_LINE = re.compile(r"(?P<name>[A-Za-z0-9-]+):\s*(?P<value>.*)", re.DOTALL)


# ----------------------------------------------------------------------------------------------------
# Checksums


def _checked_md5_option(md5: str | None, sources: list[str]) -> str | None:
    if md5 is None:
        return None
    if len(sources) != 1 or is_prefix(sources[0]):
        raise SettingError("md5", md5, "applies to a single file: give exactly one source that is not a prefix")
    return md5.lower()


def expected_md5(file: SourceFile, md5_option: str | None, md5sums: dict[str, str]) -> tuple[str | None, str]:
    """The MD5 ``file`` must have, and how that was learnt (VERIFIED_BY_* or UNVERIFIED)."""
    basename = posixpath.basename(file.name)
    if md5_option:
        return md5_option, VERIFIED_BY_OPTION
    if file.name in md5sums:
        return md5sums[file.name], VERIFIED_BY_MD5SUMS
    if basename in KNOWN_MD5:
        return KNOWN_MD5[basename], VERIFIED_BY_KNOWN
    if file.stored_md5:
        return file.stored_md5, VERIFIED_BY_GCS
    return None, UNVERIFIED


# ----------------------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class _Planned:
    """A file to fetch with the backend that reads it and its expected MD5."""

    backend: object
    file: SourceFile
    expected_md5: str | None
    verified: str


def read_auth_header(auth_header_env: str | None) -> tuple[str, str] | None:
    """``(name, value)`` of the HTTP header held by environment variable ``auth_header_env``.

    The variable holds ``"Header-Name: value"`` or a bare value, meaning ``"Authorization: value"``.
    """
    if not auth_header_env:
        return None
    value = os.environ.get(auth_header_env)
    if not value or not value.strip():
        raise DeepFaceError(
            f"environment variable {auth_header_env} (named by auth_header_env) is not set or empty: export "
            f"it with the header, e.g. {auth_header_env}='Authorization: Bearer ...'"
        )
    return _header(value)


def _header(value: str) -> tuple[str, str]:
    """``"Header-Name: value"`` or a bare value (``Authorization``) as ``(name, value)``."""
    match = _HEADER_LINE.fullmatch(value.strip())
    if match and match["value"].strip():
        return match["name"], match["value"].strip()
    return "Authorization", value.strip()


def auth_header(auth_header_env: str | None, auth_secret: str | None) -> tuple[str, str] | None:
    """The HTTP header for http(s) sources: from environment variable ``auth_header_env``, or from the
    Secret Manager secret version ``auth_secret`` (`deepface.secrets.read_secret`), or None."""
    if auth_header_env and auth_secret:
        raise SettingError("auth_secret", auth_secret, "give either auth_header_env or auth_secret, not both")
    if auth_secret:
        from deepface.secrets import read_secret

        return _header(read_secret(auth_secret))
    return read_auth_header(auth_header_env)


def _plan(
    sources: list[str], md5_option: str | None, backends: dict[str, object]
) -> list[_Planned]:
    """Every file of every source, with its expected MD5; refuses empty prefixes and clashing names."""
    planned: dict[str, _Planned] = {}
    for source in sources:
        backend = backends[scheme_of(source)]
        if is_prefix(source):
            files = backend.list(source)
            if not files:
                raise DeepFaceError(f"no files under {redact_uri(source)}: check the prefix (sources)")
        else:
            files = [backend.describe(source)]
        md5sums_uri = sibling_uri(source, MD5SUMS_NAME)
        md5sums_data = backend.read_optional(md5sums_uri) if md5_option is None else None
        md5sums = parse_md5sums(md5sums_data, md5sums_uri) if md5sums_data is not None else {}
        for file in files:
            name = checked_relative_name(file.name, source)
            if name == MANIFEST_FILE:
                logger.info("skipping %s: the fetch stage writes its own %s", redact_uri(file.uri), MANIFEST_FILE)
                continue
            if name in planned:
                raise DeepFaceError(
                    f"two sources give the same file name {name!r} ({redact_uri(planned[name].file.uri)} and "
                    f"{redact_uri(file.uri)}): fetch them into different output directories"
                )
            file = replace(file, name=name)
            planned[name] = _Planned(backend, file, *expected_md5(file, md5_option, md5sums))
    return list(planned.values())


def _already_present(target: Path, item: _Planned) -> str | None:
    """The MD5 of ``target`` when it is already a complete, matching copy of the source, else None."""
    if not target.is_file():
        return None
    if item.expected_md5 is None and (item.file.size is None or target.stat().st_size != item.file.size):
        return None  # nothing to compare with: fetch again
    actual = md5_file(target)
    if item.expected_md5 is not None and actual != item.expected_md5:
        logger.info("%s is present but its MD5 differs from the expected one; fetching it again", target)
        return None
    return actual


def _download_with_resume(item: _Planned, part_path: Path, retries: int, chunk_size: int) -> None:
    """Stream the source into ``part_path``, resuming from what it holds, retrying ``retries`` times."""
    source = item.file
    for attempt in range(retries + 1):
        offset = part_path.stat().st_size if part_path.exists() else 0
        if source.size is not None and offset > source.size:
            offset = 0
            part_path.unlink()
        if offset:
            logger.info("%s: resuming from byte %d", source.name, offset)
        with tqdm(
            total=source.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=source.name, disable=None, leave=False,
        ) as progress:
            part = PartFile(part_path, progress)
            try:
                item.backend.download(source, part, chunk_size)
                return
            except Interrupted as error:
                if attempt == retries:
                    raise DeepFaceError(
                        f"download of {source.name} from {redact_uri(source.uri)} stopped after {part.offset} "
                        f"bytes ({error}); the partial file {part_path} is kept: run the same command again to "
                        "resume"
                    ) from error
                logger.warning("%s: %s; resuming (retry %d of %d)", source.name, error, attempt + 1, retries)
            finally:
                part.close()


def _fetch_one(item: _Planned, out_dir: Path, retries: int, chunk_size: int) -> dict:
    """Fetch one planned file into ``out_dir`` and return its manifest entry."""
    source = item.file
    target = out_dir / source.name
    entry = {"source": redact_uri(source.uri), "verified": item.verified}
    present_md5 = _already_present(target, item)
    if present_md5 is not None:
        logger.info("%s already present (%d bytes, MD5 %s)", source.name, target.stat().st_size, present_md5)
        return {**entry, "bytes": target.stat().st_size, "md5": present_md5}

    part_path = target.with_name(target.name + PART_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise disk_error(target.parent, error) from error
    started = time.monotonic()
    resumed_from = part_path.stat().st_size if part_path.exists() else 0
    _download_with_resume(item, part_path, retries, chunk_size)

    size = part_path.stat().st_size
    if source.size is not None and size != source.size:
        raise DeepFaceError(
            f"{source.name}: got {size} bytes, the source has {source.size}; run the same command again to resume"
        )
    actual = md5_file(part_path)
    if item.expected_md5 is not None and actual != item.expected_md5:
        part_path.unlink()
        raise DeepFaceError(
            f"MD5 mismatch for {source.name} from {redact_uri(source.uri)}: expected {item.expected_md5} "
            f"({item.verified}), got {actual}. The bad file was deleted. Fetch it again; if the source is a "
            "different file on purpose, give its checksum as md5 or in an MD5SUMS file beside it"
        )
    try:
        os.replace(part_path, target)
    except OSError as error:
        raise disk_error(target, error) from error
    elapsed = max(time.monotonic() - started, 1e-9)
    logger.info(
        "%s: %d bytes (%d new) in %.2f s, %.1f MB/s, MD5 %s (%s)",
        source.name, size, size - resumed_from, elapsed, (size - resumed_from) / elapsed / 1e6, actual, item.verified,
    )
    return {**entry, "bytes": size, "md5": actual}


def checked_out_dir(out_dir: str | os.PathLike) -> Path:
    if "://" in str(out_dir) and not str(out_dir).startswith("file://"):
        raise DeepFaceError(
            f"out_dir {out_dir} must be a local directory (on Vertex AI, write to /gcs/BUCKET/... instead of gs://)"
        )
    return local_path(out_dir)


def prepare_out_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        remove_manifest(path)  # the output is incomplete until the new one is written
        # The manifest is this stage's only atomic write: remove what a kill inside it left. (Not
        # io.remove_temporaries: a fetched file may itself be named like a temporary, .<name>.tmp.)
        for stale in path.glob(f".{MANIFEST_FILE}.*.tmp"):
            stale.unlink()
    except OSError as error:
        raise disk_error(path, error) from error


def _readable_in_place(sources: list[str], gcs_mount: str | os.PathLike | None) -> bool:
    """Whether ``sources`` is one gs:// folder that the Cloud Storage FUSE mount shows (logged if not)."""
    if len(sources) != 1 or scheme_of(sources[0]) != "gs" or not is_prefix(sources[0]):
        return False
    from deepface.in_place import mounted_path

    if mounted_path(sources[0], gcs_mount) is None:
        logger.info("%s is not visible under a Cloud Storage FUSE mount here: copying it", redact_uri(sources[0]))
        return False
    return True


@locks_output("out_dir", "fetch", FetchSettings)  # one writer per output directory (deepface.outputs)
def fetch(
    sources: str | Iterable[str],
    out_dir: str | os.PathLike,
    *,
    timeout: float = 60.0,
    chunk_size: int = CHUNK_SIZE,
    gcs_mount: str | os.PathLike | None = None,
    **settings,
) -> dict:
    """Copy ``sources`` into ``out_dir``, verify their MD5s, and write ``out_dir/manifest.json``; or, for
    one gs:// folder that the Cloud Storage FUSE mount shows, verify it where it is and write only the
    manifest (`deepface.in_place.verify_in_place`), unless ``copy_gs`` asks for a copy.

    Args:
        sources: local paths or file://, gs://, https://, http:// URIs; one ending in '/' (or a local
            directory) is a prefix whose files are all fetched, keeping their relative names.
        out_dir: local output directory.
        timeout: seconds to wait for an HTTP server to connect or send data.
        chunk_size: bytes read and written at a time.
        gcs_mount: root of the Cloud Storage FUSE mount (None: `deepface.in_place.GCS_MOUNT`, ``/gcs``).
        **settings: fields of `deepface.settings.FetchSettings`: md5 (of a single file source),
            auth_header_env (the NAME of an environment variable holding an HTTP header, never the header),
            auth_secret (the resource name of a Secret Manager secret version holding it instead),
            retries (resumes of an interrupted transfer; a rerun resumes too), copy_gs (copy a gs:// folder
            even where the mount shows it).

    Returns:
        The manifest: ``{"files": {name: {"source", "bytes", "md5", "verified"}}, ...}``; verified in
        place, it adds ``"location"`` (the gs:// folder, where the data stays) and each file's generation.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: no source, a source that cannot be read, an MD5 that does not match.

    Example::

        fetch(["gs://faces/vggface2/"], "data")  # on Vertex AI: verified in place, data/manifest.json only
        fetch(["gs://faces/vggface2/"], "data", copy_gs=True)  # copied into data/ and verified
    """
    options = FetchSettings.of(settings)
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    sources = [os.fspath(source) for source in sources]
    if not sources:
        raise DeepFaceError("sources: none given; give at least one path or URI")
    md5_option = _checked_md5_option(options.md5, sources)
    out_path = checked_out_dir(out_dir)
    if not options.copy_gs and _readable_in_place(sources, gcs_mount):
        from deepface.in_place import verify_in_place

        return verify_in_place(sources[0], out_path, retries=options.retries, chunk_size=chunk_size, mount=gcs_mount)
    needs_http = any(scheme_of(source) in ("http", "https") for source in sources)  # reads the secret
    header = auth_header(options.auth_header_env, options.auth_secret if needs_http else None)
    http = HttpBackend(header, options.auth_header_env, timeout)
    backends = {"local": LocalBackend(), "gs": GcsBackend(), "http": http, "https": http}

    try:
        planned = _plan(sources, md5_option, backends)
    except Interrupted as error:
        raise DeepFaceError(f"could not list or describe the sources: {error}; check them and run again") from error
    prepare_out_dir(out_path)
    logger.info("fetching %d file(s) from %d source(s) into %s", len(planned), len(sources), out_path)
    started = time.monotonic()
    files = {item.file.name: _fetch_one(item, out_path, options.retries, chunk_size) for item in planned}
    total = sum(entry["bytes"] for entry in files.values())
    logger.info(
        "%d file(s), %d bytes, ready in %s after %.2f s", len(files), total, out_path, time.monotonic() - started
    )

    manifest = {"stage": "fetch", "files": dict(sorted(files.items()))}
    write_manifest(out_path, manifest)  # last: the output is complete
    return manifest
