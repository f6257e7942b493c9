"""The bad-input corpus (tests/corpus.py) through every stage's command line.

Each input gets the behaviour its stage promises: skipped and counted in the stage's manifest, or a
clear one-line error (exit code 1) naming the input, never an unexpected exception with a traceback.
Every command runs in a sandbox whose every file is compared before and after: a command may only
write inside its output directory (the archives hold absolute, ``..`` and symlinked members that an
extraction would write elsewhere). The sandbox holds the command's TMPDIR and HOME too, so a temporary
file or a cache left in either is caught. A user error's whole output (stdout, stderr and the log records
the command line prints to stderr) is one line; some user errors also run as real processes, whose whole
output is one line but for TensorFlow's C++ start-up lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.cbook
import pytest
from click.testing import CliRunner, Result
from conftest import tiny_model
from helpers.corpus import (
    CLASSES_FILES,
    IGNORED,
    IMAGE_LISTS,
    LONG,
    NON_UTF8,
    PAIRS_FILES,
    STORED,
    Member,
    corrupt_gzip,
    cut_at_member,
    encode,
    flip_bit,
    hostile_members,
    images,
    noise_image,
    non_utf8_identity,
    not_an_archive,
    truncated,
    write_tar,
)
from helpers.faults import child_env

from deepface.cli import main

IMAGE_SIZE = "32"


# What the libraries write under TMPDIR and HOME, and only there, besides the product's outputs:
# - TensorFlow's autograph writes the source of each function it converts to TMPDIR/__autograph_generated_file*.py
#   and deletes them when the process exits (atexit): they are seen in-process only, never left by a process.
AUTOGRAPH_SOURCE = re.compile(r"tmp/__autograph_generated_file\w+\.py")
# - a fresh HOME gets Keras's config (~/.keras/keras.json) and matplotlib's font cache and config folder on
#   their first import; a process writes nothing else there (the image sets MPLCONFIGDIR, and KERAS_HOME is
#   not set: see tests/README.md).
LIBRARY_CACHES = [re.compile(pattern) for pattern in (
    r"home/\.keras", r"home/\.keras/keras\.json",
    r"home/\.cache", r"home/\.cache/matplotlib", r"home/\.cache/matplotlib/fontlist-v[\d.]+\.json",
    r"home/\.config", r"home/\.config/matplotlib",
)]


class _CurrentStderr(logging.StreamHandler):
    """Log records to whatever ``sys.stderr`` is when they are emitted (CliRunner swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def cli_logging():
    """Log records as the command line prints them in its own process (`deepface.cli.configure_logging`:
    INFO and above, to stderr), into the CliRunner's output; pytest's own handlers on the root logger
    would otherwise keep them out of it."""
    root = logging.getLogger()
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    level, handlers = root.level, root.handlers[:]
    root.handlers = [handler]  # pytest's alone (not the CLI's) would meet AutoGraph in traced input functions
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers = handlers
        root.setLevel(level)


class Sandbox:
    """A directory tree for one test: inputs, a working directory, output directories, and the
    command's TMPDIR and HOME.

    `invoke` runs a command line and checks that it ended either normally or with a user error, and
    that it wrote nothing outside the output directory it was given: not in TMPDIR nor HOME either.
    """

    def __init__(self, root: Path):
        self.root = root  # everything a command could reach by a relative or absolute escape is inside
        self.inputs = root / "a" / "b" / "inputs"
        self.work = root / "a" / "b" / "work"
        self.tmp = root / "tmp"  # the command's TMPDIR
        self.home = root / "home"  # the command's HOME
        for folder in (self.inputs, self.work, self.tmp, self.home):
            folder.mkdir(parents=True)
        (root / "a" / "b" / "outputs").mkdir()
        self.escape = root / "escape_abs"  # the target of absolute member names; must never appear

    def out(self, name: str) -> Path:
        return self.root / "a" / "b" / "outputs" / name

    def env(self) -> dict[str, str]:
        """The environment variables that point a command's temporaries and caches into the sandbox."""
        return {"TMPDIR": str(self.tmp), "HOME": str(self.home)}

    def snapshot(self, exclude: Path | None) -> dict[str, tuple[int, int]]:
        files = {}
        for path in self.root.rglob("*"):
            if exclude is not None and path.is_relative_to(exclude):
                continue
            relative = path.relative_to(self.root).as_posix()
            if AUTOGRAPH_SOURCE.fullmatch(relative) or any(cache.fullmatch(relative) for cache in LIBRARY_CACHES):
                continue
            stat = path.lstat()  # a directory's own times change when an output directory appears in it
            files[relative] = (
                (0, 0) if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
            )
        return files

    @contextlib.contextmanager
    def _environment(self):
        """TMPDIR and HOME in the sandbox for an in-process command (tempfile reads TMPDIR anew)."""
        saved = {name: os.environ.get(name) for name in self.env()}
        saved_tempdir = tempfile.tempdir
        os.environ.update(self.env())
        tempfile.tempdir = None
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            tempfile.tempdir = saved_tempdir

    def invoke(self, args: list[str], out: Path | None = None, group=main) -> Result:
        before = self.snapshot(out)
        cwd = os.getcwd()
        os.chdir(self.work)
        try:
            with self._environment(), cli_logging():
                result = CliRunner().invoke(group, [str(arg) for arg in args])
        finally:
            os.chdir(cwd)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"{args[0]} crashed instead of naming the bad input") from result.exception
        assert "Traceback" not in result.output
        self.check_untouched(before, out, args[0])
        return result

    def run(self, args: list[str], out: Path | None = None, module: str = "deepface.cli") -> tuple[int, str]:
        """The command line as its own process (``python -m module``), TMPDIR and HOME in the sandbox:
        its exit status and its whole output (stdout and stderr)."""
        before = self.snapshot(out)
        done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=self.work,
                              env=child_env(**self.env()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=300)
        output = done.stdout.decode(errors="replace")
        self.check_untouched(before, out, args[0])
        return done.returncode, output

    def check_untouched(self, before: dict, out: Path | None, command: str) -> None:
        after = self.snapshot(out)
        assert after == before, f"{command} wrote outside its output directory: {sorted(set(after) ^ set(before))}"
        assert not self.escape.exists()


