"""The one exception type for user errors (bad input, bad parameters), and the one reading of OS errors.

`os_error_message` turns any `OSError` (a full or read-only disk, refused permission, a file where a
directory belongs, too many open files...) into one line that names the path and the fix for its errno;
`system_error_message` does the same for TensorFlow's file-system errors (a checkpoint on a full disk
raises ``tf.errors.ResourceExhaustedError``, not an OSError). The ``deepface`` command line prints it for
every command (`deepface.cli`), the pipeline's tasks print it (`components.task_start`), and fetch raises
it as a `DeepFaceError` (`deepface.transfer.disk_error`).
"""

from __future__ import annotations

import errno
import os
import re

# errno -> what to do about it. ``{user}`` is the user running this process (EACCES / EPERM).
_OUT = "or choose another output directory (--out)"
FIXES = {
    errno.ENOSPC: f"the disk is full: free some space {_OUT}",
    errno.EDQUOT: f"the disk quota is used up: free some space, raise the quota {_OUT}",
    errno.EFBIG: f"the file is too large for this file system {_OUT}",
    errno.EACCES: f"{{user}} may not do this there: change its permissions or owner, run as a user who may, {_OUT}",
    errno.EPERM: f"{{user}} may not do this there: change its permissions or owner, run as a user who may, {_OUT}",
    errno.EROFS: f"the file system is read-only: mount it writable {_OUT}",
    errno.EEXIST: f"a file is where a directory is expected: move or remove it, {_OUT}",
    errno.ENOTDIR: f"a file is where a directory is expected on this path: move or remove it, {_OUT}",
    errno.EISDIR: "a directory is where a file is expected: move or remove it, or give another path",
    errno.ENOENT: "it does not exist: check the path",
    errno.EMFILE: "this process has too many open files: raise its limit (ulimit -n) or use fewer workers",
    errno.ENFILE: "the system has too many open files: close other programs or raise fs.file-max",
    errno.ENAMETOOLONG: "the name is too long for this file system: choose a shorter path",
    errno.ELOOP: "too many symbolic links: check the links on this path",
    errno.EIO: "the device reported an input/output error: check the disk (dmesg) or choose another directory",
    errno.EBUSY: "the file or device is busy: stop what uses it, or choose another path",
    errno.ETXTBSY: "the file is busy: stop what uses it, or choose another path",
    errno.EXDEV: "it cannot be moved across file systems: keep the output on one file system",
    errno.ENOMEM: "out of memory: use fewer workers or smaller batches",
}


class DeepFaceError(Exception):
    """A problem with the user's input: the message names the file or parameter and the fix.

    The CLI prints it as one line without a traceback (exit code 1); a KFP component lets it fail the task.
    """


def current_user() -> str:
    """``uid N (name)`` of the user running this process (``uid N`` when it has no name)."""
    uid = os.geteuid()
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


def os_error_message(error: OSError, path: str | os.PathLike | None = None, *, action: str | None = None) -> str:
    """One line for ``error``: the path, what the system said, and the fix for its errno.

    Args:
        error: any OSError. Its ``filename`` (and ``filename2``, a rename's target) name the path; ``path``
            (what the caller was working on) is used only when the error names none.
        action: a verb for the message's start (``"write"``: ``cannot write PATH: ...``); else ``PATH: ...``.

    Example: ``/out/classes.txt: No space left on device (ENOSPC); the disk is full: free some space or
    choose another output directory (--out)``.
    """
    names = [str(name) for name in (error.filename, error.filename2) if name not in (None, "")]
    where = " -> ".join(names) if names else (str(path) if path is not None else "")
    reason = error.strerror or str(error) or error.__class__.__name__
    code = errno.errorcode.get(error.errno) if error.errno is not None else None
    if code:
        reason += f" ({code})"
    fix = FIXES.get(error.errno, "check the path, its permissions and the disk")
    head = f"cannot {action} {where}" if action else where or "an operating-system error"
    return f"{head}: {reason}; {fix.format(user=current_user())}".replace("\n", " ")


# TensorFlow's decoration of an op's message: ``{{function_node ...}}`` before it, `` [Op:SaveV2]`` after it.
_TF_DECORATION = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\]")


def system_error_message(error: BaseException) -> str | None:
    """The one line (`os_error_message`) of an OSError, or of a TensorFlow error (``tf.errors.OpError``)
    whose message holds an OS error's text (``PATH; No space left on device``); None for anything else
    (a bug keeps its traceback)."""
    if isinstance(error, OSError):
        return os_error_message(error)
    if not type(error).__module__.startswith("tensorflow"):
        return None
    text = _TF_DECORATION.sub("", str(getattr(error, "message", error))).strip()
    for code in FIXES:
        reason = os.strerror(code)
        if reason in text:
            where = text.split(reason, 1)[0].rstrip(" ;:,")
            return os_error_message(OSError(code, reason, where or None))
    return None
