"""The folders of local runs: a killed run is resumed by the next run of the same pipeline and parameters.

kfp.local puts a run's task outputs under ``pipeline_root/<pipeline>-<timestamp>/<task>/``, a new folder
per run, so a rerun never sees what a killed run left: train would start again from epoch 0 beside the
killed run's checkpoints. `open_run` chooses the folder instead (`RunFolder.named` hands its name to
kfp.local through ``kfp.local.executor_input_utils.get_local_pipeline_resource_name``, kfp 2.17):

- every run writes ``RUN_FILE`` (``.deepface-run.json``) into its folder before any task runs: what it
  runs (`run_identity`: the compiled pipeline's hash, hence every component, command and image; the
  parameters; caching), and holds an flock on that file while it runs. The kernel drops the lock when
  the process dies, SIGKILL included. A run that finishes marks the file ``"complete": true``.
- a folder whose run file is neither complete nor locked is a dead run (killed, or failed).
- a new run takes over the newest dead run of the same identity and runs in its folder: every task
  writes where it wrote before, so the tasks that finished there come from the cache (whose entries
  point there) and the one that was stopped resumes from what it left (train from its last checkpoint
  in ``<task>/model/checkpoints``, tfrecords and landmarks from their parts). Nothing is copied.
- every other dead run loses its unfinished task folders (no ``executor_output.json``, kfp.local's last
  write of a task): partial outputs that no cache entry refers to. A folder left with no task folder is
  removed whole; finished task folders stay, since the cache may serve them.
- folders without a run file (older versions, other tools) are left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_FILE = ".deepface-run.json"
TASK_DONE = "executor_output.json"  # what a task that ran to its end wrote last in its folder


def run_identity(spec: Mapping[str, Any], parameters: Mapping[str, Any], enable_caching: bool) -> dict:
    """What a run runs: the compiled pipeline's hash, its parameters (as JSON holds them) and caching."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return json.loads(json.dumps({"pipeline_sha256": hashlib.sha256(text.encode()).hexdigest(),
                                  "parameters": dict(parameters), "caching": enable_caching}, sort_keys=True))


@dataclasses.dataclass
class RunFolder:
    """The folder of a run that holds its lock: ``resumed`` when it is a killed run's, ``removed``: the
    unfinished task folders (or whole run folders) of other dead runs that `open_run` deleted."""

    path: Path
    resumed: bool
    removed: list[Path]
    _fd: int | None

    @contextlib.contextmanager
    def named(self) -> Iterator[None]:
        """While inside, kfp.local runs its pipeline in this folder."""
        from kfp.local import executor_input_utils

        original = executor_input_utils.get_local_pipeline_resource_name
        executor_input_utils.get_local_pipeline_resource_name = lambda pipeline_name: self.path.name
        try:
            yield
        finally:
            executor_input_utils.get_local_pipeline_resource_name = original

    def complete(self, identity: Mapping[str, Any]) -> None:
        """Mark the run finished: no later run takes it over or cleans it."""
        _write_state(self._fd, {"identity": dict(identity), "complete": True})

    def release(self) -> None:
        """Drop the lock (idempotent): the folder is a dead run from now on unless it is complete."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def open_run(root: Path, pipeline_name: str, identity: Mapping[str, Any]) -> RunFolder:
    """The folder of a new run under ``root``, locked: the newest dead run of the same ``identity``, else a
    new ``<pipeline_name>-<timestamp>`` folder; the other dead runs' unfinished task folders are removed."""
    reused: tuple[Path, int] | None = None
    removed: list[Path] = []
    for folder, state, fd in _dead_runs(root):
        if reused is None and state.get("identity") == identity:
            reused = (folder, fd)
            continue
        removed += _remove_unfinished(folder)
        os.close(fd)
    if reused is not None:
        folder, fd = reused
    else:
        folder = root / f"{pipeline_name}-{datetime.datetime.now():%Y-%m-%d-%H-%M-%S-%f}"  # kfp.local's format
        folder.mkdir(parents=True)
        fd = os.open(folder / RUN_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a folder of our own: nobody else holds it
    _write_state(fd, {"identity": dict(identity), "complete": False})
    for path in removed:
        logger.info("removed %s: left unfinished by a killed run", path)
    if reused is not None:
        logger.info("resuming the killed run in %s (same pipeline and parameters)", folder)
    return RunFolder(folder, reused is not None, removed, fd)


def _dead_runs(root: Path) -> Iterator[tuple[Path, dict, int]]:
    """(folder, run file's content, its locked descriptor) of each dead run under ``root``, newest first."""
    if not root.is_dir():
        return
    for folder in sorted((path for path in root.iterdir() if (path / RUN_FILE).is_file()), reverse=True):
        try:
            fd = os.open(folder / RUN_FILE, os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # removed meanwhile, or not ours to write
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state = json.loads(os.pread(fd, 1 << 20, 0) or b"{}")
        except BlockingIOError:  # a run in progress
            os.close(fd)
            continue
        except ValueError:  # killed while writing its run file: dead, of no known identity
            state = {}
        if state.get("complete"):
            os.close(fd)
            continue
        yield folder, state, fd


def _remove_unfinished(folder: Path) -> list[Path]:
    """Delete the task folders of ``folder`` that did not finish, and ``folder`` itself when none is left."""
    tasks = [path for path in folder.iterdir() if path.is_dir()]
    unfinished = [path for path in tasks if not (path / TASK_DONE).is_file()]
    for path in unfinished:
        shutil.rmtree(path, ignore_errors=True)
    if len(unfinished) == len(tasks):
        shutil.rmtree(folder, ignore_errors=True)
        return [folder]
    return unfinished


def _write_state(fd: int | None, state: Mapping[str, Any]) -> None:
    if fd is None:
        raise RuntimeError("the run folder was released")
    data = (json.dumps(state, sort_keys=True) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