# TensorFlow's C++ start-up, printed by a process before TF_CPP_MIN_LOG_LEVEL applies (absl's format).
TF_STARTUP = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
                        r"|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
# A progress record (`deepface.cli.configure_logging`'s format, INFO only, one line): what the stage (or a
# library, e.g. matplotlib building its font cache in a fresh HOME) did before the bad input was met. Any
# other line (a WARNING, a traceback, a second line of the error) counts.
PROGRESS = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ INFO [\w.]+: ")


def expect_error(result: Result | tuple[int, str], *names: str) -> str:
    """The error line of a command that failed on a user error; it must name each of ``names``. Its whole
    output (stdout and stderr, log records included) is that one line, but for TensorFlow's start-up
    lines (a process) and the stage's INFO progress records from before it met the bad input."""
    exit_code, output = (result.exit_code, result.output) if isinstance(result, Result) else result
    assert exit_code == 1, output
    lines = [line for line in output.splitlines()
             if line.strip() and not TF_STARTUP.match(line) and not PROGRESS.match(line)]
    assert len(lines) == 1, f"a user error's output is not one line:\n{output}"
    message = lines[0]
    assert message.startswith("Error: "), output
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"
    return message


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def labels_and_tfrecords(sandbox: Sandbox, source: Path, *extra: str) -> tuple[dict, dict]:
    """Run labels then tfrecords (accepting any fraction of bad images) on ``source``; their manifests."""
    labels, records = sandbox.out("labels"), sandbox.out("tfrecords")
    result = sandbox.invoke(["labels", "--source", source, "--out", labels], labels)
    assert result.exit_code == 0, result.output
    result = sandbox.invoke(["tfrecords", "--source", source, "--labels", labels, "--out", records, "--no-align",
                             "--image-size", IMAGE_SIZE, "--workers", "1", "--max-bad-fraction", "1", *extra], records)
    assert result.exit_code == 0, result.output
    return read_json(labels / "manifest.json"), read_json(records / "manifest.json")


