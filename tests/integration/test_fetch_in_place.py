"""A gs:// data folder verified where it is (`deepface.in_place`), against the GCS emulator on loopback.

The Cloud Storage FUSE mount that Vertex AI gives every task (/gcs/BUCKET/...) is stood in for by a local
folder holding what the mount would show (``mount/BUCKET/PATH/...``), given to the library as ``gcs_mount``
and to the component as `deepface.in_place.GCS_MOUNT`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest
from helpers.servers import gcs_emulator, http_server  # noqa: F401 (fixtures)
from kfp.dsl import Dataset
from kfp.dsl.executor import Executor

import components.fetch
from deepface import in_place
from deepface.errors import DeepFaceError
from deepface.fetch import fetch
from deepface.labels import build_labels, load_classes
from deepface.landmarks import landmarks_in


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def md5sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{md5(data)}  {name}\n" for name, data in sorted(files.items())).encode()


def payload(size: int, seed: int) -> bytes:
    """Deterministic incompressible bytes, distinct per seed."""
    blocks = (hashlib.sha256(f"{seed}:{counter}".encode()).digest() for counter in range(size // 32 + 1))
    return b"".join(blocks)[:size]


DATA, SMALL, BIG = payload(300_000, seed=1), payload(5_000, seed=2), payload(150_000, seed=7)
FOLDER = {"a.bin": DATA, "sub/b.bin": SMALL, "big.bin": BIG}


def downloads(caplog) -> list[str]:
    """The object names the emulator served bytes of (media downloads), in order."""
    names = []
    for record in caplog.records:
        message = record.getMessage()
        if record.name.startswith("gcp_storage_emulator") and "/download/storage/v1/b/" in message:
            names.append(unquote(message.split("/o/", 1)[1].split("?", 1)[0].split(" ", 1)[0]))
    return names


def show_in_mount(mount: Path, bucket: str, files: dict[str, bytes]) -> Path:
    """Write ``files`` where the Cloud Storage FUSE mount ``mount`` would show them; the bucket's folder."""
    for name, data in files.items():
        (mount / bucket / name).parent.mkdir(parents=True, exist_ok=True)
        (mount / bucket / name).write_bytes(data)
    return mount / bucket


@pytest.fixture
def folder(gcs_emulator, tmp_path):  # noqa: F811 (fixture)
    """gs://bucket/data/ (FOLDER plus its MD5SUMS) in the emulator and in a stand-in mount; the mount's root."""
    files = {**FOLDER, "MD5SUMS": md5sums(FOLDER)}
    gcs_emulator.upload("bucket", {f"data/{name}": data for name, data in files.items()})
    show_in_mount(tmp_path / "mount", "bucket", {f"data/{name}": data for name, data in files.items()})
    return tmp_path / "mount"


# -------------------------------------------------------------------------------------------- the library


