"""OS errors are one line naming the path and the fix, in every stage's command line, never a traceback.

Each stage command (synth, fetch, labels, landmarks, tfrecords, train, evaluate) runs as its real command
line (``python -m deepface.cli``) in a subprocess, with its output

- an existing file (``--out FILE``: EEXIST), or a path under one (``--out FILE/x``: ENOTDIR);
- in a folder the user may not write: run as ``nobody`` (uid 65534) through ``setpriv``, keeping only
  CAP_DAC_READ_SEARCH, which lets it read and search everything (the interpreter lives under ``/root``,
  mode 0700) and write only where the permission bits let uid 65534 write;
- on a full 1 MiB tmpfs (mounted here: the tests run as root; skipped where mounting is refused).

The whole output (stdout and stderr) must be one ``Error: ...`` line naming the path, with exit status 1;
the only other lines allowed are TensorFlow's start-up lines and the stage's own log records before it
stopped (`noise`). After a full disk, no temporary file is left behind: the cleanup of a failed write
did not raise again (which would have hidden the first error).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faults import DEEPFACE, child_env, split_temporaries, tree_bytes

from deepface.errors import os_error_message, system_error_message
from deepface.files import write_bytes

NOBODY = 65534
# Lines that are not the error: TensorFlow's C++ start-up (absl format, printed before TF_CPP_MIN_LOG_LEVEL
# applies) and log records of the stage (INFO, WARNING) from before it stopped.
NOISE = re.compile("|".join([
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] ",
    r"\d{4}-\d\d-\d\d [\d:,]+ (INFO|WARNING) \S+: ",
]))
# What each condition's line must say (the fix), besides the path.
FIXES = {
    "out-is-a-file": r"a file is where a directory is expected|is a file: give a directory",
    "out-under-a-file": r"a file is where a directory is expected",
    "unwritable": rf"uid {NOBODY} \(nobody\) may not do this there",
    "full-disk": r"No space left on device \(ENOSPC\); the disk is full: free some space",
}
STAGES = ("synth", "fetch", "labels", "landmarks", "tfrecords", "train", "evaluate")


def noise(line: str) -> bool:
    return not line.strip() or bool(NOISE.match(line))


@pytest.fixture(scope="module")
def inputs(synth_dir, train_inputs) -> Iterator[Path]:
    """A folder under /tmp that every user may read (pytest's own are 0700): the synthetic dataset
    (``synth/``), `train_inputs` (``tfrecords/``, ``labels/``) and a tiny model trained for one step
    (``model/``: only evaluate's interface matters)."""
    from deepface.train import train

    root = Path(tempfile.mkdtemp(prefix="deepface-os-errors-"))
    try:
        shutil.copytree(synth_dir, root / "synth")
        for source in train_inputs:
            shutil.copytree(source, root / source.name)
        train(root / "tfrecords", root / "labels", root / "model", preset="tiny", epochs=1, batch_size=8,
              steps_per_epoch=1, checkpoint_steps=0, feature_max_batches=1, strategy="cpu")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield root
    finally:
        shutil.rmtree(root)


def stage_args(stage: str, out: Path, inputs: Path) -> list[str]:
    """``deepface <stage>`` on the tiny `inputs`, writing to ``out``."""
    synth_dir, tfrecords, labels, model = (inputs / name for name in ("synth", "tfrecords", "labels", "model"))
    return {
        "synth": ["synth", "--out", str(out), "--train-identities", "3", "--test-identities", "2",
                  "--lfw-identities", "6", "--images-per-identity", "4", "--image-size", "48",
                  "--lfw-image-size", "64", "--workers", "1"],
        "fetch": ["fetch", "--source", str(synth_dir / "pairs.txt"), "--out", str(out)],
        "labels": ["labels", "--source", str(synth_dir / "train_list.txt"), "--out", str(out)],
        "landmarks": ["landmarks", "--source", str(synth_dir / "vggface2_test.tar.gz"), "--out", str(out),
                      "--workers", "1"],
        "tfrecords": ["tfrecords", "--source", str(synth_dir / "vggface2_train.tar.gz"), "--labels", str(labels),
                      "--out", str(out), "--image-size", "80", "--landmarks", str(synth_dir / "bb_landmark.tar.gz"),
                      "--workers", "1"],
        "train": ["train", "--tfrecords", str(tfrecords), "--labels", str(labels), "--out", str(out),
                  "--preset", "tiny", "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "1",
                  "--checkpoint-steps", "0", "--feature-max-batches", "1", "--strategy", "cpu"],
        "evaluate": ["evaluate", "--model", str(model), "--images", str(synth_dir / "lfw.tgz"), "--pairs",
                     str(synth_dir / "pairs.txt"), "--landmarks", str(synth_dir / "lfw_landmarks.csv"),
                     "--out", str(out)],
    }[stage]


def run_stage(args: list[str], *, user: int | None = None, home: Path | None = None) -> tuple[int, str]:
    """Run ``deepface <args>`` to its end (as ``user`` through setpriv when given); (status, all output)."""
    prefix = []
    if user is not None:
        prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                  "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    env = child_env(**({"HOME": str(home), "MPLCONFIGDIR": str(home)} if home else {}))
    done = subprocess.run([*prefix, *DEEPFACE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, cwd=Path(__file__).parents[2], timeout=600)
    return done.returncode, done.stdout.decode(errors="replace")


def assert_one_line(returncode: int, output: str, path: Path, fix: str) -> str:
    """The output is one ``Error:`` line (apart from `noise`) naming ``path`` and matching ``fix``."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if not noise(line)]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert str(path) in lines[0] and re.search(fix, lines[0]), lines[0]
    assert returncode == 1, output
    return lines[0]


@contextlib.contextmanager
def small_tmpfs(directory: Path, size: str = "1m"):
    """A tmpfs of ``size`` mounted on ``directory`` (skips the test where mounting is not permitted)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(directory: Path) -> None:
    """Write a file into ``directory`` until its file system is full."""
    with open(directory / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory):
    """A 1 MiB tmpfs, full."""
    with small_tmpfs(tmp_path_factory.mktemp("full_disk") / "mnt") as mount:
        fill(mount)
        yield mount


@pytest.fixture(scope="module")
def unwritable(inputs):
    """(a folder nobody may not write, a HOME nobody may write); skipped without setpriv or the capability."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run a command as nobody")
    locked, home = inputs / "locked", inputs / "home"
    locked.mkdir(mode=0o755)
    home.mkdir()
    home.chmod(0o777)
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                            "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
                            *DEEPFACE, "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot run the command line as nobody with CAP_DAC_READ_SEARCH: {probe.stderr.strip()}")
    return locked, home


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("condition", ["out-is-a-file", "out-under-a-file"])
def test_an_output_path_that_is_a_file_is_one_line(stage, condition, tmp_path, inputs):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file\n")
    out = blocker if condition == "out-is-a-file" else blocker / "out"
    returncode, output = run_stage(stage_args(stage, out, inputs))
    assert_one_line(returncode, output, out, FIXES[condition])
    assert blocker.read_text() == "a file\n"


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_an_unwritable_output_folder_is_one_line(stage, unwritable, inputs):
    locked, home = unwritable
    out = locked / stage
    returncode, output = run_stage(stage_args(stage, out, inputs), user=NOBODY, home=home)
    assert_one_line(returncode, output, out, FIXES["unwritable"])
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_is_one_line_and_leaves_no_temporary(stage, full_disk, inputs):
    out = full_disk / stage
    returncode, output = run_stage(stage_args(stage, out, inputs))
    assert_one_line(returncode, output, out, FIXES["full-disk"])
    assert split_temporaries(tree_bytes(out))[1] == []  # each failed write's cleanup ran to its end


@pytest.mark.slow
def test_a_checkpoint_on_a_full_disk_is_one_line(tmp_path, inputs):
    """ENOSPC inside TensorFlow (its checkpoint writer raises tf.errors.ResourceExhaustedError): the
    output folder fits the small files written first, not the checkpoint."""
    with small_tmpfs(tmp_path / "mnt") as mount:
        out = mount / "model"
        returncode, output = run_stage(stage_args("train", out, inputs))
        line = assert_one_line(returncode, output, out / "checkpoints", FIXES["full-disk"])
    assert "[Op:" not in line and "{{" not in line


# --------------------------------------------------------------------------------------------------
# The mapping and the atomic writer, in this process.


def test_every_errno_gets_its_fix_and_the_path():
    cases = {
        OSError(errno.ENOSPC, "No space left on device", "/out/a"): "/out/a: No space left on device (ENOSPC); the "
        "disk is full",
        OSError(errno.EROFS, "Read-only file system", "/out"): "/out: Read-only file system (EROFS); the file "
        "system is read-only",
        OSError(errno.EMFILE, "Too many open files"): "/given: Too many open files (EMFILE); this process has too "
        "many open files: raise its limit (ulimit -n)",
        OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"): "/a -> /b: Invalid cross-device link",
    }
    for error, start in cases.items():
        assert os_error_message(error, "/given").startswith(start), error
    assert os_error_message(OSError(errno.EACCES, "Permission denied", "/x")).startswith(
        f"/x: Permission denied (EACCES); uid {os.geteuid()} ")
    assert os_error_message(OSError(errno.EDQUOT, "Disk quota exceeded", "/x"), action="write").startswith(
        "cannot write /x: Disk quota exceeded (EDQUOT); the disk quota is used up")
    assert system_error_message(ValueError("no space")) is None  # not a system error: keeps its traceback


def test_a_write_on_a_full_disk_names_the_target_and_leaves_nothing(tmp_path):
    with small_tmpfs(tmp_path / "mnt") as mount:
        fill(mount)
        target = mount / "sub" / "data.bin"
        with pytest.raises(OSError) as raised:
            write_bytes(target, b"x" * 100_000)
        assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
        assert raised.value.__context__ is None  # not raised while handling another error: the first one
        assert list(target.parent.iterdir()) == []  # the temporary is gone
