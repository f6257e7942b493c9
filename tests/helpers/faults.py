"""Fault injection: kill a ``deepface`` command with SIGKILL at a chosen point, rerun it, compare.

A stage runs as its real command line (``python -m deepface.cli <stage> ...``) in a subprocess of its
own process group. The harness kills it (SIGKILL to the group: no handler, no cleanup, like a lost VM)
once a condition on its progress holds. Conditions look at what a run leaves on disk or at the test's
own side of a data feed; no condition is a duration:

- ``GatedHttpServer``: an HTTP file server (tests/servers.py) that stops sending a file before a given
  byte offset and waits, so a download is frozen at a known point;
- ``FifoFeeder``: feeds an archive through a named pipe, only up to a given byte offset, so a stage
  reading it as a stream can never finish before it is killed;
- any callable polled between waits for the child (files appearing, a checkpoint number...).

Kill points are drawn with a seed (`kill_points`), so a failing run is reproduced by its seed. CI runs
``CI_KILLS`` kills per stage; a soak run (``pytest -m soak``) runs ``soak_kills()`` (environment variable
``DEEPFACE_SOAK_KILLS``, default 100) with seeds from ``DEEPFACE_SOAK_SEED``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import fnmatch
import os
import random
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from deepface.files import TEMPORARY_GLOB
from helpers.servers import HttpFileServer

CI_KILLS = 10
POLL_SECONDS = 0.01  # how often a condition is checked while waiting for the child
DEADLINE_SECONDS = 300.0  # a condition not met by then is a harness failure (the child hangs or died)
DEEPFACE = [sys.executable, "-m", "deepface.cli"]
PIPELINES = [sys.executable, "-m", "pipelines"]  # the pipeline commands (run-local, demo...): program=PIPELINES


def soak_kills(default: int = 100) -> int:
    """Kills per stage in a soak run: ``$DEEPFACE_SOAK_KILLS`` or ``default``."""
    return int(os.environ.get("DEEPFACE_SOAK_KILLS", default))


def soak_seed(default: int = 0) -> int:
    """Seed of a soak run's kill points: ``$DEEPFACE_SOAK_SEED`` or ``default``."""
    return int(os.environ.get("DEEPFACE_SOAK_SEED", default))


def kill_points(seed: int, count: int, low: int, high: int) -> list[int]:
    """``count`` distinct points in ``[low, high)``, sorted, drawn with ``seed`` (all of them if fewer)."""
    population = range(low, high)
    return sorted(random.Random(seed).sample(population, min(count, len(population))))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) by relative POSIX path, with its bytes."""
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def split_temporaries(tree: dict[str, bytes]) -> tuple[dict[str, bytes], list[str]]:
    """``tree`` without the temporary files of unfinished writes (deepface.files.TEMPORARY_GLOB, what a
    kill mid-write leaves), and their names."""
    leftovers = [name for name in tree if fnmatch.fnmatch(name.rsplit("/", 1)[-1], TEMPORARY_GLOB)]
    return {name: data for name, data in tree.items() if name not in leftovers}, leftovers


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: this one, quiet TensorFlow, unbuffered logs, plus ``extra``."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **extra}


class HarnessError(AssertionError):
    """The harness could not place a kill: the child finished or failed first, or never got there."""


@dataclasses.dataclass
class Kill:
    """One SIGKILL: where it was aimed, what the condition saw, and the child's log."""

    aim: str
    observed: object
    returncode: int
    log: str


class Child:
    """A ``deepface`` command (or another ``program``) in its own process group, its output in ``log_path``."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 program: list[str] = DEEPFACE):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [*program, *args], stdout=self._log, stderr=subprocess.STDOUT, env=env or child_env(),
            start_new_session=True,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> int:
        """SIGKILL the whole process group (worker processes too) and reap the child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.wait()

    def wait(self, timeout: float | None = None) -> int:
        returncode = self.process.wait(timeout=timeout)
        self._log.close()
        return returncode

    def finished(self) -> bool:
        """True once the child exited (waits up to POLL_SECONDS for that: the polling interval)."""
        try:
            self.process.wait(timeout=POLL_SECONDS)
        except subprocess.TimeoutExpired:
            return False
        return True