def check_image_handling(manifest: dict, expected: dict[str, str], folder: str, other_records: int) -> None:
    """Each corpus image under ``folder`` was stored, ignored or skipped with its reason, and counted;
    ``other_records`` good images lie elsewhere in the source."""
    skipped = {entry["file"]: entry["reason"] for entry in manifest["skipped"]}
    for name, outcome in expected.items():
        path = f"{folder}/{name}"
        if outcome in (STORED, IGNORED):
            assert path not in skipped
        else:
            assert skipped.pop(path).startswith(outcome), (path, outcome)
        if outcome == IGNORED:
            assert path in manifest["ignored_files"]["examples"]
    assert skipped == {}
    assert manifest["num_records"] == other_records + sum(outcome == STORED for outcome in expected.values())
    assert manifest["ignored_files"]["count"] == sum(outcome == IGNORED for outcome in expected.values())


# --------------------------------------------------------------------------------------------------
# Images (labels and tfrecords, from an archive and from a directory)


def test_every_kind_of_image_in_an_archive_is_stored_or_skipped_and_counted(sandbox):
    corpus = images()
    archive = write_tar(sandbox.inputs / "train.tar.gz", [
        *(Member(f"train/n000001/{name}", data) for name, (data, _) in corpus.items()),
        Member("train/n000002/0001_01.jpg", encode(noise_image(7))),
    ])
    labels, records = labels_and_tfrecords(sandbox, archive)
    expected = {name: outcome for name, (_, outcome) in corpus.items()}
    check_image_handling(records, expected, "train/n000001", other_records=1)
    assert labels["ignored"]["count"] == sum(outcome == IGNORED for outcome in expected.values())


def test_every_kind_of_image_in_a_directory_is_stored_or_skipped_and_counted(sandbox):
    corpus = images()
    source = sandbox.inputs / "train"
    (source / "n000001").mkdir(parents=True)
    (source / "n000003").mkdir()  # an empty identity folder: no class, no error
    for name, (data, _) in corpus.items():
        (source / "n000001" / name).write_bytes(data)
    (source / "n000002" / LONG).mkdir(parents=True)  # a long folder name below the identity
    (source / "n000002" / f"{LONG}.jpg").write_bytes(encode(noise_image(8)))
    labels, records = labels_and_tfrecords(sandbox, source)
    check_image_handling(records, {name: outcome for name, (_, outcome) in corpus.items()}, "n000001", other_records=1)
    assert (sandbox.out("labels") / "classes.txt").read_text() == "n000001\nn000002\n"


# --------------------------------------------------------------------------------------------------
# Hostile archive members


def test_hostile_archive_members_are_never_extracted_nor_followed(sandbox):
    hostile = {case: spec for case, spec in hostile_members(sandbox.escape).items() if "UTF-8" not in case}
    good = [Member(f"train/n000002/{k}.jpg", encode(noise_image(k))) for k in range(3)]
    archive = write_tar(sandbox.inputs / "train.tar.gz", [*good, *(member for member, _ in hostile.values())])
    labels, records = labels_and_tfrecords(sandbox, archive)
    stored = {f"train/n000002/{k}.jpg" for k in range(3)} | {
        member.name.lstrip("/") if member.name.startswith("/") else os.path.normpath(member.name)
        for member, outcome in hostile.values() if outcome == STORED
    }
    assert records["num_records"] == len(stored)
    assert records["num_skipped"] == 0
    # links, devices and folders are left out; nothing was written anywhere but the outputs (Sandbox)
    assert labels["num_images"] == len(stored)


def test_links_devices_and_unsafe_member_names_are_skipped_and_counted(sandbox):
    hostile = {case: spec for case, spec in hostile_members(sandbox.escape).items() if "UTF-8" not in case}
    unsafe = [member for case, (member, _) in hostile.items()
              if case in ("absolute path", "dot-dot path", "inner dot-dot", "symlink out", "symlink up",
                          "hard link out", "device", "fifo")]
    archive = write_tar(sandbox.inputs / "train.tar.gz",
                        [Member("train/n000002/0001.jpg", encode(noise_image(1))), *unsafe])
    labels, records = labels_and_tfrecords(sandbox, archive)
    assert labels["ignored"]["count"] == len(unsafe)
    assert records["ignored_files"]["count"] + records["num_skipped"] == len(unsafe)
    assert records["num_records"] == 1


