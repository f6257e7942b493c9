"""A killed local pipeline run is resumed, not started over (pipelines.run_folders).

The pipeline runs as its real command line (``python -m pipelines run-local``) in a subprocess, is
SIGKILLed (its whole process group: kfp.local and the train task) once train has written a checkpoint,
and is run again with the same parameters. The rerun must run in the killed run's folder (no second run
folder), take the finished stages from the cache, resume train from the checkpoint the kill left, and end
with the training history and evaluation metrics of an uninterrupted run. The clean-up of dead runs that
are not resumed is checked on run folders laid out as kfp.local leaves them.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

import pytest
from helpers.faults import PIPELINES, checkpoint_step, kill_when, run

from pipelines.run_folders import RUN_FILE, TASK_DONE, open_run

# 6 identities of 8 images, batch 16: 3 steps per epoch, a checkpoint at the end of each epoch.
PARAMS = {"synthetic_identities": 6, "synthetic_images_per_identity": 8, "epochs": 4, "batch_size": 16}
NOT_RUNS = {".kfp_cache", "logs"}


def args(root: Path) -> list[str]:
    return ["run-local", "--pipeline-root", str(root), *(f"--param={name}={value}" for name, value in PARAMS.items())]


def run_folders(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir() and path.name not in NOT_RUNS)


def statuses(report: str) -> dict[str, str]:
    """stage -> ran / cached, from the report `LocalRun.format` prints."""
    return dict(re.findall(r"^(\w+) +(ran|cached) +[0-9.]+  ", report, re.M))


@pytest.mark.slow
def test_a_killed_local_run_resumes_train_from_its_checkpoint(tmp_path):
    root = tmp_path / "runs"

    def checkpointed() -> list[Path]:  # train's checkpoint folders holding a complete checkpoint
        return [path for path in root.glob("*/train/model/checkpoints") if checkpoint_step(path) > 0]

    kill = kill_when(args(root), checkpointed, log_path=tmp_path / "killed.log", program=PIPELINES,
                     aim="train, after its first checkpoint")
    (checkpoints,) = kill.observed
    killed_run, step_at_kill = checkpoints.parents[2], checkpoint_step(checkpoints)
    model = killed_run / "train" / "model"
    assert not (model / "manifest.json").exists()  # killed while training

    report = run(args(root), tmp_path / "rerun.log", program=PIPELINES)
    assert run_folders(root) == [killed_run]  # the killed run's folder was reused, no new one
    assert "Resuming from" in report
    assert statuses(report) == {"fingerprint": "ran", "synth": "cached", "fetch": "cached", "labels": "cached",
                                "tfrecords": "cached", "train": "ran", "evaluate": "ran"}
    history = json.loads((model / "history.json").read_text())
    steps_per_epoch = history["steps_per_epoch"]
    assert [(run["start_epoch"], run["start_step"]) for run in history["runs"]] == [
        (0, 0), divmod(step_at_kill, steps_per_epoch)]
    assert sum(run["steps"] for run in history["runs"]) == PARAMS["epochs"] * steps_per_epoch  # none twice
    assert (model / "manifest.json").exists() and not (model / "checkpoints").exists()
    assert json.loads((killed_run / RUN_FILE).read_text())["complete"] is True

    # An uninterrupted run: the same training history and evaluation, exactly.
    reference_root = tmp_path / "reference"
    run(args(reference_root), tmp_path / "reference.log", program=PIPELINES)
    (reference_run,) = run_folders(reference_root)
    reference = json.loads((reference_run / "train" / "model" / "history.json").read_text())
    assert history["metrics"] == reference["metrics"]
    metrics = [json.loads((folder / "evaluate" / "evaluation" / "metrics.json").read_text())["summary"]
               for folder in (killed_run, reference_run)]
    assert metrics[0] == metrics[1]


# --------------------------------------------------------------------------------------------------
# Which folders a new run takes over or cleans, on run folders laid out as kfp.local leaves them.


def make_run(root: Path, name: str, identity: dict | None, *, complete: bool = False, finished=(), unfinished=()):
    """A run folder: its run file (none when ``identity`` is None), task folders that finished (holding
    executor_output.json) and task folders a kill left (a partial output)."""
    folder = root / name
    folder.mkdir(parents=True)
    if identity is not None:
        (folder / RUN_FILE).write_text(json.dumps({"identity": identity, "complete": complete}))
    for task in finished:
        (folder / task / "out").mkdir(parents=True)
        (folder / task / TASK_DONE).write_text("{}")
    for task in unfinished:
        (folder / task / "model" / "checkpoints").mkdir(parents=True)
    return folder


def test_a_new_run_takes_over_its_own_killed_run_and_cleans_the_others(tmp_path):
    same, other = {"parameters": {"epochs": 2}}, {"parameters": {"epochs": 3}}
    older_same = make_run(tmp_path, "p-2024-01-01", same, finished=["synth"], unfinished=["train"])
    newer_same = make_run(tmp_path, "p-2024-01-02", same, finished=["synth"], unfinished=["train"])
    changed = make_run(tmp_path, "p-2024-01-03", other, finished=["synth"], unfinished=["train"])
    nothing_finished = make_run(tmp_path, "p-2024-01-04", other, unfinished=["synth"])
    complete = make_run(tmp_path, "p-2024-01-05", same, complete=True, finished=["synth", "train"])
    foreign = make_run(tmp_path, "p-2024-01-06", None, unfinished=["train"])
    running = make_run(tmp_path, "p-2024-01-07", same, unfinished=["train"])
    held = os.open(running / RUN_FILE, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        folder = open_run(tmp_path, "p", same)
        try:
            assert folder.path == newer_same and folder.resumed
            assert (newer_same / "train" / "model" / "checkpoints").is_dir()  # the partial train, resumed
            # other dead runs lose their unfinished tasks, or everything when nothing finished
            assert sorted(folder.removed) == [older_same / "train", changed / "train", nothing_finished]
            assert (older_same / "synth" / TASK_DONE).exists() and (changed / "synth" / TASK_DONE).exists()
            # complete, foreign and running folders are not touched
            for untouched in (complete / "train", foreign / "train", running / "train"):
                assert untouched.is_dir()
            second = open_run(tmp_path, "p", same)  # while the first holds its folder: the next dead one
            second.release()
            assert second.path == older_same
        finally:
            folder.release()
    finally:
        os.close(held)
