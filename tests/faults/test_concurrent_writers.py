"""Two runs writing into one output directory, and consumers of half-written outputs (issue 14).

Writers: every stage holds its output directory's lock (`deepface.outputs`) while it writes. Two real
``deepface`` processes into one directory end with exactly one writing it and the other refused by one
line naming the holder; the output that remains reads back whole (CRCs, image size, counts). The trials
are synchronised on the lock file (the first run is stopped with SIGSTOP once it holds the lock, and
continued after the second run has exited), and, without synchronisation, on nothing at all (a race).

Consumers: evaluate and verify refuse a model directory without train's complete manifest (what a
SIGKILLed ``train --overwrite`` leaves); train refuses TFRecords or labels without their complete
manifest or whose manifest disagrees with the files, and a class map whose F8 layer is too large.
"""

from __future__ import annotations

import collections
import io
import json
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tar
from helpers.faults import DEADLINE_SECONDS, Child, FifoFeeder, await_point, kill_when, run
from PIL import Image

from deepface.contracts import MANIFEST_FILE, check_model_dir
from deepface.errors import DeepFaceError
from deepface.files import read_json, write_json
from deepface.labels import build_labels
from deepface.outputs import LOCK_FILE

TRIALS = 10  # per kind of tfrecords trial
TRAIN_TRIALS = 3  # two trainings cost about 20 s on 2 cores
IMAGES = 320
SHARD_MB = "0.01"  # about eight 32-pixel faces per shard: some 40 shards, written one after another
LOCK_ERROR = re.compile(r"^Error: (?P<out>\S+) is being written by another run \(deepface (?P<stage>\w+), pid "
                        r"(?P<pid>\d+) on host \S+ since \S+\): wait for it to end, or choose another output "
                        r"directory\.$", re.M)


