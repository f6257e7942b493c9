"""Micro-batching: the images of concurrent requests share one forward pass.

`MicroBatcher(run, max_batch_size, max_wait_s)` owns one worker thread. `submit(items)` queues a job (an
array of ``n`` inputs) and returns a `concurrent.futures.Future` of ``run``'s ``n`` output rows. The worker
takes the oldest job, then, while the batch holds fewer than ``max_batch_size`` inputs and more jobs are
coming, waits up to ``max_wait_s`` for them, and runs them in one call of ``run``. A job is "coming" once
`announce` was called for it (a request still cutting its faces): a lone request never waits. A job is
never split: the instances of one request always share a pass (a job larger than ``max_batch_size`` runs
alone). An exception of ``run`` is set on every future of that pass; the worker goes on.

Example::

    batcher = MicroBatcher(model.embed_crops, max_batch_size=32, max_wait_s=0.02)
    batcher.announce()  # a request arrived; its crops follow
    rows = batcher.submit(crops, announced=True).result()  # float64 [len(crops), D]
    batcher.close()
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

logger = logging.getLogger(__name__)


class MicroBatcher:
    """Runs ``run(np.concatenate(jobs))`` for batches of queued jobs on one worker thread (see the module docstring).

    Args:
        run: maps an array of N inputs to N output rows (the model's forward pass).
        max_batch_size: most inputs of one pass (>= 1), unless one job alone is larger.
        max_wait_s: how long the first job of a pass waits for announced others (>= 0).

    ``passes`` and ``inputs`` count the passes run and the inputs they held (``inputs / passes`` is the mean
    batch size).
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int, max_wait_s: float):
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch_size={max_batch_size} must be >= 1 and max_wait_s={max_wait_s} >= 0")
        self._run, self.max_batch_size, self.max_wait_s = run, max_batch_size, max_wait_s
        self._jobs: collections.deque[tuple[np.ndarray, Future]] = collections.deque()
        self._ready = threading.Condition()
        self._closed = False
        self._announced = 0  # jobs announced and not yet submitted (or withdrawn)
        self.passes = self.inputs = 0
        self._thread = threading.Thread(target=self._work, name="micro-batcher", daemon=True)
        self._thread.start()

    def announce(self) -> None:
        """Say that a job is coming: a pass being gathered waits for it (up to ``max_wait_s``). Follow with
        ``submit(..., announced=True)`` or `withdraw`."""
        with self._ready:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced job will not come (its request failed)."""
        with self._ready:
            self._announced -= 1
            self._ready.notify()

    def submit(self, items: np.ndarray, *, announced: bool = False) -> Future:
        """Queue ``items`` (``[n, ...]``, n >= 1); the future's result is ``run``'s ``[n, ...]`` rows for them.
        ``announced``: the job `announce` said was coming.

        Raises:
            RuntimeError: the batcher is closed.
        """
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the micro-batcher is closed")
            self._jobs.append((items, future))
            self._announced -= announced
            self._ready.notify()
        return future

    def close(self) -> None:
        """Stop the worker once the queued jobs are done."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _take(self) -> list[tuple[np.ndarray, Future]] | None:
        """The next batch of jobs: waits for a first one, then up to ``max_wait_s`` for more."""
        with self._ready:
            while not self._jobs and not self._closed:
                self._ready.wait()
            if not self._jobs:
                return None
            batch = [self._jobs.popleft()]
            size = len(batch[0][0])
            deadline = time.monotonic() + self.max_wait_s
            while size < self.max_batch_size:
                if self._jobs:
                    if size + len(self._jobs[0][0]) > self.max_batch_size:
                        break
                    batch.append(self._jobs.popleft())
                    size += len(batch[-1][0])
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed or self._announced <= 0:  # nothing more is coming soon
                    break
                self._ready.wait(left)
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            jobs = [(items, future) for items, future in batch if future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                outputs = self._run(np.concatenate([items for items, _ in jobs]))
            except Exception as error:  # noqa: BLE001 - handed to every caller of this pass
                logger.exception("a forward pass of %d jobs failed", len(jobs))
                for _, future in jobs:
                    future.set_exception(error)
                continue
            self.passes += 1
            self.inputs += len(outputs)
            start = 0
            for items, future in jobs:
                future.set_result(outputs[start:start + len(items)])
                start += len(items)
