"""One writer per output directory: the advisory lock a stage holds on its output for its whole run.

Two runs writing into one directory corrupt each other (each removes the other's temporaries, shards
interleave, one manifest vouches for the other's files). So a stage holds `output_lock` on its output
directory from before its first write until it returns or raises:

    with output_lock(out, "tfrecords"):
        ...  # read the old manifest, resume, write, write the manifest last

- The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``LOCK_FILE`` (``.deepface.lock``) inside the directory
  (created if needed), holding JSON that names the holder: pid, host, stage, command, start time (UTC).
- A second writer, in another process or this one, is refused at once (never waits): `DeepFaceError`,
  one line naming the directory, the holder and the fix.
- The kernel drops a flock when its process dies, SIGKILL included, so a killed run never blocks its
  rerun; the rerun takes the same lock file over. Whoever holds the lock may remove any temporary in
  the directory: it can only be a dead run's.
- On release the lock file is removed (before the lock is dropped; a taker checks that the file it
  locked is still the one at the path, else it retries), so a finished directory holds no lock file.
  A killed run leaves it behind: a hidden file that no stage lists as output (manifests name their
  files; shard and landmark globs skip dot files).
- Remote directories (``gs://``) are not locked, and where the filesystem does not support flock
  (``ENOTSUP``, ``EOPNOTSUPP``, ``ENOLCK``, ``ENOSYS``, ``EINVAL``: e.g. some FUSE mounts such as gcsfuse
  on Vertex AI's ``/gcs/``) the stage logs one warning and runs without the lock: Vertex AI gives each
  task its own output directory, so there a second writer only comes from a user's mistake.

Example::

    >>> with output_lock("out/tfrecords", "tfrecords") as lock:
    ...     lock.locked
    True
    >>> output_lock("out/tfrecords", "tfrecords")  # while another run holds it
    Traceback (most recent call last):
    deepface.errors.DeepFaceError: out/tfrecords is being written by another run (deepface tfrecords, pid 4242
    on host vm-1 since 2024-05-01T10:00:00Z): wait for it to end, or choose another output directory.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import functools
import inspect
import json
import logging
import os
import shlex
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from deepface.errors import DeepFaceError, os_error_message
from deepface.files import is_remote, local_path

logger = logging.getLogger(__name__)

LOCK_FILE = ".deepface.lock"
# flock's errors on a filesystem that does not support it: run unlocked (see the module docstring).
UNSUPPORTED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOLCK, errno.ENOSYS, errno.EINVAL})
MAX_COMMAND = 300  # characters of the holder's command line kept in the lock file


class OutputLock:
    """The lock of one output directory, held from `output_lock` until `release` (or the ``with`` block's
    end, or the process's death). ``locked`` is False where locking is not possible (remote directory,
    no flock support): the run then proceeds unlocked."""

    def __init__(self, directory: Path | str, fd: int | None, path: Path | None):
        self.directory, self.path = directory, path
        self._fd, self._pid = fd, os.getpid()

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Removes the lock file and drops the lock (idempotent; a forked child never releases its parent's)."""
        if self._fd is None or os.getpid() != self._pid:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):  # still ours: nobody else can lock a file we hold
                if _same_file(fd, self.path):
                    self.path.unlink()
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def output_lock(directory: str | os.PathLike, stage: str) -> OutputLock:
    """Takes the exclusive lock of the output ``directory`` (created if missing) for ``stage``.

    Args:
        directory: the stage's output directory: a local path or file:// URI (``gs://`` is not locked).
        stage: the stage's name, recorded for the message a second writer gets (``"tfrecords"``).

    Returns:
        The held `OutputLock`; use it as a context manager (or call ``release``).

    Raises:
        DeepFaceError: another run (or this process) holds the lock: one line naming ``directory``,
            the holder (stage, pid, host, start time) and the fix; or the directory cannot be created or
            the lock file cannot be written (permissions, read-only filesystem).
    """
    if is_remote(directory):
        logger.info("%s is remote: not locked (give each run its own output directory)", directory)
        return OutputLock(str(directory), None, None)
    out = local_path(directory)
    path = out / LOCK_FILE
    while True:
        fd = _open(out, path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DeepFaceError(f"{directory} is being written by another run ({holder}): wait for it to end, "
                                "or choose another output directory.") from None
        except OSError as error:
            os.close(fd)
            if error.errno not in UNSUPPORTED:
                raise _cannot_write(path, error) from None
            logger.warning("cannot lock %s (%s): running without the lock; make sure no other run writes "
                           "into %s", path, os.strerror(error.errno), directory)
            return OutputLock(out, None, None)
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder released (removed) it between our open and our lock: take the new one
    _record_holder(fd, stage)
    return OutputLock(out, fd, path)


def _open(out: Path, path: Path) -> int:
    try:
        out.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise _cannot_write(path, error) from None


def _cannot_write(path: Path, error: OSError) -> DeepFaceError:
    """The one-line error (`deepface.errors.os_error_message`: the path and the fix for its errno)."""
    return DeepFaceError(os_error_message(error, path, action="write"))


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is the file now at ``path``."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (found.st_dev, found.st_ino)


def _record_holder(fd: int, stage: str) -> None:
    """Writes who holds the lock into the lock file (best effort: the lock holds without it)."""
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    holder = {"stage": stage, "pid": os.getpid(), "host": socket.gethostname(), "started": started,
              "command": shlex.join(sys.argv)[:MAX_COMMAND]}
    data = (json.dumps(holder, sort_keys=True) + "\n").encode("utf-8")
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


def _holder(fd: int) -> str:
    """The holder named in the lock file, in words."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
        return (f"deepface {holder['stage']}, pid {holder['pid']} on host {holder['host']} "
                f"since {holder['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not yet written its name into the lock file"


def locks_output(parameter: str, stage: str, settings: type | None = None) -> Callable:
    """Decorates a stage function so that each call runs holding `output_lock` on its argument
    ``parameter`` (the output directory; a call where it is None runs unlocked). For stage functions
    whose body should not change: ``@locks_output("out_dir", "evaluate", EvaluateSettings)`` above
    ``def evaluate(..., **settings)``. With ``settings`` (a `deepface.settings.Settings` class), the call's
    ``**settings`` keywords are checked first, so that a bad setting creates no output directory.

    Raises (from the call): `deepface.settings.SettingError` for a bad setting, what `output_lock` raises;
    both before the function runs.
    """
    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            if settings is not None:
                settings.of(arguments.get("settings", {}))
            directory = arguments.get(parameter)
            if directory is None:
                return function(*args, **kwargs)
            with output_lock(directory, stage):
                return function(*args, **kwargs)

        return locked

    return decorate
