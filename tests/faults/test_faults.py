"""Fault injection: fetch, tfrecords and train are SIGKILLed at seeded points, rerun, and compared.

Each test runs the stage's command line in a subprocess (tests/faults.py), kills it CI_KILLS times at
seeded points chained in one output directory (each rerun resumes what the kills before it left), runs
it to the end, and checks that nothing was lost or duplicated:

- fetch: files identical (bytes) to an uninterrupted fetch; every resumed download asked the server
  for exactly the bytes its ``.part`` file lacked;
- tfrecords: the output directory identical (every file's bytes) to an uninterrupted build;
- train: each rerun continued from the epoch and step of the last checkpoint its predecessor wrote;
  the runs' steps add up to the steps of one uninterrupted run, with no step done twice, and the
  metrics of every epoch and the final weights are exactly those of an uninterrupted run.

The ``soak`` versions run many more kills (``DEEPFACE_SOAK_KILLS``, seeds from ``DEEPFACE_SOAK_SEED``);
they are skipped unless selected: ``pytest tests/faults/test_faults.py -m soak``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tar
from helpers.faults import (
    CI_KILLS,
    FifoFeeder,
    GatedHttpServer,
    kill_points,
    kill_when,
    run,
    soak_kills,
    soak_seed,
    split_temporaries,
    tree_bytes,
)
from PIL import Image

from deepface.errors import DeepFaceError
from deepface.fetch import CHUNK_SIZE
from deepface.files import read_json
from deepface.labels import build_labels
from deepface.shards import STATE_FILE


@pytest.fixture(autouse=True)
def _soak_only_when_selected(request):
    """``soak`` tests run only when the marker expression selects them (``-m soak``)."""
    if request.node.get_closest_marker("soak") and "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("soak test: run with -m soak")


def report(stage: str, kills: list[dict]) -> None:
    """Print what each kill hit (shown with ``pytest -rP`` or ``-s``)."""
    print(f"\n{stage}: {len(kills)} kills")
    for number, kill in enumerate(kills, start=1):
        print(f"  {number:3d}. " + ", ".join(f"{key}={value}" for key, value in kill.items()))


# --------------------------------------------------------------------------------------------------
# fetch: a download frozen at a seeded byte offset by the server, then killed.


def fetch_payload(seed: int) -> dict[str, bytes]:
    """A few incompressible files of a few MiB (several read chunks each) and an empty one."""
    rng = random.Random(seed)
    files = {
        name: rng.randbytes(rng.randrange(CHUNK_SIZE // 2, 3 * CHUNK_SIZE)) for name in ("a.bin", "b.bin", "c/d.bin")
    }
    return {**files, "empty.bin": b""}


def md5sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.md5(data).hexdigest()}  {name}\n" for name, data in sorted(files.items())).encode()


def first_ranges(server: GatedHttpServer, since: int) -> dict[str, str | None]:
    """The Range header of the first GET of each file among the requests after the first ``since``."""
    ranges = {}
    for request in server.requests[since:]:
        if request.method == "GET":
            ranges.setdefault(request.path.lstrip("/"), request.headers.get("Range"))
    return ranges


def fetch_with_kills(tmp_path: Path, seed: int, kills: int) -> list[dict]:
    files = fetch_payload(seed)
    order = sorted(name for name, data in files.items() if data)  # the order fetch downloads them in
    starts = {name: sum(len(files[n]) for n in order[:i]) for i, name in enumerate(order)}
    reference, out = tmp_path / "reference", tmp_path / "out"
    with GatedHttpServer({**files, "MD5SUMS": md5sums(files)}) as server:
        def args(directory: Path) -> list[str]:
            return ["fetch", "--source", server.url(""), "--out", str(directory), "--retries", "0"]

        run(args(reference), tmp_path / "reference.log")
        done = []
        for number, point in enumerate(kill_points(seed, kills, 0, sum(map(len, files.values())))):
            name = max((n for n in order if starts[n] <= point), key=starts.get)
            offset = point - starts[name]
            part = out / f"{name}.part"

            def frozen_at_gate() -> tuple[int, int] | None:
                """(range start, .part size) once the child wrote every whole chunk before the gate."""
                if not server.stalled.is_set():
                    return None
                _, start, gate = server.stalled_at
                size = part.stat().st_size if part.exists() else -1
                return (start, size) if size == start + (gate - start) // CHUNK_SIZE * CHUNK_SIZE else None

            requests_before = len(server.requests)
            kill = kill_when(
                args(out), frozen_at_gate, log_path=tmp_path / f"kill{number}.log", aim=f"{name} byte {offset}",
                before_start=lambda: server.close_gate(name, offset), after_kill=server.release,
            )
            start, size = kill.observed
            # what the kill left: whole verified files before, an exact prefix in the .part, no manifest
            assert part.read_bytes() == files[name][:size]
            for earlier in order[: order.index(name)]:
                assert (out / earlier).read_bytes() == files[earlier]
            assert not (out / "manifest.json").exists()
            done.append({"file": name, "gate": offset, "range_start": start, "part_bytes": size,
                         "gets": first_ranges(server, requests_before)})
        requests_before = len(server.requests)
        run(args(out), tmp_path / "final.log")
        final_gets = first_ranges(server, requests_before)

    assert tree_bytes(out) == tree_bytes(reference)  # nothing lost, nothing extra, nothing left over
    # Nothing downloaded twice: the next run asked for the bytes after those the killed one kept.
    for kill, next_gets in zip(done, [kill["gets"] for kill in done[1:]] + [final_gets]):
        assert next_gets[kill["file"]] == (f"bytes={kill['part_bytes']}-" if kill["part_bytes"] else None), kill
    for kill in done:
        del kill["gets"]
    return done


def test_fetch_survives_kills_at_seeded_byte_offsets(tmp_path):
    kills = fetch_with_kills(tmp_path, seed=7, kills=CI_KILLS)
    report("fetch", kills)
    assert len(kills) == CI_KILLS


def test_a_fetch_rerun_removes_what_a_kill_left_mid_write(tmp_path):
    """A kill inside the manifest's atomic write leaves its temporary file; the rerun removes it."""
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "a.bin").write_bytes(b"data")
    out = tmp_path / "out"
    out.mkdir()
    fd, _ = tempfile.mkstemp(prefix=".manifest.json.", suffix=".tmp", dir=out)  # what the kill leaves
    os.write(fd, b'{"files": {')
    os.close(fd)
    run(["fetch", "--source", str(tmp_path / "source"), "--out", str(out)], tmp_path / "fetch.log")
    assert sorted(tree_bytes(out)) == ["a.bin", "manifest.json"]


