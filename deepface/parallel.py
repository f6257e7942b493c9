"""The one process pool of the package: an ordered ``map`` over worker processes, and the CPUs to size it.

`ordered_map(workers)` is a context manager yielding ``run(function, iterable)``: an iterator over
``function(argument)`` for each argument, in input order, whatever the number of workers, so that
stages whose tasks are deterministic (synth's identities, tfrecords' chunks of images, the landmarks
stage's chunks) write the same bytes with any number of processes. An exception raised by ``function``
comes out of the iterator, at the latest where its result would have. Leaving the ``with`` block
normally cancels the tasks not yet started and waits for the pool processes; leaving it by an
exception stops them at once (SIGTERM, then SIGKILL after `STOP_SECONDS`) and waits for them.

SIGTERM (what Kubernetes and Vertex AI send before SIGKILL when they stop or preempt a task): while
the ``with`` block runs, SIGTERM raises `Terminated` in the main thread, so that the pool processes
are stopped, the stage's own clean-up runs as for any exception (unfinished files discarded, the
resumable state left as the last complete step wrote it), and the process exits with status 143
(128 + 15) after one log line. The forkserver and the resource tracker of multiprocessing end as
soon as the process does. The handler is only installed from the main thread, and only where SIGTERM
has its default action (a handler of the caller's own is left alone).

``function`` and its arguments go to other processes: the function must be importable by name (a
module-level function, or a ``functools.partial`` of one), and arguments and results picklable.

`available_cpus()`: the CPUs this process may use, the default number of workers of the stages: its
affinity mask, lowered to the CPU quota of its cgroup (a container's CPU limit, e.g. a Kubernetes or
Vertex AI task's ``cpu_limit``), rounded up.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")  # where cgroups are mounted (a container's own, in a cgroup namespace)
PROC_SELF_CGROUP = Path("/proc/self/cgroup")  # the cgroups of this process, relative to their hierarchy's root
V1_CPU_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")  # cgroup v1: where the cpu controller is mounted
STOP_SECONDS = 5.0  # a pool process still running this long after SIGTERM is killed
TERMINATED_EXIT = 128 + signal.SIGTERM  # exit status of a process stopped by SIGTERM (143), as a shell reports it


# --------------------------------------------------------------------------------------------------
# CPUs
# --------------------------------------------------------------------------------------------------


def _affinity_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _read_quota(folder: Path, version: int) -> float | None:
    """CPUs the quota of one cgroup folder allows (quota / period), None for no quota or no file."""
    try:
        if version == 2:  # cpu.max: "QUOTA PERIOD" or "max PERIOD"
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota == "max":
                return None
        else:  # cpu.cfs_quota_us: -1 for none
            quota = (folder / "cpu.cfs_quota_us").read_text().strip()
            period = (folder / "cpu.cfs_period_us").read_text().strip()
        quota, period = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _own_cgroup(membership: Path, version: int) -> str:
    """This process's cgroup path (``/kubepods/pod1/c2``) in the hierarchy of its cpu controller, ``/``
    when unknown; ``membership`` is /proc/self/cgroup (``0::/path`` in v2, ``4:cpu,cpuacct:/path`` in v1)."""
    with contextlib.suppress(OSError):
        for line in membership.read_text().splitlines():
            number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if (version == 2 and number == "0" and controllers == "") or (
                    version == 1 and "cpu" in controllers.split(",")):
                return path or "/"
    return "/"


def _quota_folders(mount: Path, own: str) -> Iterator[Path]:
    """The mount point and, where they are visible under it, this process's cgroup folder and its
    ancestors: a limit set on any of them applies."""
    yield mount
    parts = [part for part in own.split("/") if part and part not in (".", "..")]
    for depth in range(1, len(parts) + 1):
        folder = mount.joinpath(*parts[:depth])
        if folder.is_dir():
            yield folder


def cgroup_cpu_limit(root: str | os.PathLike = CGROUP_ROOT,
                     membership: str | os.PathLike = PROC_SELF_CGROUP) -> float | None:
    """CPUs the cgroup CPU quota of this process allows (``quota / period``, may be fractional), the
    smallest along its cgroup path; None when no quota limits it (or there are no cgroups).

    Args:
        root: where the cgroups are mounted: cgroup v2 (``cpu.max``, "QUOTA PERIOD" or "max PERIOD")
            when ``root/cgroup.controllers`` or ``root/cpu.max`` exists, else v1 (``cpu.cfs_quota_us``,
            -1 for none, and ``cpu.cfs_period_us``) under ``root/cpu`` or ``root/cpu,cpuacct``.
        membership: the process's cgroup list (/proc/self/cgroup) naming its folder below ``root``;
            inside a container (a cgroup namespace) the folder is ``root`` itself.
    """
    root, membership = Path(root), Path(membership)
    if (root / "cgroup.controllers").exists() or (root / "cpu.max").exists():
        mounts, version = [root], 2
    else:
        mounts, version = [root / name for name in V1_CPU_FOLDERS if (root / name).is_dir()], 1
    own = _own_cgroup(membership, version)
    limits = [quota for mount in mounts for folder in _quota_folders(mount, own)
              if (quota := _read_quota(folder, version)) is not None]
    return min(limits, default=None)


def available_cpus(cgroup_root: str | os.PathLike = CGROUP_ROOT,
                   membership: str | os.PathLike = PROC_SELF_CGROUP) -> int:
    """CPUs this process may use: its affinity mask (the cores it may run on), lowered to its cgroup's
    CPU quota rounded up (a container's CPU limit: 8 on a 96-core node when the task asks for 8), at
    least 1. ``cgroup_root`` and ``membership``: see `cgroup_cpu_limit`."""
    cpus = _affinity_cpus()
    quota = cgroup_cpu_limit(cgroup_root, membership)
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else max(1, cpus)


# --------------------------------------------------------------------------------------------------
# SIGTERM
# --------------------------------------------------------------------------------------------------


def is_default_sigterm() -> bool:
    """Whether SIGTERM has its default action: SIG_DFL, or a handler marked ``default_action`` (the
    pipeline task's, `components.task_start.end_on_sigterm`, which a container's PID 1 needs)."""
    handler = signal.getsignal(signal.SIGTERM)
    return handler == signal.SIG_DFL or getattr(handler, "default_action", False)


class Terminated(SystemExit):
    """SIGTERM arrived: raised in the main thread by the handler `ordered_map` installs. A `SystemExit`
    (not an `Exception`: ``except Exception`` does not swallow it) whose code, 143, becomes the exit
    status of the process when nothing catches it."""

    def __init__(self):
        super().__init__(TERMINATED_EXIT)


class _SigtermGuard:
    """While entered (from the main thread, SIGTERM at its default action): the first SIGTERM raises
    `Terminated`, at once or, inside `deferred`, when that section ends; later ones are ignored."""

    def __init__(self):
        self.received = False
        self.raised = False
        self._deferring = 0
        self._previous = None
        self.active = False

    def __enter__(self) -> _SigtermGuard:
        if threading.current_thread() is threading.main_thread() and is_default_sigterm():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self.active = True
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            signal.signal(signal.SIGTERM, self._previous)
            self.active = False

    def _handle(self, signum, frame) -> None:
        if self.received:
            return
        self.received = True
        if not self._deferring:
            self.raise_now()

    def raise_now(self) -> None:
        self.raised = True
        raise Terminated()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A section SIGTERM must not cut (starting a pool process, stopping the pool): a SIGTERM
        arriving inside raises `Terminated` once it is over."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if self.received and not self.raised and not self._deferring:
            self.raise_now()


def _stop_pool(pool: ProcessPoolExecutor, wait_seconds: float = STOP_SECONDS) -> None:
    """Cancel the pool's waiting tasks, SIGTERM its processes (their results are not wanted any more),
    SIGKILL those still running after ``wait_seconds``, and wait for them and for the pool's thread.

    Uses three attributes of CPython's ProcessPoolExecutor (3.10 to 3.14: ``_processes``,
    ``_executor_manager_thread``, ``_result_queue``); 3.14's ``terminate_workers()`` does the first
    half, without waiting. Idempotent."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    results = getattr(pool, "_result_queue", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, ValueError):  # already ended
            process.terminate()
    for process in processes:
        with contextlib.suppress(ValueError):  # closed
            process.join(wait_seconds)
            if process.exitcode is None:
                process.kill()
                process.join()
    if manager is not None and manager.is_alive():
        manager.join(wait_seconds)
        if manager.is_alive() and results is not None:
            # It is reading a result that a stopped process was half-way through sending: with this
            # process's end of the pipe closed too, it reads the end of the pipe, finds the pool
            # broken, and ends (else the interpreter's exit would wait for it forever).
            results._writer.close()
            manager.join(wait_seconds)


