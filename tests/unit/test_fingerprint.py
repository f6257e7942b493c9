"""`deepface.fingerprint.fingerprint_source`: the same files give the same fingerprint, any change to a
name, a size or the bytes gives another; local folders, gs:// (the GCS emulator) and https:// (a file
server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from deepface.errors import DeepFaceError
from deepface.fingerprint import SYNTHETIC, fingerprint_source

FILES = {"pairs.txt": b"10\t300\nA\t1\t2\n", "lfw.tgz": b"\x1f\x8b" + bytes(range(200)), "sub/x.jpg": b"jpeg" * 50}


def md5sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.md5(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())).encode()


def make_folder(path, files: dict[str, bytes]):
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


# ---------------------------------------------------------------------------------------------------- local


def test_local_fingerprint_is_stable_and_independent_of_place_and_times(tmp_path):
    folder = make_folder(tmp_path / "data", FILES)
    first = fingerprint_source(str(folder))
    assert first.startswith("local 3 files sha256:") and len(first.rsplit(":", 1)[1]) == 64
    assert fingerprint_source(str(folder) + "/") == first
    assert fingerprint_source(f"file://{folder}/") == first
    os.utime(folder / "pairs.txt", (1, 1))  # timestamps are not data
    copy = shutil.copytree(folder, tmp_path / "copy")  # nor is the folder's own name
    assert fingerprint_source(str(copy)) == fingerprint_source(str(folder)) == first
    (folder / "manifest.json").write_text("{}")  # fetch writes its own manifest: one in a source is no data
    assert fingerprint_source(str(folder)) == first


@pytest.mark.parametrize("change", ["one byte", "rename", "add", "remove", "grow"])
def test_local_fingerprint_changes_with_the_data(tmp_path, change):
    folder = make_folder(tmp_path / "data", FILES)
    before = fingerprint_source(str(folder))
    target = folder / "sub" / "x.jpg"
    if change == "one byte":  # same size, other bytes
        target.write_bytes(flip_last_byte(target.read_bytes()))
    elif change == "rename":
        target.rename(folder / "sub" / "y.jpg")
    elif change == "add":
        (folder / "sub" / "new.jpg").write_bytes(b"")
    elif change == "remove":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes() + b"\0")
    assert fingerprint_source(str(folder)) != before


def test_local_files_listed_in_md5sums_count_by_their_listed_md5(tmp_path):
    """fetch verifies a listed file against MD5SUMS: the fingerprint follows the listing (not re-reading the
    file), and an updated listing changes it."""
    folder = make_folder(tmp_path / "data", FILES)
    (folder / "MD5SUMS").write_bytes(md5sums(FILES))
    listed = fingerprint_source(str(folder))
    assert listed.startswith("local 4 files ")
    pairs = flip_last_byte(FILES["pairs.txt"])
    (folder / "pairs.txt").write_bytes(pairs)  # same size, MD5SUMS not updated: fetch would refuse it
    assert fingerprint_source(str(folder)) == listed
    (folder / "MD5SUMS").write_bytes(md5sums({**FILES, "pairs.txt": pairs}))
    updated = fingerprint_source(str(folder))
    assert updated != listed
    # the listed MD5 is the one the file's bytes would give: listing it or not changes nothing else
    (folder / "MD5SUMS").write_bytes(md5sums({"lfw.tgz": FILES["lfw.tgz"]}))
    unlisted = fingerprint_source(str(folder))
    (folder / "MD5SUMS").write_bytes(md5sums({**FILES, "pairs.txt": pairs}))
    assert fingerprint_source(str(folder)) == updated != unlisted


def test_no_data_uri_is_the_synthetic_data(tmp_path):
    assert fingerprint_source("") == SYNTHETIC


def test_local_errors_name_the_folder(tmp_path):
    with pytest.raises(DeepFaceError, match=f"source directory {tmp_path}/missing/ does not exist"):
        fingerprint_source(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepFaceError, match=f"no files under {tmp_path}/empty/: check data_uri"):
        fingerprint_source(str(tmp_path / "empty"))
    folder = make_folder(tmp_path / "bad", FILES)
    (folder / "MD5SUMS").write_text("not a checksum line\n")
    with pytest.raises(DeepFaceError, match="MD5SUMS line 1 is not in md5sum format"):
        fingerprint_source(str(folder))


# ---------------------------------------------------------------------------------------------------- gs://


def test_gcs_fingerprint_follows_objects_and_generations(gcs_emulator):
    gcs_emulator.upload("bucket", {f"data/{name}": data for name, data in FILES.items()})
    gcs_emulator.upload("bucket", {"data/folder/": b"", "data-other/z.bin": b"z", "data/manifest.json": b"{}"})
    first = fingerprint_source("gs://bucket/data/")
    assert first.startswith("gs 3 files sha256:")  # not the placeholder, the other prefix or the manifest
    assert fingerprint_source("gs://bucket/data") == fingerprint_source("gs://bucket/data/") == first

    gcs_emulator.upload("bucket", {"data/sub/x.jpg": flip_last_byte(FILES["sub/x.jpg"])})
    changed = fingerprint_source("gs://bucket/data/")
    assert changed != first
    gcs_emulator.upload("bucket", {"data/sub/x.jpg": flip_last_byte(FILES["sub/x.jpg"])})
    assert fingerprint_source("gs://bucket/data/") != changed  # rewritten: a new generation
    gcs_emulator.upload("bucket", {"data/extra.jpg": b"more"})
    assert fingerprint_source("gs://bucket/data/").startswith("gs 4 files ")


def test_gcs_errors_name_the_uri(gcs_emulator):
    gcs_emulator.upload("bucket", {"data/a.bin": b"a"})
    with pytest.raises(DeepFaceError, match=r"gs://missing-bucket/data/ not found"):
        fingerprint_source("gs://missing-bucket/data/")
    with pytest.raises(DeepFaceError, match=r"no files under gs://bucket/nothing/: check data_uri"):
        fingerprint_source("gs://bucket/nothing/")


# ---------------------------------------------------------------------------------------------------- https


def test_https_fingerprint_is_the_md5sums_file(http_server, monkeypatch):
    http_server.files = {f"data/{name}": data for name, data in FILES.items()}
    http_server.files["data/MD5SUMS"] = md5sums(FILES)
    http_server.required_header = ("X-Data-Token", "fingerprint-secret-5e1a")
    monkeypatch.setenv("DATA_TOKEN_HEADER", "X-Data-Token: fingerprint-secret-5e1a")
    first = fingerprint_source(http_server.url("data/"), auth_header_env="DATA_TOKEN_HEADER")
    assert first == f"http 4 files sha256:{hashlib.sha256(md5sums(FILES)).hexdigest()}"
    assert fingerprint_source(http_server.url("data"), auth_header_env="DATA_TOKEN_HEADER") == first
    assert len(http_server.gets("data/MD5SUMS")) == 2
    assert not any(http_server.gets(f"data/{name}") for name in FILES)  # no data file is downloaded

    http_server.files["data/MD5SUMS"] = md5sums({**FILES, "pairs.txt": b"other pairs"})
    assert fingerprint_source(http_server.url("data/"), auth_header_env="DATA_TOKEN_HEADER") != first
    with pytest.raises(DeepFaceError, match="no MD5SUMS at .*/data/MD5SUMS .*auth_header_env"):
        fingerprint_source(http_server.url("data/"))  # refused without the header
    http_server.statuses["data/MD5SUMS"] = 500
    with pytest.raises(DeepFaceError, match=r"could not list http://.*/data/ to fingerprint it: HTTP 500"):
        fingerprint_source(http_server.url("data/"), auth_header_env="DATA_TOKEN_HEADER")
    del http_server.statuses["data/MD5SUMS"], http_server.files["data/MD5SUMS"]
    with pytest.raises(DeepFaceError, match="no MD5SUMS at .*/data/MD5SUMS"):
        fingerprint_source(http_server.url("data/"), auth_header_env="DATA_TOKEN_HEADER")