def test_an_identity_folder_name_that_is_not_utf8_is_a_clear_error(sandbox):
    archive = write_tar(sandbox.inputs / "train.tar.gz",
                        [Member("train/n000001/0001.jpg", encode(noise_image(1))), non_utf8_identity()])
    result = sandbox.invoke(["labels", "--source", archive, "--out", sandbox.out("labels")], sandbox.out("labels"))
    expect_error(result, "UTF-8")


def test_file_names_that_are_not_utf8_are_skipped_and_counted(sandbox):
    archive = write_tar(sandbox.inputs / "train.tar.gz", [
        Member("train/n000001/0001.jpg", encode(noise_image(1))),
        Member(f"train/n000001/{NON_UTF8}.jpg", encode(noise_image(2))),
        Member(f"train/n000001/{NON_UTF8}.txt", b"notes"),
    ])
    labels, records = labels_and_tfrecords(sandbox, archive)
    assert labels["num_images"] + labels["ignored"]["count"] == 3  # every file accounted for
    assert records["num_records"] == 1
    assert records["num_skipped"] + records["ignored_files"]["count"] == 2


# --------------------------------------------------------------------------------------------------
# Broken archives


def good_archive(sandbox: Sandbox, mode: str = "w:gz") -> bytes:
    members = [Member(f"train/n{k % 3:06d}/{k:04d}.jpg", encode(noise_image(k, 64, 64))) for k in range(24)]
    return write_tar(sandbox.inputs / "good.tar.gz", members, mode).read_bytes()


DAMAGES = {
    "truncated": lambda data: truncated(data),
    "not a tar": lambda data: not_an_archive(),
    "empty file": lambda data: b"",
    "corrupt gzip": corrupt_gzip,
    "flipped bit": flip_bit,
    "no gzip trailer": lambda data: data[:-8],
    "tar cut at a member": lambda data: cut_at_member(data, 12),
    "xz cut short": lambda data: data[:-20],
}
ARCHIVE_MODES = {"tar cut at a member": "w", "xz cut short": "w:xz"}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_broken_archive_is_a_clear_error_naming_it(sandbox, damage):
    data = good_archive(sandbox, ARCHIVE_MODES.get(damage, "w:gz"))
    archive = sandbox.inputs / "broken.tar.gz"
    archive.write_bytes(DAMAGES[damage](data))
    labels = sandbox.out("labels")
    result = sandbox.invoke(["labels", "--source", archive, "--out", labels], labels)
    expect_error(result, str(archive))
    assert not (labels / "manifest.json").exists()

    # tfrecords, with the class map of the intact archive
    (sandbox.inputs / "good.tar.gz").rename(sandbox.inputs / "intact.tar.gz")
    assert sandbox.invoke(
        ["labels", "--source", sandbox.inputs / "intact.tar.gz", "--out", labels], labels
    ).exit_code == 0
    records = sandbox.out("tfrecords")
    result = sandbox.invoke(["tfrecords", "--source", archive, "--labels", labels, "--out", records,
                             "--image-size", IMAGE_SIZE, "--workers", "1"], records)
    expect_error(result, str(archive))
    assert not (records / "manifest.json").exists()


# --------------------------------------------------------------------------------------------------
# Text inputs: image lists, class maps


@pytest.mark.parametrize("case", sorted(IMAGE_LISTS))
def test_image_lists(sandbox, case):
    listing = sandbox.inputs / "train_list.txt"
    listing.write_bytes(IMAGE_LISTS[case])
    out = sandbox.out("labels")
    result = sandbox.invoke(["labels", "--source", listing, "--out", out], out)
    if case == "duplicated entries":  # counted once, and reported
        assert result.exit_code == 0, result.output
        manifest = read_json(out / "manifest.json")
        assert manifest["num_images"] == 2 and manifest["duplicates"]["count"] == 1
        return
    message = expect_error(result, str(listing))
    if case in ("no identity folder", "not an image name", "tab in identity"):
        assert "line 2" in message
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("case", sorted(CLASSES_FILES))
def test_malformed_class_maps_are_errors_naming_file_and_line(sandbox, case):
    content, where = CLASSES_FILES[case]
    labels = sandbox.inputs / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_bytes(content)
    archive = write_tar(sandbox.inputs / "train.tar.gz", [Member("train/n000001/1.jpg", encode(noise_image(1)))])
    out = sandbox.out("tfrecords")
    result = sandbox.invoke(["tfrecords", "--source", archive, "--labels", labels, "--out", out,
                             "--image-size", IMAGE_SIZE, "--workers", "1"], out)
    expect_error(result, str(labels / "classes.txt"), where)