def test_in_place_reads_no_data_and_writes_only_the_manifest(folder, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        manifest = fetch(["gs://bucket/data/"], out, gcs_mount=folder)

    assert sorted(path.name for path in out.rglob("*")) == ["manifest.json"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["location"] == "gs://bucket/data/"
    assert downloads(caplog) == ["data/MD5SUMS"]  # the checksum list only: no data bytes were read
    assert list(manifest["files"]) == ["MD5SUMS", "a.bin", "big.bin", "sub/b.bin"]
    entry = manifest["files"]["big.bin"]
    assert {key: entry[key] for key in ("source", "bytes", "md5", "verified")} == {
        "source": "gs://bucket/data/big.bin", "bytes": len(BIG), "md5": md5(BIG), "verified": "MD5SUMS"}
    assert isinstance(entry["generation"], int) and entry["generation"] > 0
    assert manifest["files"]["MD5SUMS"]["verified"] == "gcs-object-md5"


def test_a_checksum_that_differs_is_one_line_naming_the_object(gcs_emulator, tmp_path):  # noqa: F811
    files = {**FOLDER, "MD5SUMS": md5sums({**FOLDER, "big.bin": b"what was published"})}
    gcs_emulator.upload("bucket", {f"data/{name}": data for name, data in files.items()})
    mount = tmp_path / "mount"
    show_in_mount(mount, "bucket", {f"data/{name}": data for name, data in files.items()})

    with pytest.raises(DeepFaceError) as error:
        fetch(["gs://bucket/data/"], tmp_path / "out", gcs_mount=mount)
    message = str(error.value)
    assert message.startswith("MD5 mismatch for gs://bucket/data/big.bin (generation ")
    assert md5(b"what was published") in message and md5(BIG) in message and "\n" not in message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_object_without_a_stored_md5_is_hashed_as_a_stream_not_stored(folder, gcs_emulator, tmp_path,  # noqa: F811
                                                                         caplog):
    gcs_emulator.make_composite("bucket", "data/big.bin")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        manifest = fetch(["gs://bucket/data/"], out, gcs_mount=folder)

    assert downloads(caplog) == ["data/MD5SUMS", "data/big.bin"]
    assert manifest["files"]["big.bin"]["md5"] == md5(BIG)
    assert manifest["files"]["big.bin"]["verified"] == "MD5SUMS"
    assert sorted(path.name for path in out.rglob("*")) == ["manifest.json"]

    gcs_emulator.upload("bucket", {"data/MD5SUMS": md5sums({**FOLDER, "big.bin": b"other"})})
    with pytest.raises(DeepFaceError, match=r"MD5 mismatch for gs://bucket/data/big\.bin .* of its bytes is "
                                            + md5(BIG)):
        fetch(["gs://bucket/data/"], out, gcs_mount=folder)


def test_a_copy_when_asked_or_when_no_mount_shows_the_folder(folder, tmp_path):
    for name, mount, settings in [("asked", folder, {"copy_gs": True}), ("unmounted", tmp_path / "none", {})]:
        out = tmp_path / name
        manifest = fetch(["gs://bucket/data/"], out, gcs_mount=mount, **settings)
        assert "location" not in manifest
        assert (out / "big.bin").read_bytes() == BIG and (out / "sub" / "b.bin").read_bytes() == SMALL
        assert manifest["files"]["big.bin"]["verified"] == "MD5SUMS"


def test_local_and_https_sources_are_copied_even_under_a_mount(folder, http_server, tmp_path):  # noqa: F811
    http_server.files = {"data/a.bin": DATA, "data/MD5SUMS": md5sums({"a.bin": DATA})}
    local = tmp_path / "local"
    shutil.copytree(folder / "bucket" / "data", local)
    for name, source in [("https", http_server.url("data/")), ("local", f"{local}/")]:
        manifest = fetch([source], tmp_path / name, gcs_mount=folder)
        assert "location" not in manifest
        assert (tmp_path / name / "a.bin").read_bytes() == DATA
        assert manifest["files"]["a.bin"]["verified"] == "MD5SUMS"


def test_a_mount_that_does_not_show_the_files_is_refused_naming_copy_gs(folder, tmp_path):
    (folder / "bucket" / "data" / "MD5SUMS").unlink()  # the folder is there, the first object is not
    with pytest.raises(DeepFaceError, match=r"gs://bucket/data/ cannot be read in place: .*set copy_gs"):
        in_place.verify_in_place("gs://bucket/data/", tmp_path / "out", mount=folder)
    with pytest.raises(DeepFaceError, match=r"https://host/data/ is not a gs:// folder"):
        in_place.verify_in_place("https://host/data/", tmp_path / "out", mount=folder)


# ------------------------------------------------------------------------------------------- the component


def run_executor(tmp_path: Path, **parameters) -> tuple[dict, Path]:
    """Run the fetch component through KFP's executor (what `kfp.dsl.executor_main` runs in the task's
    container) with its output artifact in ``tmp_path/root``; returns the executor output and that folder."""
    own_folder = tmp_path / "root" / "fetch" / "data"
    dataset = {"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"}
    executor_input = {
        "inputs": {
            "artifacts": {"synthetic": {"artifacts": [{"name": "synthetic", "uri": str(tmp_path / "unused"),
                                                        "type": dataset, "metadata": {}}]}},
            "parameterValues": {"data_uri": "", "auth_header_env": "", "auth_secret": "", "retries": 2,
                                "copy_gs": False, "fingerprint": "", **parameters},
        },
        "outputs": {
            "artifacts": {"data": {"artifacts": [{"name": "data", "uri": str(own_folder), "type": dataset}]}},
            "outputFile": str(tmp_path / "root" / "fetch" / "executor_output.json"),
        },
    }
    Executor(executor_input, components.fetch.fetch).execute()
    return json.loads((tmp_path / "root" / "fetch" / "executor_output.json").read_text()), own_folder


def test_the_component_hands_on_the_source_folder_verified_in_place(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(in_place, "GCS_MOUNT", str(folder))
    output, own_folder = run_executor(tmp_path, data_uri="gs://bucket/data/", fingerprint="gs 4 files sha256:0")

    artifact = output["artifacts"]["data"]["artifacts"][0]
    assert artifact["uri"] == "gs://bucket/data"  # what the stages after receive: lineage from the source
    assert Dataset(uri=artifact["uri"]).path == "/gcs/bucket/data"  # where they read it on Vertex AI
    assert artifact["metadata"] == {
        "source": "gs://bucket/data/", "in_place": True, "files": 4,
        "bytes": sum(map(len, FOLDER.values())) + len(md5sums(FOLDER)),
        "verified": {"MD5SUMS": 3, "gcs-object-md5": 1}, "manifest": f"{own_folder}/manifest.json",
    }
    assert os.listdir(own_folder) == ["manifest.json"]  # no data copied into the pipeline's storage
    assert json.loads((own_folder / "manifest.json").read_text())["location"] == "gs://bucket/data/"


def test_the_component_copies_gs_data_with_copy_gs_and_local_data_always(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(in_place, "GCS_MOUNT", str(folder))
    output, own_folder = run_executor(tmp_path / "gs", data_uri="gs://bucket/data/", copy_gs=True)
    artifact = output["artifacts"]["data"]["artifacts"][0]
    assert artifact["uri"] == str(own_folder) and artifact["metadata"]["in_place"] is False
    assert (own_folder / "big.bin").read_bytes() == BIG

    output, own_folder = run_executor(tmp_path / "local", data_uri=str(folder / "bucket" / "data"))
    artifact = output["artifacts"]["data"]["artifacts"][0]
    assert artifact["uri"] == str(own_folder) and artifact["metadata"]["in_place"] is False
    assert artifact["metadata"]["verified"] == {"MD5SUMS": 3, "unverified": 1}
    assert (own_folder / "a.bin").read_bytes() == DATA


# -------------------------------------------------------------------------------------- the stages after


def test_the_stages_after_read_a_source_folder_without_a_fetch_manifest(synth_dir, tmp_path):
    """labels and tfrecords' landmark lookup take ``data.path`` as it is when the data stays in place:
    the mount's view of the source folder (/gcs/BUCKET/PATH), holding the release files and no manifest."""
    names = ["train_list.txt", "vggface2_train.tar.gz", "bb_landmark.tar.gz"]
    data_path = str(show_in_mount(tmp_path / "gcs", "faces", {f"vggface2/{name}": (synth_dir / name).read_bytes()
                                                              for name in names}) / "vggface2")
    assert not os.path.exists(os.path.join(data_path, "manifest.json"))

    for source in ["train_list.txt", "vggface2_train.tar.gz"]:  # as components.labels and .tfrecords join it
        build_labels(os.path.join(data_path, source), tmp_path / source)
    assert load_classes(tmp_path / "train_list.txt") == load_classes(tmp_path / "vggface2_train.tar.gz")
    assert len(load_classes(tmp_path / "train_list.txt")) > 1
    assert landmarks_in(data_path, "bb_landmark.tar.gz") == Path(data_path, "bb_landmark.tar.gz")