def noise_jpeg(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_faces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A VGGFace2-like train archive of IMAGES noise images of 8 identities, and its labels directory."""
    root = tmp_path_factory.mktemp("small_faces")
    rng = np.random.default_rng(7)
    archive = write_tar(root / "train.tar.gz", [(f"train/n{identity:06d}/{image:04d}_01.jpg", noise_jpeg(rng))
                                                for identity in range(8) for image in range(IMAGES // 8)])
    build_labels(archive, root / "labels")
    return archive, root / "labels"


def tfrecords_args(source: Path, labels: Path, out: Path, image_size: int) -> list[str]:
    return ["tfrecords", "--source", str(source), "--labels", str(labels), "--out", str(out), "--image-size",
            str(image_size), "--shard-mb", SHARD_MB, "--workers", "1", "--no-align"]


def lock_holder(out: Path) -> int | None:
    """The pid named in ``out``'s lock file, None while there is none (or it is being written)."""
    try:
        return json.loads((out / LOCK_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def verify_tfrecords(out: Path, image_size: int, num_classes: int) -> int:
    """Reads every record back as training does (TFRecord CRCs checked by TensorFlow) and checks it against
    the manifest: the directory holds exactly the shards and the manifest, each shard of its listed size
    and record count, every image a JPEG of ``image_size``, every label a class. Returns the records."""
    import tensorflow as tf

    from deepface.data import parse_example

    manifest = read_json(out / MANIFEST_FILE)
    assert manifest["image_size"] == image_size
    shards = [shard["file"] for shard in manifest["shards"]]
    assert sorted(path.name for path in out.iterdir()) == sorted([MANIFEST_FILE, *shards])  # nothing else
    total = 0
    for shard in manifest["shards"]:
        path = out / shard["file"]
        assert path.stat().st_size == shard["bytes"]
        records = 0
        for serialized in tf.data.TFRecordDataset(str(path)):  # a bad CRC raises DataLossError
            example = parse_example(serialized)
            image = Image.open(io.BytesIO(example["image/encoded"].numpy()))
            assert (image.format, image.size) == ("JPEG", (image_size, image_size))
            assert 0 <= int(example["image/class/label"]) < num_classes
            records += 1
        assert records == shard["records"]
        total += records
    assert total == manifest["num_records"] == IMAGES
    return total


def refused_by_lock(log: str, out: Path, stage: str, pid: int | None = None) -> bool:
    """Whether a run's log ends in the one-line lock error for ``out`` (held by ``pid``), without a traceback."""
    match = LOCK_ERROR.search(log)
    return (match is not None and "Traceback" not in log and match["out"] == str(out) and match["stage"] == stage
            and (pid is None or int(match["pid"]) == pid))


def second_run_while_first_holds_the_lock(first_args: list[str], second_args: list[str], out: Path,
                                          logs: Path) -> tuple[int, int, str, int]:
    """Starts the first run; once it holds ``out``'s lock, stops it (SIGSTOP to its group), runs the second
    to its end, continues the first and waits for it. Returns both exit codes, the second's log, the first's pid."""
    first = Child(first_args, logs / "first.log")
    try:
        await_point(first, lambda: lock_holder(out) == first.process.pid, "first run", "lock")
        os.killpg(first.process.pid, signal.SIGSTOP)
        try:
            second = Child(second_args, logs / "second.log")
            second_code = second.wait(timeout=DEADLINE_SECONDS)
        finally:
            os.killpg(first.process.pid, signal.SIGCONT)
        first_code = first.wait(timeout=DEADLINE_SECONDS)
    finally:
        if first.process.returncode is None:
            first.kill()
    return first_code, second_code, second.log(), first.process.pid


# --------------------------------------------------------------------------------------------------
# tfrecords


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["same", "different"])
def test_a_second_build_into_a_running_one_s_directory_is_refused(small_faces, tmp_path, settings):
    archive, labels = small_faces
    sizes = (32, 32) if settings == "same" else (32, 40)
    for trial in range(TRIALS):
        out, logs = tmp_path / f"out{trial}", tmp_path / f"logs{trial}"
        logs.mkdir()
        first_code, second_code, second_log, first_pid = second_run_while_first_holds_the_lock(
            tfrecords_args(archive, labels, out, sizes[0]), tfrecords_args(archive, labels, out, sizes[1]), out, logs)
        assert (first_code, second_code) == (0, 1), second_log
        assert refused_by_lock(second_log, out, "tfrecords", first_pid), second_log
        assert verify_tfrecords(out, sizes[0], 8) == IMAGES


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["same", "different"])
def test_two_builds_started_together_leave_one_whole_build(small_faces, tmp_path, settings):
    """No synchronisation: the runs overlap as they will. Whichever way they meet, the one that wrote the
    build exits 0 and the directory verifies; the other is refused by the lock, or finds the finished build
    (same settings: nothing to do, exit 0; other settings: one-line error). Never a traceback."""
    archive, labels = small_faces
    sizes = (32, 32) if settings == "same" else (32, 40)
    outcomes = collections.Counter()
    for trial in range(TRIALS):
        out = tmp_path / f"out{trial}"
        children = [Child(tfrecords_args(archive, labels, out, size), tmp_path / f"run{trial}-{k}.log")
                    for k, size in enumerate(sizes)]
        codes = [child.wait(timeout=DEADLINE_SECONDS) for child in children]
        logs = [child.log() for child in children]
        built = read_json(out / MANIFEST_FILE)["image_size"]
        assert verify_tfrecords(out, built, 8) == IMAGES
        trial_outcomes = [race_outcome(code, log, out) for code, log in zip(codes, logs, strict=True)]
        assert trial_outcomes.count("wrote the build") == 1, logs
        writer = trial_outcomes.index("wrote the build")
        assert sizes[writer] == built
        other = trial_outcomes[1 - writer]
        assert other in ("refused by the lock", "found the finished build" if settings == "same" else
                         "found the finished build of other settings"), logs
        outcomes.update(trial_outcomes)
    print(f"\n{TRIALS} races of builds with {settings} settings: {dict(outcomes)}")
    assert outcomes["wrote the build"] == TRIALS


def race_outcome(code: int, log: str, out: Path) -> str:
    """How a run of a race ended, from its exit code and log; fails on anything but the four clean ends."""
    assert "Traceback" not in log, log
    if code == 1 and refused_by_lock(log, out, "tfrecords"):
        return "refused by the lock"
    if code == 1 and re.search(r"^Error: \S+ already holds a finished build with other settings", log, re.M):
        return "found the finished build of other settings"
    assert code == 0, log
    return "found the finished build" if "already holds this build" in log else "wrote the build"


def test_a_killed_build_does_not_block_its_rerun(small_faces, tmp_path):
    """The killed run's lock file stays behind (naming the dead process); the rerun takes it over, finishes
    the build and removes it."""
    archive, labels = small_faces
    stream, out = tmp_path / "train.tar.gz", tmp_path / "out"  # the same source name in both runs
    data = archive.read_bytes()
    feeder = FifoFeeder(stream, data, len(data) - 1024)  # the killed run never reads the end of the archive
    kill = kill_when(tfrecords_args(stream, labels, out, 32), lambda: feeder.drained() and lock_holder(out),
                     log_path=tmp_path / "killed.log", aim="a build holding the lock", before_start=feeder.start,
                     after_kill=feeder.stop)
    assert lock_holder(out) == kill.observed != os.getpid()  # the dead run's lock file
    assert not (out / MANIFEST_FILE).exists(), kill.log
    feeder = FifoFeeder(stream, data)
    feeder.start()
    try:
        run(tfrecords_args(stream, labels, out, 32), tmp_path / "rerun.log")
    finally:
        feeder.stop()
    assert verify_tfrecords(out, 32, 8) == IMAGES  # no lock file, no temporary, no state file left


# --------------------------------------------------------------------------------------------------
# train, evaluate, verify


def train_args(tfrecords: Path, labels: Path, out: Path, seed: int, *extra: str) -> list[str]:
    return ["train", "--tfrecords", str(tfrecords), "--labels", str(labels), "--out", str(out), "--preset", "tiny",
            "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8", "--checkpoint-steps", "1",
            "--feature-max-batches", "1", "--strategy", "cpu", "--seed", str(seed), *extra]


@pytest.fixture(scope="module")
def trained(train_inputs, tmp_path_factory) -> Path:
    """The model directory left by TRAIN_TRIALS trials of two trainings into it (the last trial's)."""
    tfrecords, labels = train_inputs
    root = tmp_path_factory.mktemp("two_trainings")
    for trial in range(TRAIN_TRIALS):
        out, logs = root / f"model{trial}", root / f"logs{trial}"
        logs.mkdir()
        first_code, second_code, second_log, first_pid = second_run_while_first_holds_the_lock(
            train_args(tfrecords, labels, out, 1), train_args(tfrecords, labels, out, 2), out, logs)
        assert (first_code, second_code) == (0, 1), second_log + (logs / "first.log").read_text()[-3000:]
        assert refused_by_lock(second_log, out, "train", first_pid), second_log
        check_model_dir(out)  # complete: every file at its manifest's size
        assert read_json(out / "metadata.json")["settings"]["seed"] == 1  # the first run's model, not the second's
        assert len(read_json(out / "history.json")["runs"]) == 1  # one run trained it: nothing mislabelled
        assert not (out / LOCK_FILE).exists()
    return out


@pytest.mark.slow
def test_a_second_training_into_a_running_one_s_directory_is_refused(trained):
    assert (trained / MANIFEST_FILE).exists()


@pytest.mark.slow
def test_a_killed_overwrite_leaves_a_model_directory_evaluate_and_verify_refuse(trained, train_inputs, tmp_path):
    from deepface.evaluate import evaluate
    from deepface.verify import verify

    model = tmp_path / "model"
    shutil.copytree(trained, model)
    classifier = (model / "classifier.keras").read_bytes()
    kill_when(train_args(*train_inputs, model, 1, "--overwrite"), lambda: not (model / MANIFEST_FILE).exists(),
              log_path=tmp_path / "overwrite.log", aim="train --overwrite once the old manifest is gone")
    assert (model / "classifier.keras").read_bytes() == classifier  # the old model, no longer vouched for
    refusal = rf"^{re.escape(str(model))} has no manifest.json: it is not a complete model directory"
    with pytest.raises(DeepFaceError, match=refusal):
        evaluate(model, tmp_path / "lfw.tgz", tmp_path / "pairs.txt", tmp_path / "evaluation")
    assert not (tmp_path / "evaluation" / "metrics.json").exists()
    with pytest.raises(DeepFaceError, match=refusal):
        verify(model, tmp_path / "a.jpg", tmp_path / "b.jpg", threshold=0.5)
    for name in ("lfw.tgz", "pairs.txt"):  # the command line checks that they exist; the model is refused first
        (tmp_path / name).write_bytes(b"")
    log = run(["evaluate", "--model", str(model), "--images", str(tmp_path / "lfw.tgz"), "--pairs",
               str(tmp_path / "pairs.txt"), "--out", str(tmp_path / "evaluation")], tmp_path / "evaluate.log", expect=1)
    assert re.search(rf"^Error: {re.escape(str(model))} has no manifest.json", log, re.M), log

    # The interrupted overwrite is finished by its rerun, and then the model is usable again.
    run(train_args(*train_inputs, model, 1, "--overwrite"), tmp_path / "rerun.log")
    assert check_model_dir(model)["stage"] == "train"


# --------------------------------------------------------------------------------------------------
# train refuses inputs without their complete manifest


def copy_inputs(train_inputs, root: Path) -> tuple[Path, Path]:
    tfrecords, labels = root / "tfrecords", root / "labels"
    shutil.copytree(train_inputs[0], tfrecords)
    shutil.copytree(train_inputs[1], labels)
    return tfrecords, labels


def without_labels_manifest(tfrecords: Path, labels: Path) -> str:
    (labels / MANIFEST_FILE).unlink()  # an interrupted labels stage: classes.txt written, no manifest
    return r"labels.manifest.json not found: labels_dir must be a finished output of `deepface labels`"


def labels_manifest_of_other_classes(tfrecords: Path, labels: Path) -> str:
    manifest = read_json(labels / MANIFEST_FILE)
    write_json(labels / MANIFEST_FILE, {**manifest, "num_classes": manifest["num_classes"] + 1})
    return r"labels.manifest.json does not vouch for classes.txt beside it \(num_classes differ"


def without_tfrecords_manifest(tfrecords: Path, labels: Path) -> str:
    (tfrecords / MANIFEST_FILE).unlink()
    return r"tfrecords.manifest.json not found: tfrecords_dir must be a finished output"


def tfrecords_manifest_of_other_counts(tfrecords: Path, labels: Path) -> str:
    manifest = read_json(tfrecords / MANIFEST_FILE)
    write_json(tfrecords / MANIFEST_FILE, {**manifest, "num_records": manifest["num_records"] * 2})
    return r"tfrecords.manifest.json says num_records \d+ but its shards add up to \d+"


@pytest.mark.parametrize("breaker", [without_labels_manifest, labels_manifest_of_other_classes,
                                     without_tfrecords_manifest, tfrecords_manifest_of_other_counts])
def test_train_refuses_inputs_their_manifests_do_not_vouch_for(train_inputs, tmp_path, breaker):
    from deepface.train import train

    tfrecords, labels = copy_inputs(train_inputs, tmp_path)
    message = breaker(tfrecords, labels)
    out = tmp_path / "model"
    with pytest.raises(DeepFaceError, match=message):
        train(tfrecords, labels, out, preset="tiny", epochs=1, batch_size=8, strategy="cpu")
    assert not out.exists()  # refused before anything is written


def test_a_class_map_too_large_for_f8_is_refused_and_classes_without_records_are_logged(caplog):
    from deepface.model import get_config
    from deepface.train.inputs import MAX_F8_BYTES, check_class_count

    paper, tiny = get_config("paper"), get_config("tiny")
    million = [f"n{k:07d}" for k in range(1_000_000)]
    with pytest.raises(DeepFaceError, match=r"^labels_dir labels: its classes.txt lists 1,000,000 classes, for which "
                       r"the F8 layer of preset 'paper' would hold 15.3 GiB of weights, more than the 4 GiB limit"):
        check_class_count(paper, million, 40, "labels")
    assert (tiny.f7_units + 1) * len(million) * 4 < MAX_F8_BYTES
    with caplog.at_level("WARNING", logger="deepface.train.inputs"):
        check_class_count(tiny, million, 40, "labels")
    assert caplog.messages == ["labels_dir labels lists 1000000 classes but the training data holds 40 records: at "
                               "least 999960 classes have no record (check that labels_dir matches the TFRecords)"]