def test_a_missing_class_map_is_an_error_naming_it(sandbox):
    archive = write_tar(sandbox.inputs / "train.tar.gz", [Member("train/n000001/1.jpg", encode(noise_image(1)))])
    out = sandbox.out("tfrecords")
    result = sandbox.invoke(
        ["tfrecords", "--source", archive, "--labels", sandbox.inputs / "nolabels", "--out", out], out
    )
    expect_error(result, "nolabels")


# --------------------------------------------------------------------------------------------------
# fetch: names it cannot store, checksums that do not match


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("case", ["not UTF-8", "too long", "wrong MD5", "malformed MD5SUMS", "escaping MD5SUMS"])
def test_fetch_refuses_what_it_cannot_store_or_verify(sandbox, case):
    source = sandbox.inputs / "release"
    source.mkdir()
    data = encode(noise_image(1))
    names = {"not UTF-8": os.fsencode(f"{NON_UTF8}.jpg"), "too long": f"{'y' * 251}.jpg".encode()}
    if case in names:
        Path(os.fsdecode(os.fsencode(source) + b"/" + names[case])).write_bytes(data)
    else:
        (source / "a.jpg").write_bytes(data)
        md5sums = {"wrong MD5": f"{md5(b'other')}  a.jpg\n", "malformed MD5SUMS": "a.jpg  d41d8cd9\n",
                   "escaping MD5SUMS": f"{md5(data)}  ../../escape.jpg\n"}[case]
        (source / "MD5SUMS").write_text(md5sums)
    out = sandbox.out("fetch")
    result = sandbox.invoke(["fetch", "--source", source, "--out", out], out)
    expected = {"not UTF-8": "not UTF-8", "too long": "too long", "wrong MD5": "MD5 mismatch for a.jpg",
                "malformed MD5SUMS": "line 1", "escaping MD5SUMS": "../../escape.jpg"}[case]
    expect_error(result, expected)
    assert not (out / "manifest.json").exists()
    if out.exists():  # a file that failed its check is not kept under its name, nor as a .part
        assert not list(out.glob("*.jpg*"))


# --------------------------------------------------------------------------------------------------
# evaluate and verify: pairs files and images, with a tiny trained model


