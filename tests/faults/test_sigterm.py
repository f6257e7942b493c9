"""SIGTERM (what Kubernetes and Vertex AI send before SIGKILL when they stop or preempt a task) to the
main process of a stage running a pool of workers: tfrecords and synth, as their command lines.

Each test sends SIGTERM to the main process only, as the platform does, once the stage is writing and
its pool processes run, and checks: exit status 143 (128 + 15) with one log line saying so and that a
rerun resumes; no process of the stage left (pool processes, forkserver, resource tracker: the
stage's process group is empty); nothing unfinished left in the output; and a rerun finishing
byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tar
from helpers.faults import (
    GRACE_SECONDS,
    TERMINATED_EXIT,
    FifoFeeder,
    Termination,
    run,
    split_temporaries,
    terminate_when,
    tree_bytes,
)
from PIL import Image

from deepface.files import TEMPORARY_GLOB, read_json
from deepface.labels import build_labels
from deepface.shards import STATE_FILE
from deepface.tfrecords import POOL_CHUNK_SIZE

STOPPED = re.compile(r"Stopped by SIGTERM: .*run the same command again to resume \(exit status 143\)")
WORKERS = 2  # one pool process besides the main one
POOL_PROCESSES = WORKERS - 1 + 2  # what the main process runs: pool processes, forkserver, resource tracker


def check_stopped(termination: Termination) -> None:
    """Exit status 143 and the log line, no traceback, and no process of the stage left."""
    log = termination.log
    assert termination.returncode == TERMINATED_EXIT, log[-4000:]
    assert len(STOPPED.findall(log)) == 1, log[-4000:]
    assert "Traceback" not in log, log[-4000:]
    commands = list(termination.processes.values())
    assert len(commands) >= POOL_PROCESSES, commands
    assert any("multiprocessing.forkserver" in command for command in commands), commands
    assert any("multiprocessing.resource_tracker" in command for command in commands), commands
    assert termination.left == {}, f"left running {GRACE_SECONDS} s after the exit: {termination.left}"
    # all of it ended within the time the platform leaves between SIGTERM and SIGKILL
    assert termination.exit_seconds + termination.group_seconds < GRACE_SECONDS


def report(stage: str, termination: Termination) -> None:
    print(f"\n{stage}: SIGTERM at {termination.observed}; exit {termination.returncode} after "
          f"{termination.exit_seconds:.2f} s, process group empty {termination.group_seconds:.2f} s later; "
          f"processes before: {len(termination.processes)}")


# --------------------------------------------------------------------------------------------------
# tfrecords: the archive is fed through a named pipe without its end; SIGTERM once shards are written.

SHARD_MB = "0.02"  # ~20 KB: a few dozen 32-pixel faces per shard, so the first task's records fill shards
IMAGE_SIZE = "32"
# Tasks fed whole before the pipe stalls: ordered_map keeps at most 2 * WORKERS + 2 in flight, so with
# more the main process waits for the first result and writes it, whatever the timing.
WHOLE_TASKS = 2 * WORKERS + 4
ARCHIVE_TAIL = 4096  # bytes never fed to the terminated run: inside the last image (12 KB of noise)


@pytest.fixture(scope="module")
def faces_archive(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """The synthetic train faces, repeated under other identity names up to WHOLE_TASKS tasks of the
    stage and part of one more, ending with a 12 KB noise image; and the labels directory."""
    root = tmp_path_factory.mktemp("sigterm_faces")
    with tarfile.open(synth_dir / "vggface2_train.tar.gz") as source:
        faces = [(member.name, source.extractfile(member).read()) for member in source if member.isfile()]
    copies = -(-WHOLE_TASKS * POOL_CHUNK_SIZE // len(faces)) + 1
    members = []
    for copy in range(copies):
        for name, data in faces:
            split, identity, image = name.split("/")
            members.append((f"{split}/{identity}c{copy:02d}/{image}", data))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    members.append((f"{split}/{identity}c00/noise.png", png(noise)))
    assert len(members) > WHOLE_TASKS * POOL_CHUNK_SIZE + 1
    archive = write_tar(root / "train.tar.gz", members)
    build_labels(archive, root / "labels")
    return archive.read_bytes(), root / "labels"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def kept_shards(out: Path) -> int:
    """Complete shards the build state of an unfinished build vouches for."""
    return len(read_json(out / STATE_FILE)["shards"]) if (out / STATE_FILE).exists() else 0


def test_sigterm_stops_a_tfrecords_build_and_a_rerun_resumes_it(faces_archive, tmp_path):
    archive, labels = faces_archive
    stream = tmp_path / "source" / "vggface2_train.tar.gz"  # the same name in every run: it is in the manifest
    stream.parent.mkdir()
    reference, out = tmp_path / "reference", tmp_path / "out"

    def args(directory: Path) -> list[str]:
        return ["tfrecords", "--source", str(stream), "--labels", str(labels), "--out", str(directory),
                "--image-size", IMAGE_SIZE, "--shard-mb", SHARD_MB, "--workers", str(WORKERS), "--no-align"]

    stream.write_bytes(archive)
    run(args(reference), tmp_path / "reference.log")
    stream.unlink()

    feeder = FifoFeeder(stream, archive, len(archive) - ARCHIVE_TAIL)  # never the end: the build cannot finish
    termination = terminate_when(args(out), lambda: kept_shards(out), min_processes=POOL_PROCESSES,
                                 log_path=tmp_path / "term.log", aim="complete shards",
                                 before_start=feeder.start, after_exit=feeder.stop)
    report("tfrecords", termination)
    check_stopped(termination)
    # What is complete is kept and vouched for; nothing unfinished is left (the open shard is discarded).
    kept = kept_shards(out)
    assert kept >= termination.observed
    assert split_temporaries(tree_bytes(out))[1] == []
    assert not list(out.glob(TEMPORARY_GLOB))
    assert not (out / "manifest.json").exists() and not list(out.glob("*-of-*.tfrecord"))
    # every shard the state vouches for is there (one completed after the state was last saved may be
    # too: the rerun removes it and writes it again)
    assert all((out / shard["file"]).is_file() for shard in read_json(out / STATE_FILE)["shards"])

    feeder = FifoFeeder(stream, archive)
    feeder.start()
    try:
        log = run(args(out), tmp_path / "rerun.log")
    finally:
        feeder.stop()
    assert f"resuming: {kept} complete shards" in log
    assert tree_bytes(out) == tree_bytes(reference)  # every shard and the manifest, byte for byte, nothing else


# --------------------------------------------------------------------------------------------------
# synth: SIGTERM once the train archive is being written.

SYNTH = ["--train-identities", "16", "--test-identities", "4", "--lfw-identities", "4", "--images-per-identity",
         "10", "--image-size", "40", "--lfw-image-size", "40"]
STARTED_BYTES = 16384  # of the train archive's temporary file: images came back from the pool


def test_sigterm_stops_synth_and_a_rerun_writes_the_same_dataset(tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "out"
    run(["synth", "--out", str(reference), *SYNTH, "--workers", "1"], tmp_path / "reference.log")

    def writing() -> int:
        """Bytes of the train archive's temporary file, once it holds STARTED_BYTES (0 before)."""
        sizes = [0]
        for path in out.glob(".vggface2_train.tar.gz.*.tmp"):
            with contextlib.suppress(FileNotFoundError):  # renamed meanwhile
                sizes.append(path.stat().st_size)
        return max(sizes) if max(sizes) >= STARTED_BYTES else 0

    args = ["synth", "--out", str(out), *SYNTH, "--workers", str(WORKERS)]
    termination = terminate_when(args, writing, min_processes=POOL_PROCESSES, log_path=tmp_path / "term.log",
                                 aim="train archive being written")
    report("synth", termination)
    check_stopped(termination)
    assert list(out.iterdir()) == []  # the unfinished archive is discarded, and MD5SUMS was removed first

    run(args, tmp_path / "rerun.log")
    assert tree_bytes(out) == tree_bytes(reference)
