"""deepface.outputs (one writer per output directory) and deepface.contracts.check_model_dir (a model
directory is usable only with its complete manifest)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from deepface import outputs
from deepface.contracts import check_model_dir, write_manifest
from deepface.errors import DeepFaceError
from deepface.outputs import LOCK_FILE, locks_output, output_lock

HOLD = """
import sys
from deepface.outputs import output_lock
lock = output_lock(sys.argv[1], "tfrecords")
print("held", flush=True)
sys.stdin.read()  # until the test closes stdin (or kills this process)
lock.release()
print("released", flush=True)
"""


def holder(directory: Path) -> subprocess.Popen:
    """A process holding the lock of ``directory``; returns once it says so."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_writer_is_refused_with_one_line_naming_the_directory_and_the_holder(tmp_path):
    out = tmp_path / "out"
    process = holder(out)
    try:
        with pytest.raises(DeepFaceError) as refused:
            output_lock(out, "tfrecords")
        message = str(refused.value)
        assert "\n" not in message
        assert message.startswith(f"{out} is being written by another run (deepface tfrecords, pid {process.pid} "
                                  f"on host {socket.gethostname()} since 20")
        assert message.endswith("wait for it to end, or choose another output directory.")
        recorded = json.loads((out / LOCK_FILE).read_text())
        assert recorded["pid"] == process.pid and recorded["stage"] == "tfrecords"
    finally:
        process.stdin.close()
        assert process.stdout.readline() == "released\n"
        assert process.wait() == 0
    assert not (out / LOCK_FILE).exists()  # a finished run leaves no lock file
    with output_lock(out, "tfrecords") as lock:
        assert lock.locked


def test_a_killed_holder_does_not_block_the_rerun(tmp_path):
    process = holder(tmp_path)
    process.kill()  # SIGKILL: no cleanup, the lock file stays
    assert process.wait() == -signal.SIGKILL
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == process.pid
    with output_lock(tmp_path, "tfrecords") as lock:
        assert lock.locked
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_same_process_cannot_write_one_directory_twice_and_release_is_idempotent(tmp_path):
    lock = output_lock(tmp_path / "new" / "dir", "labels")  # created
    with pytest.raises(DeepFaceError, match=f"pid {os.getpid()}"):
        output_lock(tmp_path / "new" / "dir", "labels")
    lock.release()
    lock.release()
    output_lock(tmp_path / "new" / "dir", "labels").release()


def test_a_decorated_stage_runs_holding_the_lock_of_its_output_argument(tmp_path):
    @locks_output("out_dir", "evaluate")
    def stage(model_dir, out_dir, **settings):
        with pytest.raises(DeepFaceError, match="deepface evaluate"):
            output_lock(out_dir, "evaluate")
        return settings

    assert stage("model", out_dir=tmp_path / "eval", seed=1) == {"seed": 1}
    assert not (tmp_path / "eval" / LOCK_FILE).exists()
    assert locks_output("out_dir", "train")(lambda out_dir=None: "unlocked")() == "unlocked"


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS])
def test_without_flock_support_the_stage_runs_unlocked_after_one_warning(tmp_path, monkeypatch, caplog, code):
    def unsupported(fd, operation):  # what a filesystem without flock (some FUSE mounts) answers
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(outputs.fcntl, "flock", unsupported)
    with caplog.at_level(logging.WARNING, logger="deepface.outputs"), output_lock(tmp_path, "train") as lock:
        assert not lock.locked
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [f"cannot lock {tmp_path / LOCK_FILE} "
                                                                                f"({os.strerror(code)})"]


def test_remote_directories_are_not_locked(caplog):
    with caplog.at_level(logging.INFO, logger="deepface.outputs"), output_lock("gs://bucket/model", "train") as lock:
        assert not lock.locked
    assert "not locked" in caplog.text


def test_a_directory_that_cannot_be_made_is_one_line_naming_it_and_the_fix(tmp_path):
    """The lock words its OS errors as every stage does (`deepface.errors.os_error_message`)."""
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(DeepFaceError, match=rf"^cannot write {tmp_path / 'file' / 'out'}: Not a directory \(ENOTDIR\); "
                       r"a file is where a directory is expected") as caught:
        output_lock(tmp_path / "file" / "out", "labels")
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------- check_model_dir


def model_dir(root: Path, stage: str = "train") -> Path:
    root.mkdir()
    (root / "embedding.keras").write_bytes(b"PK" * 10)
    (root / "metadata.json").write_text("{}")
    files = {"embedding.keras": {"bytes": 20, "sha256": "0" * 64}, "metadata.json": {"bytes": 2, "sha256": "0" * 64}}
    write_manifest(root, {"stage": stage, "files": files if stage == "train" else sorted(files)})
    return root


def test_a_complete_model_directory_passes_and_gives_its_manifest(tmp_path):
    assert check_model_dir(model_dir(tmp_path / "model"))["files"]["embedding.keras"]["bytes"] == 20
    assert check_model_dir(f"file://{model_dir(tmp_path / 'imported', 'import-weights')}")["stage"] == "import-weights"


def test_a_model_directory_without_its_manifest_is_refused(tmp_path):
    model = model_dir(tmp_path / "model")
    (model / "manifest.json").unlink()  # what a killed `train --overwrite` leaves: the old files, no manifest
    with pytest.raises(DeepFaceError, match=rf"^{model} has no manifest.json: it is not a complete model directory "
                       r".*rerun `deepface train` into it"):
        check_model_dir(model)


def test_a_model_directory_whose_files_disagree_with_the_manifest_is_refused(tmp_path):
    model = model_dir(tmp_path / "model")
    (model / "embedding.keras").write_bytes(b"PK")
    with pytest.raises(DeepFaceError, match=r"embedding.keras has 2 bytes, its manifest says 20"):
        check_model_dir(model)
    (model / "metadata.json").unlink()
    with pytest.raises(DeepFaceError, match=r"embedding.keras has 2 bytes"):  # sorted: the first difference
        check_model_dir(model)
    (model / "embedding.keras").write_bytes(b"PK" * 10)
    with pytest.raises(DeepFaceError, match=r"metadata.json is missing"):
        check_model_dir(model)


def test_another_stage_s_manifest_is_not_a_model(tmp_path):
    with pytest.raises(DeepFaceError, match=r"manifest of a 'tfrecords' output, not of a model directory"):
        check_model_dir(model_dir(tmp_path / "records", "tfrecords"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text('{"stage": "train"')
    with pytest.raises(DeepFaceError, match=r"is not a model manifest \(JSONDecodeError"):
        check_model_dir(tmp_path / "broken")