@pytest.fixture(scope="module")
def trained(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels/, tfrecords/ (80 px, whole frames: evaluate and verify then read images unaligned, so the
    decoding tests below need no faces) and model/: a tiny model trained for two steps on the synthetic
    train split (only its interface matters)."""
    return tiny_model(synth_dir, tmp_path_factory.mktemp("model"), aligned=False)


@pytest.fixture(scope="module")
def model_dir(trained: Path) -> Path:
    return trained / "model"


def lfw_folder(root: Path, extra: dict[str, bytes] | None = None) -> Path:
    """``lfw/<name>/<name>_000N.jpg`` for people A, B and C (two images each), plus ``extra`` files."""
    for k, name in enumerate("ABC"):
        (root / "lfw" / name).mkdir(parents=True)
        for number in (1, 2):
            (root / "lfw" / name / f"{name}_{number:04d}.jpg").write_bytes(encode(noise_image(10 * k + number, 64, 64)))
    for relative, data in (extra or {}).items():
        (root / "lfw" / relative).write_bytes(data)
    return root / "lfw"


VALID_PAIRS = b"1\t2\nA\t1\t2\nB\t1\t2\nA\t1\tB\t1\nB\t2\tC\t1\n"


@pytest.mark.parametrize("case", sorted(PAIRS_FILES) + ["a directory"])
def test_malformed_pairs_files_are_errors_naming_the_line(sandbox, model_dir, case):
    pairs = sandbox.inputs / "pairs.txt"
    if case == "a directory":
        pairs.mkdir()
        needles = ("pairs.txt",)
    else:
        content, needles = PAIRS_FILES[case]
        pairs.write_bytes(content)
    out = sandbox.out("evaluation")
    result = sandbox.invoke(["evaluate", "--model", model_dir, "--images", lfw_folder(sandbox.inputs), "--pairs", pairs,
                             "--out", out, "--no-baseline"], out)
    expect_error(result, *needles)
    assert not (out / "manifest.json").exists()


def test_undecodable_evaluation_images_are_an_error_or_skipped_and_counted(sandbox, model_dir):
    corpus = images()
    images_dir = lfw_folder(sandbox.inputs, {"C/C_0001.jpg": corpus["truncated.jpg"][0]})
    pairs = sandbox.inputs / "pairs.txt"
    pairs.write_bytes(VALID_PAIRS)
    out = sandbox.out("evaluation")
    args = ["evaluate", "--model", model_dir, "--images", images_dir, "--pairs", pairs, "--out", out, "--no-baseline"]
    expect_error(sandbox.invoke(args, out), "C_0001.jpg")
    assert not (out / "manifest.json").exists()

    result = sandbox.invoke([*args, "--allow-missing"], out)
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").exists()
    assert "C_0001.jpg" in (out / "scores.csv").read_text()  # the pair left out is listed with its reason


def test_user_errors_of_real_processes_are_one_line_and_write_nowhere_else(sandbox, model_dir):
    """As processes of their own (TMPDIR and HOME in the sandbox, in its snapshot): labels and tfrecords on
    an archive that is not one, evaluate on a malformed pairs file. Each prints one line in all, names
    the input, and leaves no file outside its output directory (no temporary, no cache)."""
    archive = sandbox.inputs / "broken.tar.gz"
    archive.write_bytes(not_an_archive())
    labels = sandbox.out("labels")
    expect_error(sandbox.run(["labels", "--source", archive, "--out", labels], labels), str(archive))
    good_archive(sandbox)
    good = sandbox.run(["labels", "--source", sandbox.inputs / "good.tar.gz", "--out", labels], labels)
    assert good[0] == 0, good[1]
    records = sandbox.out("tfrecords")
    expect_error(sandbox.run(["tfrecords", "--source", archive, "--labels", labels, "--out", records,
                              "--image-size", IMAGE_SIZE, "--workers", "1"], records), str(archive))
    pairs = sandbox.inputs / "pairs.txt"
    content, needles = PAIRS_FILES["non-number"]
    pairs.write_bytes(content)
    out = sandbox.out("evaluation")
    expect_error(sandbox.run(["evaluate", "--model", model_dir, "--images", lfw_folder(sandbox.inputs), "--pairs",
                              pairs, "--out", out, "--no-baseline"], out), *needles)
    assert not (records / "manifest.json").exists() and not (out / "manifest.json").exists()


VERIFY_IMAGES = ["zero_bytes.jpg", "truncated.jpg", "corrupt_header.jpg", "text_named.jpg", "truncated.png"]


@pytest.mark.parametrize("name", VERIFY_IMAGES)
def test_verify_names_an_unreadable_image(sandbox, model_dir, name):
    bad, good = sandbox.inputs / name, sandbox.inputs / "good.jpg"
    bad.write_bytes(images()[name][0])
    good.write_bytes(images()["good.jpg"][0])
    expect_error(sandbox.invoke(["verify", "--model", model_dir, "--threshold", "0.5", good, bad]), name)


def test_verify_reads_odd_formats(sandbox, model_dir):
    corpus = images()
    for name in ["png.png", "gif.gif", "cmyk.jpg", "grey16.png", "png_named.jpg", "alpha.png"]:
        (sandbox.inputs / name).write_bytes(corpus[name][0])
        result = sandbox.invoke(["verify", "--model", model_dir, "--threshold", "0.5", sandbox.inputs / name,
                                 sandbox.inputs / name])
        assert result.exit_code == 0 and "same person" in result.output, (name, result.output)


def test_verify_with_alignment_names_an_image_without_a_face(sandbox, model_dir):
    noise, photo = sandbox.inputs / "noise.jpg", sandbox.inputs / "photo.jpg"
    noise.write_bytes(images()["good.jpg"][0])
    photo.write_bytes(Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes())
    message = expect_error(sandbox.invoke(["verify", "--model", model_dir, "--threshold", "0.5", "--align", photo,
                                           noise]), "noise.jpg")
    assert "no face found" in message and "--no-face center-crop" in message
    result = sandbox.invoke(["verify", "--model", model_dir, "--threshold", "0.5", "--align", "--no-face",
                             "center-crop", photo, noise])
    assert result.exit_code in (0, 3), result.output  # same person, or different people: no user error


def test_evaluate_refuses_a_decompression_bomb(sandbox, model_dir):
    images_dir = lfw_folder(sandbox.inputs, {"C/C_0001.jpg": images()["bomb_warning.jpg"][0]})  # 10000 x 10000
    pairs = sandbox.inputs / "pairs.txt"
    pairs.write_bytes(VALID_PAIRS)
    out = sandbox.out("evaluation")
    expect_error(sandbox.invoke(["evaluate", "--model", model_dir, "--images", images_dir, "--pairs", pairs,
                                 "--out", out, "--no-baseline"], out), "C_0001.jpg")


def test_verify_refuses_a_decompression_bomb(sandbox, model_dir):
    bomb, good = sandbox.inputs / "bomb.jpg", sandbox.inputs / "good.jpg"
    bomb.write_bytes(images()["bomb_warning.jpg"][0])  # 10000 x 10000: the largest safe to try here
    good.write_bytes(images()["good.jpg"][0])
    expect_error(sandbox.invoke(["verify", "--model", model_dir, "--threshold", "0.5", good, bomb]), "bomb.jpg")


# --------------------------------------------------------------------------------------------------
# Damaged TFRecords given to train


def damage_shard(records: Path, damage: str) -> str:
    """Damage the first shard (or the manifest) of a copy of a TFRecord directory; the damaged file's name."""
    shard = sorted(records.glob("*.tfrecord"))[0]
    data = shard.read_bytes()
    if damage == "truncated shard":
        shard.write_bytes(data[: len(data) - 100])
    elif damage == "flipped byte":
        shard.write_bytes(data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:])
    else:
        (records / "manifest.json").write_text('{"shards": [')
        return "manifest.json"
    return shard.name


