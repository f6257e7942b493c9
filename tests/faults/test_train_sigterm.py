"""SIGTERM while `deepface train` fits: Kubernetes and Vertex AI send it on preemption, some seconds before
SIGKILL. The run must save a checkpoint at the next step boundary, say so in one line, exit with status
143 and leave the model directory incomplete; a rerun resumes from that checkpoint (mid-epoch) and ends
exactly where an uninterrupted run ends.

The command runs as a subprocess (tests/helpers/faults.py); the signal is sent once its log shows the
first epoch finished (a condition on its output, not a duration), so it lands inside the second epoch,
between the epoch-end checkpoints (no periodic checkpoint inside an epoch: checkpoint_steps 0).
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from helpers.faults import checkpoint_step, classifier_weights, log_contains, run, signal_when

STEPS_PER_EPOCH = 10
EPOCHS = 2
STOPPED = re.compile(r"Stopped by SIGTERM at epoch (\d+) step (\d+); checkpoint (\S+) saved; a rerun resumes from it")


def train_args(inputs: tuple[Path, Path], out: Path) -> list[str]:
    tfrecords, labels = inputs
    return ["train", "--tfrecords", str(tfrecords), "--labels", str(labels), "--out", str(out), "--preset", "tiny",
            "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS_PER_EPOCH), "--batch-size", "8",
            "--checkpoint-steps", "0", "--feature-max-batches", "1", "--shuffle-buffer", "64", "--strategy", "cpu",
            "--seed", "2"]


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_exits_143_and_a_rerun_ends_as_an_uninterrupted_run(train_inputs, tmp_path):
    out = tmp_path / "model"
    log = tmp_path / "sigterm.log"
    stopped = signal_when(train_args(train_inputs, out), lambda: log_contains(log, f"Epoch 1/{EPOCHS}:"),
                          log_path=log, aim="SIGTERM in the second epoch", signum=signal.SIGTERM)

    assert stopped.returncode == 143, stopped.log[-3000:]  # the status of a process ended by SIGTERM
    assert "Traceback" not in stopped.log
    [match] = STOPPED.findall(stopped.log)  # one line says where it stopped
    epoch, step, path = int(match[0]), int(match[1]), match[2]
    saved = checkpoint_step(out / "checkpoints")
    # The signal came after the first epoch's checkpoint (ckpt-10): the run saved the step it was at,
    # inside the second epoch, a checkpoint no periodic save would have made.
    assert epoch == 1 and 1 <= step < STEPS_PER_EPOCH, stopped.log[-3000:]
    assert saved == epoch * STEPS_PER_EPOCH + step and path.endswith(f"ckpt-{saved}")
    assert not (out / "manifest.json").exists()  # the model directory stays incomplete
    assert not (out / "classifier.keras").exists()

    rerun = run(train_args(train_inputs, out), tmp_path / "rerun.log")
    assert f"Resuming from {out / 'checkpoints' / f'ckpt-{saved}'} at epoch {epoch}, step {step}" in rerun
    reference = tmp_path / "reference"
    run(train_args(train_inputs, reference), tmp_path / "reference.log")

    # The same training as an uninterrupted run: metrics of every epoch and final weights, exactly.
    history = json.loads((out / "history.json").read_text())
    assert history["metrics"] == json.loads((reference / "history.json").read_text())["metrics"]
    for resumed, uninterrupted in zip(classifier_weights(out), classifier_weights(reference), strict=True):
        np.testing.assert_array_equal(resumed, uninterrupted)
    total = EPOCHS * STEPS_PER_EPOCH
    assert history["optimizer_steps"] == total  # no step lost, none repeated
    assert history["runs"] == [{"start_epoch": 0, "start_step": 0, "steps": saved},
                               {"start_epoch": epoch, "start_step": step, "steps": total - saved}]
    assert (out / "manifest.json").exists() and not (out / "checkpoints").exists()