@pytest.mark.soak
def test_fetch_soak(tmp_path):
    report("fetch soak", fetch_with_kills(tmp_path, seed=soak_seed(), kills=soak_kills()))


# --------------------------------------------------------------------------------------------------
# tfrecords: the archive is fed through a named pipe up to a seeded byte, then the build is killed.

SHARD_MB = "0.01"  # ~10 KB: about eight 32-pixel faces per shard, a few dozen shards
TFRECORDS_IMAGE_SIZE = "32"
ARCHIVE_TAIL = 1024  # bytes never fed to a killed run: inside the last image (1.2 KB of incompressible JPEG)


def noise_jpeg(rng: np.random.Generator, size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_faces(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """A VGGFace2-like train archive of 320 tiny noise images (10 chunks of work for the tfrecords
    stage with one worker, 3 tasks with two: kills land between them) and its labels directory."""
    root = tmp_path_factory.mktemp("small_faces")
    rng = np.random.default_rng(3)
    archive = write_tar(root / "train.tar.gz", [(f"train/n{identity:06d}/{image:04d}_01.jpg", noise_jpeg(rng))
                                                for identity in range(8) for image in range(40)])
    build_labels(archive, root / "labels")
    return archive.read_bytes(), root / "labels"


def kept_shards(out: Path) -> int:
    """Complete shards the build state of an unfinished build vouches for."""
    return len(read_json(out / STATE_FILE)["shards"]) if (out / STATE_FILE).exists() else 0


def tfrecords_with_kills(archive: bytes, labels: Path, tmp_path: Path, seed: int, kills: int) -> list[dict]:
    """Two kinds of kill points, drawn with the seed:

    - ``stream``: the pipe gets the archive up to a seeded byte; the kill comes once the build has
      read all of it (1 or 2 worker processes);
    - ``shard``: the pipe gets all but the archive's last ARCHIVE_TAIL bytes; the kill comes once the
      build state lists 1 to 3 (seeded) more complete shards than the run started with, so it lands
      while the next shard is being written (or once all was read, for the shards of the last images).

    The pipe never gets the end of the last image, so no killed run can finish before its kill (the
    stage reads the archive without its last bytes, the gzip trailer, to the end). The kills are
    chained in one output directory until a killed run cannot keep more shards; then the build is
    finished, compared with the reference, and a new chain starts in a new directory.
    """
    stream = tmp_path / "source" / "vggface2_train.tar.gz"  # same name in every run: it is in the manifest
    stream.parent.mkdir()
    reference = tmp_path / "reference"

    def args(directory: Path, workers: int) -> list[str]:
        return ["tfrecords", "--source", str(stream), "--labels", str(labels), "--out", str(directory),
                "--image-size", TFRECORDS_IMAGE_SIZE, "--shard-mb", SHARD_MB, "--workers", str(workers),
                "--no-align"]  # noise images: no faces to align

    def finish(out: Path) -> None:
        feeder = FifoFeeder(stream, archive)
        feeder.start()
        try:
            run(args(out, 2), out.with_suffix(".log"))
        finally:
            feeder.stop()
        assert tree_bytes(out) == tree_bytes(reference)  # every shard and the manifest, byte for byte, nothing else

    stream.write_bytes(archive)
    run(args(reference, 1), tmp_path / "reference.log")
    stream.unlink()
    total_shards = read_json(reference / "manifest.json")["num_shards"]
    rng = random.Random(seed)
    done, chain = [], 0
    for number in range(kills):
        out = tmp_path / f"out{chain}"
        kept_before = kept_shards(out)
        if rng.random() < 0.5:
            point = rng.randrange(1, len(archive) - ARCHIVE_TAIL)
            kill = {"kind": "stream", "archive_byte": point, "workers": rng.choice([1, 2])}
            feeder = FifoFeeder(stream, archive, point)
            condition = feeder.drained
        else:
            target = min(kept_before + rng.randint(1, 3), total_shards)
            kill = {"kind": "shard", "after_shards": target, "workers": 1}
            feeder = FifoFeeder(stream, archive, len(archive) - ARCHIVE_TAIL)
            # the shards of the last images cannot be written: then the kill comes when all is read
            condition = lambda: kept_shards(out) >= target or feeder.drained()  # noqa: E731
        kill_when(args(out, kill["workers"]), condition, log_path=tmp_path / f"kill{number}.log",
                  aim=str(kill), before_start=feeder.start, after_kill=feeder.stop)
        # the kill left nothing that looks complete: no manifest, no shard under a final name
        assert not (out / "manifest.json").exists()
        assert not list(out.glob("*-of-*.tfrecord"))
        done.append({**kill, "chain": chain, "shards_kept": f"{kept_before}->{kept_shards(out)} of {total_shards}",
                     "shard_in_progress": bool(list(out.glob(".*.tfrecord.done.tmp")))})
        if kill["kind"] == "shard" and kept_shards(out) < target:  # as far as a killed run gets: start anew
            finish(out)
            chain += 1
    if (tmp_path / f"out{chain}").exists():
        finish(tmp_path / f"out{chain}")
    return done


@pytest.mark.slow
def test_tfrecords_survives_kills_at_seeded_archive_offsets(small_faces, tmp_path):
    kills = tfrecords_with_kills(*small_faces, tmp_path, seed=11, kills=CI_KILLS)
    report("tfrecords", kills)
    assert len(kills) == CI_KILLS
    assert {kill["kind"] for kill in kills} == {"stream", "shard"}


@pytest.mark.soak
def test_tfrecords_soak(small_faces, tmp_path):
    report("tfrecords soak", tfrecords_with_kills(*small_faces, tmp_path, seed=soak_seed(), kills=soak_kills()))


def test_a_tfrecords_rerun_removes_what_a_kill_left_mid_write(tmp_path):
    """An unfinished build (too many bad images) plus the temporary file a kill inside write_json
    leaves; the rerun that finishes the build must not leave it in the output directory."""
    from deepface.tfrecords import build_tfrecords

    rng = np.random.default_rng(0)
    members = {f"train/id{i % 2}/{i:02d}.jpg": noise_jpeg(rng) for i in range(6)}
    members["train/id0/truncated.jpg"] = members["train/id0/00.jpg"][:200]
    archive = write_tar(tmp_path / "train.tar.gz", list(members.items()))
    build_labels(archive, tmp_path / "labels")
    out = tmp_path / "out"
    with pytest.raises(DeepFaceError, match="max_bad_fraction"):
        build_tfrecords(archive, tmp_path / "labels", out, image_size=32, max_bad_fraction=0.0, align=False, workers=1)
    assert (out / STATE_FILE).exists()
    fd, _ = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=out)  # what the kill leaves
    os.write(fd, (out / STATE_FILE).read_bytes()[:50])
    os.close(fd)

    build_tfrecords(archive, tmp_path / "labels", out, image_size=32, max_bad_fraction=0.5, align=False, workers=1)
    assert split_temporaries(tree_bytes(out))[1] == []


# --------------------------------------------------------------------------------------------------
# train: killed once its checkpoints reach a seeded global step (or while it exports the model).

TRAIN_STEPS_PER_EPOCH = 4


def latest_checkpoint(model_dir: Path) -> int:
    """Global step of the checkpoint a restarted run resumes from (0: none yet)."""
    state = model_dir / "checkpoints" / "checkpoint"
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.M) if state.exists() else None
    return int(match.group(1)) if match else 0


