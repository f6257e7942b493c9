"""Keras callbacks of a training run, and the checkpoints that make it resumable.

- `ResumableReduceLROnPlateau`: the learning-rate schedule, whose counters survive a restart;
- `TrainingState`: checkpoints (weights, optimizer, schedule, metric sums, history) every few steps and
  at the end of every epoch, and restores the latest, so that a restarted run continues at the same
  epoch and step; asked to stop (`StopOnSignal`), it checkpoints at the next step boundary and raises
  `TrainingInterrupted`;
- `StopOnSignal`: SIGTERM (Kubernetes' and Vertex AI's notice before SIGKILL) turned into such a request
  for the duration of a ``with`` block;
- `EpochLogger`, `RunProgbar`, `ScalarSummaries`: what a run reports (log lines, the progress bar,
  TensorBoard scalars);
- `check_run_config`: checkpoints resume only a run with the same settings (`DeepFaceError` otherwise).
"""

from __future__ import annotations

import json
import logging
import posixpath
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from deepface.errors import DeepFaceError
from deepface.files import dumps_json, read_json, write_bytes

logger = logging.getLogger(__name__)

RUN_CONFIG_FILE = "run_config.json"


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """`keras.callbacks.ReduceLROnPlateau` whose counters survive a restart.

    Keras resets the counters at the start of every ``fit``; this one keeps them across ``fit`` calls
    and exposes them (`get_state` / `set_state`) for `TrainingState` to checkpoint.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._reset()

    def on_train_begin(self, logs=None):
        pass  # keep the counters (a resumed run restores them with set_state)

    def get_state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after checkpointing where it stood; a rerun resumes from there.

    A `SystemExit` whose code is ``128 + signal`` (143 for SIGTERM), the status of a process ended by
    that signal: uncaught, the command line and a KFP component exit with it, without a traceback.
    """

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class StopOnSignal:
    """A termination signal (default SIGTERM) turned into a request to stop at the next step boundary.

    Used as a context manager: on entry it installs its handler, which only records the request
    (`requested`); on exit it restores the handler found on entry. `TrainingState` honours the request.
    Python handlers can only be installed from the main thread: elsewhere the signal keeps its handler.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum, frame) -> None:
        self.requested = True  # only a flag: the handler runs between any two bytecodes

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)
            self._installed = True
        else:
            logger.debug("Not in the main thread: %s keeps its handler during training", self.name)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._installed:
            # None: the previous handler was not set from Python; the default is what it was then.
            signal.signal(self.signum, signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False


class TrainingState(keras.callbacks.Callback):
    """Checkpoints everything a restarted run needs to continue exactly where the last one stopped.

    One `tf.train.Checkpoint` (written atomically by `tf.train.CheckpointManager`; local or gs://),
    numbered by the global step, holds:

    - every model variable (weights, and the dropout's random generator state);
    - the optimizer (momentum, iteration count, learning rate, loss scale);
    - a JSON progress record: epochs and steps done, the ReduceLROnPlateau counters, the metric sums
      of the unfinished epoch, the per-epoch history and the runs (attempts) so far.

    It is saved every ``save_steps`` steps inside an epoch and at the end of every epoch.

    Given a `StopOnSignal` (``stop``) whose signal has come, it saves a checkpoint after the current
    step (or at the end of the epoch, for its last step: after validation), logs where it stopped and
    raises `TrainingInterrupted`; a restarted run resumes from that checkpoint, mid-epoch included.

    Under several workers every worker saves (saving may take part in collective operations) but only
    the chief's checkpoints are kept: the others write into a throw-away ``directory`` and every worker
    restores from the chief's (``restore_from``), so that all of them resume at the same step with the
    same weights.

    Use: call `restore` before training; before each ``fit`` call `begin_fit` (``fit`` numbers its
    batches from 0 even when an epoch resumes at step ``k``); after the last ``fit``, `stop_if_requested`
    (a signal that came after the last step).
    """

    def __init__(
        self,
        model: keras.Model,
        directory: str,
        *,
        steps_per_epoch: int,
        save_steps: int,
        plateau: ResumableReduceLROnPlateau,
        max_to_keep: int = 2,
        stop: StopOnSignal | None = None,
        restore_from: str | None = None,
    ):
        """``directory``: where this process writes its checkpoints; ``restore_from``: where `restore`
        finds the latest one (default ``directory``; the chief's directory on the other workers)."""
        super().__init__()
        self.directory = directory
        self.restore_from = directory if restore_from is None else restore_from
        self.steps_per_epoch = steps_per_epoch
        self.save_steps = save_steps
        self.plateau = plateau
        self.stop = stop
        self._saved: tuple[int, str] | None = None  # (global step, path) of the last checkpoint
        self.epoch = 0  # epochs completed
        self.step = 0  # steps completed in the current epoch
        self.history: dict[str, list[float]] = {}
        self.runs: list[dict] = []
        self._step_offset = 0
        self._pending_metrics: list[float] | None = None
        with tf.device("/cpu:0"):
            self._progress = tf.Variable("", dtype=tf.string, trainable=False, name="progress")
        self._optimizer = model.optimizer
        self._checkpoint = tf.train.Checkpoint(
            model_variables=list(model.variables), optimizer=model.optimizer, progress=self._progress
        )
        self.manager = tf.train.CheckpointManager(
            self._checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name="ckpt"
        )

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.step

    def restore(self) -> bool:
        """Load the latest checkpoint, if any (logging where the run resumes), and record this run's
        starting point. True if resumed."""
        latest = (self.manager.latest_checkpoint if self.restore_from == self.directory
                  else tf.train.latest_checkpoint(self.restore_from))
        if latest is not None:
            self._checkpoint.restore(latest).assert_existing_objects_matched()
            progress = json.loads(self._progress.numpy().decode("utf-8"))
            self.epoch, self.step = progress["epoch"], progress["step"]
            self.history = progress["history"]
            self.runs = progress["runs"]
            self.plateau.set_state(progress["plateau"])
            self._pending_metrics = progress["metrics"] if self.step else None
            self._saved = (self.global_step, latest)
        self.runs.append({"start_epoch": self.epoch, "start_step": self.step, "steps": 0})
        if latest is None:
            return False
        logger.info(
            "Resuming from %s at epoch %d, step %d of %d (global step %d), learning rate %g",
            latest, self.epoch, self.step, self.steps_per_epoch, self.global_step,
            float(keras.ops.convert_to_numpy(self._optimizer.learning_rate)),
        )
        return True

    def begin_fit(self) -> None:
        self._step_offset = self.step

    def on_epoch_begin(self, epoch, logs=None):
        # fit() has just reset the metrics: a resumed epoch continues from its saved sums.
        if self._pending_metrics is not None:
            variables = self.model.metrics_variables
            if len(variables) != len(self._pending_metrics):
                raise RuntimeError(f"{len(variables)} metric variables, {len(self._pending_metrics)} saved")
            for variable, value in zip(variables, self._pending_metrics):
                variable.assign(value)
            self._pending_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        before = self.global_step
        steps_done = self._step_offset + batch + 1
        self.runs[-1]["steps"] += steps_done - self.step
        self.step = steps_done
        mid_epoch = self.step < self.steps_per_epoch  # the epoch's end saves anyway
        if self.save_steps and mid_epoch and self.global_step // self.save_steps > before // self.save_steps:
            self.save()
        if mid_epoch:  # after an epoch's last step, on_epoch_end checkpoints (validation done) and stops
            self.stop_if_requested()

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            self.history.setdefault(name, []).append(float(value))
        self.epoch, self.step, self._step_offset = epoch + 1, 0, 0
        self.save()
        self.stop_if_requested()

    def stop_if_requested(self) -> None:
        """If the stop signal has come: checkpoint here (unless the last checkpoint is of this very
        step), log one line and raise `TrainingInterrupted`."""
        if self.stop is None or not self.stop.requested:
            return
        path = self._saved[1] if self._saved and self._saved[0] == self.global_step else self.save()
        logger.warning(
            "Stopped by %s at epoch %d step %d; checkpoint %s saved; a rerun resumes from it",
            self.stop.name, self.epoch, self.step, path,
        )
        raise TrainingInterrupted(self.stop.signum)

    def save(self) -> str:
        metrics = [float(np.asarray(v)) for v in self.model.metrics_variables] if self.step else []
        progress = {
            "epoch": self.epoch,
            "step": self.step,
            "global_step": self.global_step,
            "plateau": self.plateau.get_state(),
            "metrics": metrics,
            "history": self.history,
            "runs": self.runs,
        }
        self._progress.assign(json.dumps(progress, sort_keys=True))
        path = self.manager.save(checkpoint_number=self.global_step)
        self._saved = (self.global_step, path)
        logger.info("Checkpoint %s: epoch %d, step %d/%d", path, self.epoch, self.step, self.steps_per_epoch)
        return path


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, learning rate, step count and throughput (images per second)."""

    def __init__(self, epochs: int, global_batch_size: int):
        super().__init__()
        self.epochs = epochs
        self.global_batch_size = global_batch_size
        self._start = 0.0
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = batch + 1

    def on_epoch_end(self, epoch, logs=None):
        seconds = max(time.perf_counter() - self._start, 1e-9)
        values = ", ".join(f"{name} {value:.4g}" for name, value in sorted((logs or {}).items()))
        logger.info(
            "Epoch %d/%d: %s; %d steps in %.1f s (%.1f img/s)", epoch + 1, self.epochs, values, self._steps,
            seconds, self._steps * self.global_batch_size / seconds,
        )


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, numbering epochs over the whole run (training calls ``fit`` once per epoch)."""

    def __init__(self, epochs: int):
        super().__init__()
        self.run_epochs = epochs

    def set_params(self, params):
        super().set_params({**params, "epochs": self.run_epochs})


class ScalarSummaries(keras.callbacks.Callback):
    """Writes each epoch's metrics as TensorBoard scalars, laid out as `keras.callbacks.TensorBoard`
    does (``train/`` and ``validation/`` runs, tags ``epoch_<metric>``, step = epoch).

    Only TensorFlow's own summary ops are used: the ``tensorboard`` package is not needed to write.
    """

    _SCALAR = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict[str, Any] = {}

    def _writer(self, run: str):
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(posixpath.join(self.log_dir, run))
        return self._writers[run]

    def on_epoch_end(self, epoch, logs=None):
        for name, value in sorted((logs or {}).items()):
            run, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            with self._writer(run).as_default():
                tf.summary.write(f"epoch_{metric}", tf.constant(float(value)), step=epoch, metadata=self._SCALAR)
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Close the event files (training may span several ``fit`` calls, so not at the end of each)."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def check_run_config(checkpoint_dir: str, run_config: dict, is_chief: bool) -> None:
    """Checkpoints resume only a run with the same settings (else they would train something else)."""
    path = posixpath.join(checkpoint_dir, RUN_CONFIG_FILE)
    if tf.io.gfile.exists(path):
        saved = read_json(path)
        changed = sorted(key for key in set(saved) | set(run_config) if saved.get(key) != run_config.get(key))
        if changed:
            details = "; ".join(f"{key}: {saved.get(key)!r} -> {run_config.get(key)!r}" for key in changed)
            raise DeepFaceError(
                f"The checkpoints in {checkpoint_dir} belong to a run with other settings ({details}): "
                "use the same settings to resume, or another output (or checkpoint) directory to start over."
            )
    elif is_chief:
        write_bytes(path, dumps_json(run_config).encode("utf-8"))