# --------------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------------


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

    SIGTERM inside the block raises `Terminated` (see the module docstring): the pool processes are
    stopped before it leaves the block, and one line is logged.
    """
    with _SigtermGuard() as guard:
        try:
            if workers == 1:
                yield map
            else:
                yield from _pool_map(workers, guard)
        except Terminated:
            logger.warning("Stopped by SIGTERM: the worker processes are stopped and unfinished files discarded; "
                           "run the same command again to resume (exit status %d)", TERMINATED_EXIT)
            raise


def _pool_map(workers: int, guard: _SigtermGuard) -> Iterator[Callable]:
    """The body of `ordered_map` with a pool of ``workers - 1`` processes."""
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
                with guard.deferred():  # may start a pool process: not to be cut half-way
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

    stopped = False
    try:
        yield bounded_map
        pool.shutdown(wait=True, cancel_futures=True)
        stopped = True
    finally:
        if not stopped:  # an exception, or SIGTERM while waiting for the pool's last tasks
            _stop_surely(pool, guard)
    logger.info("%d of %d tasks ran in the main process, the others in %d pool processes",
                tasks["here"], tasks["here"] + tasks["pool"], workers - 1)


def _stop_surely(pool: ProcessPoolExecutor, guard: _SigtermGuard) -> None:
    """`_stop_pool`, not cut short by SIGTERM: one arriving meanwhile raises `Terminated` once the pool
    is stopped. (The guard raises at most once: if that happened just before the section began, the
    second stop runs unguarded but cannot be cut either.)"""
    try:
        with guard.deferred():
            _stop_pool(pool)
    except Terminated:
        _stop_pool(pool)  # a no-op when the first one finished
        raise