def inode(path: Path) -> int | None:
    return path.stat().st_ino if path.exists() else None


def classifier_weights(model_dir: Path) -> list[np.ndarray]:
    import keras

    import deepface.layers  # noqa: F401  (registers LocallyConnected2D for loading)

    return keras.saving.load_model(model_dir / "classifier.keras", compile=False).get_weights()


def train_with_kills(tfrecords: Path, labels: Path, tmp_path: Path, seed: int, kills: int) -> list[dict]:
    """Kill points are global steps drawn with the seed; every step is checkpointed, and there are a
    few more steps than kills (4 per epoch), so each kill lands on its own checkpoint or on the export."""
    epochs = -(-(kills + 2) // TRAIN_STEPS_PER_EPOCH)
    total = epochs * TRAIN_STEPS_PER_EPOCH
    out = tmp_path / "model"
    args = ["train", "--tfrecords", str(tfrecords), "--labels", str(labels), "--out", str(out), "--preset", "tiny",
            "--epochs", str(epochs), "--steps-per-epoch", str(TRAIN_STEPS_PER_EPOCH), "--batch-size", "8",
            "--checkpoint-steps", "1", "--feature-max-batches", "1", "--shuffle-buffer", "64", "--strategy", "cpu"]
    positions, done = [0], []
    for number, point in enumerate(kill_points(seed, kills, 1, total + 1)):
        start = positions[-1]
        if start < total:  # wait for a checkpoint past both the drawn step and the start
            target = max(point, start + 1)
            aim = f"checkpoint of step {target}"
            condition = lambda: latest_checkpoint(out) >= target  # noqa: E731
        else:  # training is complete: kill the export, once it has replaced the classifier file
            classifier, before = out / "classifier.keras", inode(out / "classifier.keras")
            aim = "model export"
            condition = lambda: inode(classifier) not in (None, before)  # noqa: E731
        kill_when(args, condition, log_path=tmp_path / f"kill{number}.log", aim=aim)
        assert not (out / "manifest.json").exists()  # a killed run never looks complete
        positions.append(latest_checkpoint(out))
        done.append({"aim": aim, "resumed_at_step": start, "checkpoint_at_kill": positions[-1]})
    run(args, tmp_path / "final.log")
    reference = tmp_path / "reference"
    run([str(reference) if arg == str(out) else arg for arg in args], tmp_path / "reference.log")

    # The same training as an uninterrupted run: metrics of every epoch and final weights, exactly.
    history = json.loads((out / "history.json").read_text())
    assert history["metrics"] == json.loads((reference / "history.json").read_text())["metrics"]
    for resumed, uninterrupted in zip(classifier_weights(out), classifier_weights(reference), strict=True):
        np.testing.assert_array_equal(resumed, uninterrupted)
    assert history["optimizer_steps"] == total  # every step done once: none lost, none repeated
    assert all(len(values) == epochs for values in history["metrics"].values())
    # Each run continued at the epoch and step of the last checkpoint before it; runs killed before
    # their first checkpoint left no trace, and the steps of the runs add up to one uninterrupted run.
    expected = [(start, end - start) for start, end in zip(positions, positions[1:]) if end > start]
    expected.append((positions[-1], total - positions[-1]))
    assert [(divmod(start, TRAIN_STEPS_PER_EPOCH), steps) for start, steps in expected] == [
        ((run["start_epoch"], run["start_step"]), run["steps"]) for run in history["runs"]
    ]
    assert sum(run["steps"] for run in history["runs"]) == total
    assert (out / "manifest.json").exists() and not (out / "checkpoints").exists()
    assert split_temporaries(tree_bytes(out))[1] == []  # nothing a kill left mid-write
    return done


@pytest.mark.slow
def test_train_survives_kills_at_seeded_checkpoints(train_inputs, tmp_path):
    kills = train_with_kills(*train_inputs, tmp_path, seed=5, kills=CI_KILLS)
    report("train", kills)
    assert len(kills) == CI_KILLS


@pytest.mark.soak
def test_train_soak(train_inputs, tmp_path):
    report("train soak", train_with_kills(*train_inputs, tmp_path, seed=soak_seed(), kills=soak_kills(30)))


def test_a_train_rerun_removes_what_a_kill_left_mid_write(train_inputs, tmp_path):
    from deepface.train import train

    out = tmp_path / "model"
    out.mkdir()
    fd, _ = tempfile.mkstemp(prefix=".classifier.keras.", suffix=".tmp", dir=out)  # what a kill in export leaves
    os.write(fd, b"PK\x03\x04 half a zip")
    os.close(fd)
    train(*train_inputs, out, preset="tiny", epochs=1, batch_size=8, steps_per_epoch=1, checkpoint_steps=0,
          feature_max_batches=1, strategy="cpu")
    assert split_temporaries(tree_bytes(out))[1] == []