def run(args: list[str], log_path: Path, env: dict[str, str] | None = None, expect: int = 0,
        program: list[str] = DEEPFACE) -> str:
    """Run a ``deepface`` command (or ``program``) to its end; returns its log. Fails unless it exits with
    ``expect``."""
    child = Child(args, log_path, env, program)
    returncode = child.wait(timeout=DEADLINE_SECONDS)
    log = child.log()
    if returncode != expect:
        raise AssertionError(f"`{' '.join(program[2:] + args)}` exited {returncode}, expected {expect}:\n{log[-4000:]}")
    return log


def await_point(child: Child, condition: Callable[[], object], aim: str, point: str) -> object:
    """Poll ``condition()`` while ``child`` runs and return its first truthy value.

    Raises:
        HarnessError: the child exited first (the ``point`` was missed), or DEADLINE_SECONDS passed.
    """
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not (observed := condition()):
        if child.finished():
            raise HarnessError(f"{aim}: the child exited ({child.process.returncode}) before the {point} point:\n"
                               f"{child.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{aim}: not reached in {DEADLINE_SECONDS} s:\n{child.log()[-4000:]}")
    return observed


def kill_when(
    args: list[str],
    condition: Callable[[], object],
    *,
    log_path: Path,
    aim: str,
    env: dict[str, str] | None = None,
    before_start: Callable[[], None] | None = None,
    after_kill: Callable[[], None] | None = None,
    program: list[str] = DEEPFACE,
) -> Kill:
    """Start ``deepface <args>``, poll ``condition()`` and SIGKILL the child as soon as it is truthy.

    Args:
        condition: polled every POLL_SECONDS while the child runs; its first truthy value is recorded
            in the returned Kill as ``observed``.
        aim: what the kill is aimed at, for messages and the report.
        before_start / after_kill: set-up and release of the child's data feed.
        program: the command line before ``args`` (`DEEPFACE`, or `PIPELINES` for a local pipeline run).

    Raises:
        HarnessError: the child exited before the condition held (a missed kill point), or the
            condition did not hold within DEADLINE_SECONDS.
    """
    if before_start:
        before_start()
    child = Child(args, log_path, env, program)
    try:
        observed = await_point(child, condition, aim, "kill")
    finally:
        returncode = child.kill()
        if after_kill:
            after_kill()
    if returncode != -signal.SIGKILL:
        raise HarnessError(f"{aim}: the child exited with {returncode} before SIGKILL landed:\n{child.log()[-4000:]}")
    return Kill(aim, observed, returncode, child.log())


# --------------------------------------------------------------------------------------------------
# Data feeds that freeze a stage at a chosen byte offset.


class GatedHttpServer(HttpFileServer):
    """`HttpFileServer` with a gate: ``close_gate(path, offset)`` makes the next GET of ``path`` send
    the body up to (not including) file byte ``offset``, then hold the connection open until
    ``release()``. ``stalled`` is set, and ``stalled_at`` is ``(path, range_start, offset)``, once the
    bytes before the gate are written to the socket.
    """

    def __init__(self, files: dict[str, bytes] | None = None, **kwargs):
        super().__init__(files, **kwargs)
        self.gate: tuple[str, int] | None = None
        self.stalled = threading.Event()
        self.stalled_at: tuple[str, int, int] | None = None
        self._released = threading.Event()

    def close_gate(self, path: str, offset: int) -> None:
        self.stalled.clear()
        self._released.clear()
        self.stalled_at = None
        self.gate = (path, offset)

    def release(self) -> None:
        """Let a held connection go (it is closed without sending the rest)."""
        self.gate = None
        self._released.set()

    def _take_gate(self, path: str) -> int | None:
        with self._lock:
            if self.gate and self.gate[0] == path:
                offset, self.gate = self.gate[1], None
                return offset
            return None

    def _handler_class(self):
        server = self
        base = super()._handler_class()

        class GatedWriter:
            """Wraps the handler's socket writer: the body write stops at the gate."""

            def __init__(self, handler, raw):
                self.handler, self.raw = handler, raw

            def write(self, data: bytes) -> int:
                handler = self.handler
                if not handler.body_started or handler.gate_offset is None:
                    return self.raw.write(data)
                keep = max(0, handler.gate_offset - handler.range_start)
                self.raw.write(data[:keep])
                self.raw.flush()
                server.stalled_at = (handler.gate_path, handler.range_start, handler.gate_offset)
                server.stalled.set()
                server._released.wait(DEADLINE_SECONDS)
                handler.close_connection = True
                return len(data)

            def __getattr__(self, name):
                return getattr(self.raw, name)

        class Handler(base):
            def setup(self):
                super().setup()
                self.wfile = GatedWriter(self, self.wfile)
                self.body_started, self.gate_offset = False, None

            def send_response(self, code, message=None):
                self.body_started, self.gate_offset, self.range_start = False, None, 0
                super().send_response(code, message)

            def send_header(self, keyword, value):
                if keyword == "Content-Range" and str(value).startswith("bytes ") and "-" in str(value):
                    self.range_start = int(str(value)[6:].split("-")[0])
                super().send_header(keyword, value)

            def end_headers(self):
                super().end_headers()
                if self.command == "GET":
                    self.gate_path = unquote(urlsplit(self.path).path).lstrip("/")
                    self.gate_offset = server._take_gate(self.gate_path)
                    self.body_started = True

            def handle(self):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    super().handle()

        return Handler


