"""Reading a text input (image list, class map, pairs file) line by line, in bounded memory, and quoting a
bad line in an error.

- `read_lines(path, what, fix)` yields ``(line number, text)`` one line at a time: it never holds more
  than one line of at most `MAX_LINE_BYTES` bytes, whatever the file's size.
- `excerpt(text)`: a bad line or name as an error quotes it, at most `EXCERPT_CHARS` characters and its size.

Example::

    >>> for number, line in read_lines("train_list.txt", "image list", "pass a list such as train_list.txt"):
    ...     ...

Raises `DeepFaceError` for a missing, unreadable or directory path (naming it and the fix), a line that is
not UTF-8 or longer than `MAX_LINE_BYTES` (naming the file and line).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from deepface.errors import DeepFaceError, os_error_message
from deepface.files import local_path

MAX_LINE_BYTES = 4096  # PATH_MAX: an image path, a class id or a pair fits many times over
EXCERPT_CHARS = 80  # characters of a bad line or name quoted in an error
_CHUNK = 1 << 16  # bytes read at a time while skipping the rest of an over-long line


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` quoted for an error message: ``repr(text)`` if at most ``limit`` characters, else the
    ``repr`` of its first ``limit`` characters, ``…`` and its size in bytes: ``'xxxx'…(1048576 bytes)``."""
    if len(text) <= limit:
        return repr(text)
    size = len(text.encode("utf-8", "surrogateescape"))
    return f"{text[:limit]!r}…({size} bytes)"


def read_lines(path: str | os.PathLike, what: str, fix: str, *,
               max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """The lines of a UTF-8 text file, one at a time: ``(number from 1, text without its "\\n")``; lines
    are split at "\\n" only (a "\\r" before it is kept, for the caller to refuse or strip).

    Args:
        path: the file.
        what: what the file is, for messages (``"pairs file"``).
        fix: what to do about a file that cannot be used (``"pass the path of LFW pairs.txt"``).
        max_bytes: the longest line allowed, in bytes (without its line break).

    Raises:
        DeepFaceError: ``{what} {path} does not exist; {fix}`` (likewise for a directory or an OS error such
            as permission denied, said as such), or ``{path} line N ...`` for a line that is not UTF-8 or is
            longer than ``max_bytes`` (its first characters and its size are quoted).
    """
    local = local_path(path)
    try:
        handle = open(local, "rb")
    except FileNotFoundError:
        raise DeepFaceError(f"{what} {path} does not exist; {fix}.") from None
    except IsADirectoryError:
        raise DeepFaceError(f"{what} {path} is a directory; {fix}.") from None
    except OSError as error:
        raise DeepFaceError(f"{what} {os_error_message(error, path, action='read')}") from None
    with handle:
        number = 0
        while True:
            try:
                raw = handle.readline(max_bytes + 1)  # room for the "\n"
            except OSError as error:
                raise DeepFaceError(f"{what} {os_error_message(error, path, action='read')}") from None
            if not raw:
                return
            number += 1
            line = raw[:-1] if raw.endswith(b"\n") else raw  # a "\r" before it stays: callers see it
            if len(line) > max_bytes:
                size = len(line) + _skip_line(handle)
                text = line[:4 * EXCERPT_CHARS].decode("utf-8", "replace")
                raise DeepFaceError(
                    f"{path} line {number} is {size} bytes long, more than the {max_bytes} a line of a {what} may "
                    f"have ({text[:EXCERPT_CHARS]!r}…); {fix}."
                )
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DeepFaceError(
                    f"{path} line {number} is not UTF-8 text (byte {error.start + 1} of the line); {fix}."
                ) from None
            yield number, text


def _skip_line(handle) -> int:
    """Reads to the end of the current line (in chunks); returns how many bytes it held, its break excluded."""
    skipped = 0
    while True:
        chunk = handle.readline(_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return skipped + len(chunk.rstrip(b"\n"))
        skipped += len(chunk)