@pytest.mark.parametrize("damage", ["truncated shard", "flipped byte", "malformed manifest"])
def test_damaged_tfrecords_are_a_clear_train_error_naming_the_file(sandbox, trained, damage):
    import shutil

    records = sandbox.inputs / "tfrecords"
    shutil.copytree(trained / "tfrecords", records)
    name = damage_shard(records, damage)
    out = sandbox.out("model")
    result = sandbox.invoke(["train", "--tfrecords", records, "--labels", trained / "labels", "--out", out,
                             "--preset", "tiny", "--epochs", "1", "--batch-size", "8", "--strategy", "cpu",
                             "--feature-max-batches", "1"], out)
    expect_error(result, name)


# --------------------------------------------------------------------------------------------------
# Invalid parameters: stages and pipeline commands


def test_invalid_stage_parameters_are_errors_naming_them(sandbox, trained):
    archive = write_tar(sandbox.inputs / "train.tar.gz", [Member("train/n000001/1.jpg", encode(noise_image(1)))])
    labels, records = trained / "labels", trained / "tfrecords"
    other_labels = sandbox.inputs / "other_labels"
    other_labels.mkdir()
    (other_labels / "classes.txt").write_text("n999998\nn999999\n")
    unfinished = sandbox.inputs / "unfinished"
    unfinished.mkdir()
    (unfinished / "train-00000.tfrecord.done").write_bytes(b"")
    out = sandbox.out("stage")
    train = ["train", "--tfrecords", records, "--labels", labels, "--out", out, "--preset", "tiny"]
    tfrecords = ["tfrecords", "--source", archive, "--labels", labels, "--out", out]
    # Values out of their settings' range: usage errors (exit 2) naming the flag, before anything runs.
    usage = [
        (tfrecords + ["--split", "../../escape"], "--split"),
        (tfrecords + ["--image-size", "0"], "--image-size"),
        (tfrecords + ["--max-bad-fraction", "2"], "--max-bad-fraction"),
        (tfrecords + ["--jpeg-quality", "101"], "--jpeg-quality"),
        (tfrecords + ["--workers", "0"], "--workers"),
        (tfrecords + ["--keep-original"], "--keep-original"),  # a rule between settings: needs --no-align
        (["fetch", "--source", archive, "--out", out, "--md5", "xyz"], "--md5"),
        (train + ["--epochs", "0"], "--epochs"),
        (train + ["--learning-rate", "-1"], "--learning-rate"),
        (train + ["--validation-fraction", "1.5"], "--validation-fraction"),
        (train + ["--steps-per-epoch", "0"], "--steps-per-epoch"),
        (train + ["--batch-size", "0"], "--batch-size"),
    ]
    for args, flag in usage:
        result = sandbox.invoke(args, out)
        assert result.exit_code == 2, result.output
        assert f"Invalid value for '{flag}'" in result.output and "Traceback" not in result.output
        assert not (out / "manifest.json").exists()
    # Values that only the data can refute: user errors (exit 1) naming what is wrong.
    cases = [
        (["fetch", "--source", "ftp://host/a.tgz", "--out", out], "unsupported source"),
        (["fetch", "--source", archive, "--out", "gs://bucket/out"], "gs://bucket/out"),
        (["labels", "--source", sandbox.inputs / "missing.tar.gz", "--out", out], "missing.tar.gz"),
        (train + ["--batch-size", "100000"], "batch_size"),
        (["train", "--tfrecords", records, "--labels", labels, "--out", out, "--preset", "small"], "small"),
        (["train", "--tfrecords", records, "--labels", other_labels, "--out", out, "--preset", "tiny"], "classes"),
        (["train", "--tfrecords", unfinished, "--labels", labels, "--out", out, "--preset", "tiny"], "unfinished"),
    ]
    for args, needle in cases:
        expect_error(sandbox.invoke(args, out), needle)
        assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("params, needle", [
    (["nope=1"], "unknown pipeline parameter 'nope'"),
    (["epoch=3"], "did you mean 'epochs'"),
    (["epochs=three"], "epochs='three': expected an integer"),
    (["learning_rate=fast"], "expected a number"),
    (["augment=maybe"], "expected true or false"),
    (["epochs"], "write NAME=VALUE"),
    (["epochs=2", "epochs=3"], "given twice"),
])
def test_invalid_pipeline_parameters_are_refused_before_anything_runs(sandbox, params, needle):
    from pipelines.cli import main as pipelines_main

    root = sandbox.out("pipeline_root")
    args = ["run-local", "--pipeline-root", root, *(item for param in params for item in ("--param", param))]
    expect_error(sandbox.invoke(args, root, group=pipelines_main), needle)
    assert not root.exists() or not any(root.iterdir())  # no task ran


