"""The one process pool of the package: an ordered ``map`` over worker processes, and the CPUs to size it.

`ordered_map(workers)` is a context manager yielding ``run(function, iterable)``: an iterator over
``function(argument)`` for each argument, in input order, whatever the number of workers, so that
stages whose tasks are deterministic (synth's identities, tfrecords' chunks of images, the landmarks
stage's chunks) write the same bytes with any number of processes. An exception raised by ``function``
comes out of the iterator, at the latest where its result would have; leaving the ``with`` block
cancels the tasks not yet started and waits for the pool processes.

``function`` and its arguments go to other processes: the function must be importable by name (a
module-level function, or a ``functools.partial`` of one), and arguments and results picklable.

`available_cpus()`: the CPUs this process may run on, the default number of workers of the stages.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor

logger = logging.getLogger(__name__)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def ordered_map(workers: int) -> Iterator[Callable]:
    """A ``map(function, iterable)`` running on ``workers`` processes, this one included, yielding
    results in input order as soon as they are ready.

    ``workers - 1`` pool processes take tasks while one more task waits for each of them; beyond that,
    this process runs the next task itself: it is the one reading the input, and in the time left
    over it works too (less data between processes, none fighting for a core). At most
    ``2 * workers + 2`` tasks are in flight, so memory stays bounded however long the input. With one
    worker, everything runs in this process. Pool processes are forked from multiprocessing's
    forkserver (spawned where there is none), never from this (possibly multi-threaded,
    TensorFlow-holding) process; a forkserver started by this map preloads the module of the function
    mapped (that of the function a ``functools.partial`` wraps), so that a pool process starts without
    importing it. As with any spawn or forkserver pool, a script calling this needs the
    ``if __name__ == "__main__":`` guard.
    """
    if workers == 1:
        yield map
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=workers - 1, mp_context=context)

    tasks = collections.Counter()

    def bounded_map(function: Callable, iterable: Iterable) -> Iterator:
        if method == "forkserver":  # effective if the forkserver is not running yet
            context.set_forkserver_preload([getattr(function, "func", function).__module__])
        pending = collections.deque()  # futures, in input order
        for argument in iterable:
            if sum(not future.done() for future in pending) < 2 * (workers - 1):
                pending.append(pool.submit(function, argument))
                tasks["pool"] += 1
            else:  # every pool process has a task and another waiting: do this one here
                pending.append(Future())
                pending[-1].set_result(function(argument))
                tasks["here"] += 1
            while pending and (pending[0].done() or len(pending) > 2 * workers + 2):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield bounded_map
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        logger.info("%d of %d tasks ran in the main process, the others in %d pool processes",
                    tasks["here"], tasks["here"] + tasks["pool"], workers - 1)