def unread_bytes(fd: int) -> int:
    """Bytes written to a pipe and not yet read by its reader (FIONREAD works on either end on Linux)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class FifoFeeder:
    """Writes ``data[:limit]`` into the named pipe ``path`` for one reader, from a thread.

    With ``limit < len(data)`` the pipe stays open after the last byte, so the reader blocks (it never
    sees the end of the stream) until `stop`. `drained` is true once the reader has taken every byte
    written. With the whole data, the pipe is closed after it and the reader sees the end of file.
    """

    def __init__(self, path: Path, data: bytes, limit: int | None = None):
        self.path, self.data = path, data
        self.limit = len(data) if limit is None else limit
        self._fd: int | None = None
        self._written = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name=f"feed-{path.name}", daemon=True)

    def start(self) -> None:
        if not self.path.exists():
            os.mkfifo(self.path)
        self._thread.start()

    def _feed(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until the reader opens the pipe
        if self._stop.is_set():  # opened by `stop` only to release this thread
            os.close(fd)
            return
        self._fd = fd
        try:
            view = memoryview(self.data)[: self.limit]
            while view:
                view = view[os.write(fd, view):]
            self._written.set()
            if self.limit < len(self.data):
                self._stop.wait(DEADLINE_SECONDS)
        except BrokenPipeError:  # the reader was killed
            pass
        finally:
            self._fd = None
            os.close(fd)

    def drained(self) -> bool:
        fd = self._fd
        return self._written.is_set() and fd is not None and unread_bytes(fd) == 0

    def stop(self) -> None:
        """Close the pipe (after the reader was killed) and end the thread."""
        self._stop.set()
        if self._thread.is_alive() and self._fd is None:  # still waiting for a reader to open the pipe
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        self._thread.join(DEADLINE_SECONDS)


# --------------------------------------------------------------------------------------------------
# A signal other than SIGKILL: the child is told to stop (SIGTERM, as Kubernetes and Vertex AI do
# before SIGKILL on preemption) and may act on it.


@dataclasses.dataclass
class Signalled:
    """One signal sent to a child: where it was aimed, what the condition saw, how the child exited."""

    aim: str
    observed: object
    returncode: int
    log: str


def signal_when(
    args: list[str],
    condition: Callable[[], object],
    *,
    log_path: Path,
    aim: str,
    signum: int = signal.SIGTERM,
    env: dict[str, str] | None = None,
) -> Signalled:
    """Start ``deepface <args>``, poll ``condition()`` and send ``signum`` to the child process alone
    (not its group: Kubernetes signals a container's main process) as soon as it is truthy; then wait
    for the child to exit on its own (SIGKILL to the group after DEADLINE_SECONDS, a harness failure).

    Raises:
        HarnessError: the child exited before the condition held, the condition did not hold within
            DEADLINE_SECONDS, or the child did not exit within DEADLINE_SECONDS of the signal.
    """
    child = Child(args, log_path, env)
    try:
        observed = await_point(child, condition, aim, "signal")
        child.process.send_signal(signum)
        try:
            returncode = child.wait(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{aim}: the child did not exit after the signal:\n{child.log()[-4000:]}") from None
    finally:
        if child.process.returncode is None:
            child.kill()
    return Signalled(aim, observed, returncode, child.log())


def log_contains(log_path: Path, text: str) -> bool:
    """Whether the child's log (a file, written unbuffered) holds ``text`` yet."""
    return log_path.exists() and text in log_path.read_text(errors="replace")


def checkpoint_step(checkpoint_dir: Path) -> int:
    """Global step of the newest complete checkpoint in ``checkpoint_dir`` (TensorFlow writes its
    ``checkpoint`` state file last), 0 if none."""
    import re

    state = checkpoint_dir / "checkpoint"
    text = state.read_text() if state.exists() else ""
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else 0


def classifier_weights(model_dir: Path) -> list:
    """The weights of ``model_dir/classifier.keras`` (numpy arrays, in the model's order)."""
    import keras

    import deepface.layers  # noqa: F401  (registers LocallyConnected2D for loading)

    return keras.saving.load_model(model_dir / "classifier.keras", compile=False).get_weights()


# --------------------------------------------------------------------------------------------------
# SIGTERM: what Kubernetes and Vertex AI send to a task's main process before SIGKILL.

GRACE_SECONDS = 30.0  # Kubernetes' default terminationGracePeriodSeconds: SIGKILL follows SIGTERM after it
TERMINATED_EXIT = 128 + signal.SIGTERM  # 143


def process_table() -> dict[int, tuple[int, int, str]]:
    """Every live process (zombies left out) as ``pid -> (parent pid, process group, state)``, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:  # ended meanwhile
            continue
        state, parent, group = stat.rpartition(")")[2].split()[:3]  # after "pid (command)"
        if state not in "ZX":
            table[int(entry)] = (int(parent), int(group), state)
    return table


def command_line(pid: int) -> str:
    """The command line of a process ("" once it ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, str]:
    """The live processes whose chain of parents includes ``pid`` (its children, theirs...), with their
    command lines: a stage's forkserver, resource tracker and pool processes."""
    table = process_table()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _, _) in table.items() if parent in frontier} - found
        found |= frontier
    return {child: command_line(child) for child in sorted(found)}