@pytest.mark.parametrize("options, needle", [
    (["--replicas", "0"], "--replicas 0"),
    (["--replicas", "2"], "needs --training custom-job"),
    (["--accelerator", "TPU_V5_LITEPOD"], "needs --training custom-job"),
    (["--accelerator", "nvidia l4"], "--accelerator 'nvidia l4'"),
    (["--accelerator-count", "0"], "--accelerator-count 0"),
    (["--train-cpu", "lots"], "--train-cpu 'lots'"),
    (["--train-memory", "32 gigs"], "--train-memory '32 gigs'"),
])
def test_invalid_compile_options_are_errors_naming_them(sandbox, options, needle):
    from pipelines.cli import main as pipelines_main

    out = sandbox.out("compiled")
    expect_error(sandbox.invoke(["compile", "--output", out / "pipeline.yaml", *options], out, group=pipelines_main),
                 needle)
    assert not (out / "pipeline.yaml").exists()


@pytest.mark.parametrize("param", ["preset=huge", "epochs=0", "batch_size=-1", "validation_fraction=1.5",
                                   "synthetic_identities=0"])
def test_out_of_range_pipeline_parameters_are_refused_at_submission(param):
    from deepface.errors import DeepFaceError
    from pipelines.local import pipeline_spec_dict
    from pipelines.params import parse_overrides
    from pipelines.pipeline import make_pipeline

    with pytest.raises(DeepFaceError, match=param.split("=")[0]):
        parse_overrides(pipeline_spec_dict(make_pipeline()), [param])
