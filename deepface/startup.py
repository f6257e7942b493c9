"""TensorFlow's start-up lines, kept out of the logs.

TensorFlow 2.21 writes a few lines through absl while its shared libraries load, before
``absl::InitializeLog()`` is called, so ``TF_CPP_MIN_LOG_LEVEL`` cannot filter them::

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796027719.503326   12978 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1796027719.503832   12978 cudart_stub.cc:31] Could not find cuda drivers on your machine, ...

(each twice). Every CPU task of the pipeline printed them, and the ``I`` lines read as errors in Cloud
Logging. While ``tensorflow`` is imported (`install`: a `sys.meta_path` hook around its loader), file
descriptor 2 goes to a pipe; a thread copies each line back to the real standard error except those of
`NOISE` (and, where no NVIDIA driver is loaded, `NO_DRIVER_NOISE`: ``failed call to cuInit``, an ERROR
line on every CPU machine). The devices are listed inside the same window, since CUDA's initialisation
prints. With ``TF_CPP_MIN_LOG_LEVEL=0`` (the user asked for TensorFlow's INFO lines) nothing is filtered.

Only the import is wrapped: what TensorFlow logs later goes through its own level filter.
"""

from __future__ import annotations

import os
import re
import sys
import threading

from deepface import import_hooks

# The start-up lines (matched on whole lines, bytes): absl's notice, and INFO lines of the files that print
# at load time.
NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ (port|cpu_feature_guard)\.cc:\d+\] .*"
)
# Where no NVIDIA driver is loaded (`NVIDIA_DRIVER`), also CUDA's lines: that there is none to use. With a
# driver they are the clue to a broken GPU set-up, and stay.
NO_DRIVER_NOISE = re.compile(
    rb"I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers.*"
    rb"|E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*"
)
NVIDIA_DRIVER = "/proc/driver/nvidia"


def _is_noise(line: bytes) -> bool:
    return bool(NOISE.fullmatch(line) or (NO_DRIVER_NOISE.fullmatch(line) and not os.path.exists(NVIDIA_DRIVER)))


def _copy_lines(source: int, target: int) -> None:
    """Copy ``source`` (a pipe) to ``target`` line by line, dropping `NOISE` lines; until end of file."""
    pending = b""
    while chunk := os.read(source, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not _is_noise(line))
        if kept:
            os.write(target, kept)
    if pending and not _is_noise(pending):
        os.write(target, pending)
    os.close(source)


class _FilteredStderr:
    """Context manager: fd 2 goes through `_copy_lines` while inside; restored (and drained) on exit."""

    def __enter__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=_copy_lines, args=(read, self.saved), daemon=True,
                                       name="tensorflow-start-up-filter")
        self.thread.start()
        return self

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the thread reads to its end
        self.thread.join()
        os.close(self.saved)
        return False


def _level_set() -> bool:
    """Whether ``TF_CPP_MIN_LOG_LEVEL`` asks for fewer lines than all (set, and not 0)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0")


def _import_quietly(module, execute) -> None:
    """Run TensorFlow's own import (an `deepface.import_hooks` ``around``), with fd 2 filtered when the
    level is set at that moment: the command line sets it after ``import deepface`` installed the hook."""
    if not _level_set():
        execute()
        return
    with _FilteredStderr():
        execute()
        # Finding the devices is when CUDA is initialised (and says so): inside the filter, once. It does
        # not fix them: visible devices and memory growth can still be set afterwards.
        module.config.list_physical_devices()


def install() -> None:
    """Filter TensorFlow's start-up lines when it is imported later in this process (see the module
    docstring), if ``TF_CPP_MIN_LOG_LEVEL`` is then set and not 0. Does nothing when TensorFlow is already
    imported."""
    if "tensorflow" in sys.modules:
        return
    import_hooks.install("tensorflow", _import_quietly)