def group_members(group: int) -> dict[int, str]:
    """The live processes of process group ``group``, with their command lines. A `Child` is the leader
    of its own group and everything it starts stays in it, so once the child is reaped this is what it
    left running (orphans are re-parented, which hides them from `descendants`)."""
    return {pid: command_line(pid) for pid, (_, pgid, _) in sorted(process_table().items()) if pgid == group}


@dataclasses.dataclass
class Termination:
    """One SIGTERM to a child's main process: where it was aimed, what the condition saw, the child's
    processes just before it, the exit status, the seconds from SIGTERM to the exit and from the exit
    until the child's process group was empty, what was left of that group after GRACE_SECONDS (then
    SIGKILLed), and the log."""

    aim: str
    observed: object
    processes: dict[int, str]
    returncode: int
    exit_seconds: float
    group_seconds: float
    left: dict[int, str]
    log: str


def terminate_when(
    args: list[str],
    condition: Callable[[], object],
    *,
    log_path: Path,
    aim: str,
    min_processes: int = 0,
    env: dict[str, str] | None = None,
    before_start: Callable[[], None] | None = None,
    after_exit: Callable[[], None] | None = None,
) -> Termination:
    """Start ``deepface <args>``, poll ``condition()``, and as soon as it is truthy and the child has at
    least ``min_processes`` descendants (with a pool of n processes: n, the forkserver and the resource
    tracker) send SIGTERM to the child's main process only (as Kubernetes does to a container's
    process), then wait for it to exit and for its process group to empty. Nothing is killed before
    GRACE_SECONDS have passed after the exit; whatever of the group is still running then is recorded
    in ``left`` and SIGKILLed.

    Raises:
        HarnessError: the child exited before the condition held, or the condition did not hold (or
            the child did not exit after SIGTERM) within DEADLINE_SECONDS.
    """
    if before_start:
        before_start()
    child = Child(args, log_path, env)
    group = child.process.pid
    try:
        def ready():  # the condition holds and the pool is up: (observed, processes), else None
            if (observed := condition()) and len(processes := descendants(group)) >= min_processes:
                return observed, processes
            return None

        observed, processes = await_point(child, ready, aim, "SIGTERM")
        sent = time.monotonic()
        child.process.send_signal(signal.SIGTERM)
        try:
            returncode = child.wait(timeout=DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{aim}: still running {DEADLINE_SECONDS} s after SIGTERM:\n"
                               f"{child.log()[-4000:]}") from None
        exited = time.monotonic()
        grace = exited + GRACE_SECONDS
        while (left := group_members(group)) and time.monotonic() < grace:
            time.sleep(POLL_SECONDS)  # waiting for processes to end: there is nothing else to wait on
        emptied = time.monotonic()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # whatever is left (nothing, when the stage behaves)
        child.wait()
        if after_exit:
            after_exit()
    return Termination(aim, observed, processes, returncode, exited - sent, emptied - exited, left, child.log())
