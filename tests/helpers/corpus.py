"""The bad-input corpus: every kind of broken or hostile input the stages may meet, made by code.

Nothing here is a binary checked into the repository: images are drawn with Pillow and then damaged,
archives are written with tarfile, text files are built from lines. Each function returns bytes (or
writes a file and returns its path); what each stage must do with each input is in
tests/faults/test_bad_inputs.py.

- `images`: image files by name: good ones in odd formats and modes (PNG, GIF, CMYK, grey, 16-bit,
  palette, alpha, wrong extensions) and bad ones (truncated, corrupt, empty, text, decompression bombs).
- `hostile_members`: tar members with absolute paths, ``..``, symlinks, hard links, devices, non-UTF-8
  and very long names, an empty identity folder.
- `truncated`, `cut_at_member`, `corrupt_gzip`, `flip_bit`, `not_an_archive`: broken archives.
- `image_list`, `classes_file`, `pairs_file`: malformed text inputs, by case name.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# A name whose bytes are not UTF-8, as Python spells it (surrogate escapes), for tar member names.
NON_UTF8 = b"n\xff\xfeid".decode("utf-8", "surrogateescape")
LONG = "x" * 240  # a long path component: fits a file system name, not with a suffix such as ".part"

# How tfrecords must treat an image file: stored (converted if need be), or skipped with a reason.
STORED = "stored"
IGNORED = "ignored"  # not an image file name: ignored and counted


# --------------------------------------------------------------------------------------------------
# Images


def noise_image(seed: int, width: int = 40, height: int = 32, mode: str = "RGB") -> Image.Image:
    """A ``width x height`` image of seeded noise, converted to ``mode``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def encode(image: Image.Image, format: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def jpeg_claiming_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header claims ``width x height`` (a decompression bomb, as far as headers go)."""
    frame = jpeg.index(b"\xff\xc0")
    return jpeg[: frame + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[frame + 9:]


def png_claiming_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height``, with a valid CRC, so only the pixel count is wrong."""
    start = png.index(b"IHDR")
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + png[start + 12: start + 17]
    return png[:start] + header + zlib.crc32(header).to_bytes(4, "big") + png[start + 21:]


def _orientation(value: int) -> bytes:
    """EXIF bytes holding only the Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def images(seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """``{file name: (bytes, expected)}``; ``expected`` is STORED, IGNORED or the start of the skip reason
    the tfrecords manifest must give."""
    good = encode(noise_image(seed))
    scan = good.index(b"\xff\xda") + 14
    png = encode(noise_image(seed + 1), "PNG")
    deep = Image.fromarray((np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 50).astype(np.uint16))
    return {
        "good.jpg": (good, STORED),
        "png.png": (png, STORED),
        "gif.gif": (encode(noise_image(seed + 2, mode="P"), "GIF"), STORED),
        "cmyk.jpg": (encode(noise_image(seed + 3, mode="CMYK")), STORED),
        "grey.jpg": (encode(noise_image(seed + 4, mode="L")), STORED),
        "grey16.png": (encode(deep, "PNG"), STORED),
        "palette.png": (encode(noise_image(seed + 5, mode="P"), "PNG"), STORED),
        "alpha.png": (encode(noise_image(seed + 6, mode="RGBA"), "PNG"), STORED),
        "png_named.jpg": (png, STORED),  # wrong extension, right content
        "jpeg_named.png": (good, STORED),
        "upper.JPG": (good, STORED),
        "truncated.jpg": (good[: len(good) // 2], "corrupt or truncated image"),
        "corrupt_scan.jpg": (good[:scan] + bytes(range(256)) * 4, "corrupt or truncated image"),
        "corrupt_header.jpg": (good[:20] + bytes(range(256)) * 4, "not an image, or a corrupt one"),
        "truncated.png": (png[: len(png) // 2], "corrupt or truncated image"),
        "zero_bytes.jpg": (b"", "empty file"),
        "text_named.jpg": (b"not an image, only text\n", "not an image, or a corrupt one"),
        "tiff.tif": (encode(noise_image(seed + 7), "TIFF"), STORED),
        "webp.webp": (encode(noise_image(seed + 8), "WEBP"), STORED),
        "rotated_exif.jpg": (encode(noise_image(seed + 9), exif=_orientation(6)), STORED),
        # Headers claiming far more pixels than the file's bytes can hold (Pillow's own limit is not the rule:
        # a 108 MP phone JPEG of 3.2 MB is a photo, tests/unit/test_faces.py).
        "bomb.jpg": (jpeg_claiming_size(good, 30_000, 30_000), "decompression bomb"),
        "bomb_warning.jpg": (jpeg_claiming_size(good, 10_000, 10_000), "decompression bomb"),
        "bomb.png": (png_claiming_size(png, 50_000, 50_000), "decompression bomb"),
        "notes.txt": (b"a text file beside the images\n", IGNORED),
        ".hidden.jpg": (good, IGNORED),  # hidden files (e.g. macOS ._ resource forks) are not images
    }


# --------------------------------------------------------------------------------------------------
# Archives


@dataclasses.dataclass(frozen=True)
class Member:
    """A tar member to write: a regular file (``data``), or a ``symlink``/``hardlink`` to ``target``,
    a ``directory``, a ``device`` or a ``fifo``."""

    name: str
    data: bytes = b""
    kind: str = "file"
    target: str = ""


_TYPES = {"file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "directory": tarfile.DIRTYPE, "device": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}


def write_tar(path: Path, members: list[Member], mode: str = "w:gz") -> Path:
    """Write ``members`` as they are (names unchecked: absolute, ``..``, non-UTF-8...) in PAX format."""
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = _TYPES[member.kind]
            info.linkname = member.target
            info.mode = 0o755 if member.kind == "directory" else 0o644
            info.size = len(member.data) if member.kind == "file" else 0
            archive.addfile(info, io.BytesIO(member.data) if member.kind == "file" else None)
    return path


def hostile_members(escape_dir: Path, seed: int = 0) -> dict[str, tuple[Member, str]]:
    """``{case: (member, expected)}``: members a stage reading archives must never write or follow.

    ``escape_dir`` is an absolute directory that must stay untouched (an extraction would fill it).
    ``expected`` for the labels and tfrecords stages: STORED, IGNORED (ignored and counted: links,
    devices, absolute or ``..`` names, names that are not UTF-8) or "left out" (a folder entry).
    """
    face = encode(noise_image(seed + 10))
    absolute = (escape_dir / "n000001" / "absolute.jpg").as_posix()
    return {
        "absolute path": (Member(absolute, face), IGNORED),
        "dot-dot path": (Member("../../escape/n000001/dotdot.jpg", face), IGNORED),
        "inner dot-dot": (Member("train/n000001/../../../escape/inner.jpg", face), IGNORED),
        "symlink out": (Member("train/n000001/link.jpg", kind="symlink", target="/etc/passwd"), IGNORED),
        "symlink up": (Member("train/n000001/up.jpg", kind="symlink", target="../../../escape/x.jpg"), IGNORED),
        "hard link out": (Member("train/n000001/hard.jpg", kind="hardlink", target="/etc/passwd"), IGNORED),
        "device": (Member("train/n000001/device.jpg", kind="device"), IGNORED),
        "fifo": (Member("train/n000001/fifo.jpg", kind="fifo"), IGNORED),
        "non-UTF-8 file name": (Member(f"train/n000001/{NON_UTF8}.jpg", face), IGNORED),
        "long file name": (Member(f"train/n000001/{LONG}.jpg", face), STORED),
        "long identity": (Member(f"train/{LONG}/0001.jpg", face), STORED),
        "empty identity folder": (Member("train/n000009/", kind="directory"), "left out"),
    }


def non_utf8_identity(seed: int = 0) -> Member:
    """An image whose identity folder name is not UTF-8 (it cannot be a line of classes.txt)."""
    return Member(f"train/{NON_UTF8}/0001.jpg", encode(noise_image(seed + 20)))


def truncated(archive: bytes) -> bytes:
    """The first half of an archive (an interrupted copy)."""
    return archive[: len(archive) // 2]


def cut_at_member(archive: bytes, index: int) -> bytes:
    """An uncompressed tar cut just before the header of member ``index``: every member before it is
    whole and there is no end-of-archive marker (a copy interrupted at a block boundary)."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as reader:
        return archive[: reader.getmembers()[index].offset]


def corrupt_gzip(archive: bytes) -> bytes:
    """An archive with garbage over its middle (a damaged copy of the same length)."""
    middle = len(archive) // 2
    return archive[:middle] + bytes(range(256)) * 4 + archive[middle + 1024:]


def flip_bit(archive: bytes, fraction: float = 1 / 3) -> bytes:
    """An archive with one bit flipped at ``fraction`` of its length (inside the compressed data)."""
    position = int(len(archive) * fraction)
    return archive[:position] + bytes([archive[position] ^ 1]) + archive[position + 1:]


def not_an_archive() -> bytes:
    """Gzip-compressed text: the right compression, no tar inside."""
    return gzip.compress(b"this is not a tar archive\n" * 40, mtime=0)


# --------------------------------------------------------------------------------------------------
# Text inputs


IMAGE_LISTS = {
    "duplicated entries": b"n000001/0001_01.jpg\nn000001/0001_01.jpg\nn000002/0001_01.jpg\n",
    "no identity folder": b"n000001/0001_01.jpg\n0002_01.jpg\n",
    "not an image name": b"n000001/0001_01.jpg\nn000001/notes.txt\n",
    "not UTF-8": b"n000001/0001_01.jpg\n\xff\xfe/0001.jpg\n",
    "tab in identity": b"n000001/0001_01.jpg\nn0\t01/0001.jpg\n",
    "only blank lines": b"\n\n  \n",
    "empty": b"",
    # hostile sizes (issue 14): refused naming the line, quoting at most 80 characters
    "a 1 MiB line": b"n000001/0001_01.jpg\n" + b"A" * (1 << 20) + b"/0001_01.jpg\n",
    "a 256-byte identity": b"n000001/0001_01.jpg\n" + b"y" * 256 + b"/0001_01.jpg\n",
}

CLASSES_FILES = {
    "blank line": (b"n000001\n\nn000002\n", "line 2"),
    "surrounding spaces": (b"n000001\n n000002\n", "line 2"),
    "repeated identity": (b"n000001\nn000002\nn000002\n", "line 3"),
    "not sorted": (b"n000002\nn000001\n", "line 2"),
    "not UTF-8": (b"n000001\n\xff\xfe\n", "not UTF-8"),
    "empty": (b"", "empty"),
    "a 1 MiB line": (b"n000001\n" + b"b" * (1 << 20) + b"\n", "line 2 is 1048576 bytes long"),
    "a 256-byte identity": (b"n000001\n" + b"b" * 256 + b"\n", "line 2"),
}

# Malformed pairs.txt files for LFW-style images of people A, B and C (two images each), and what the
# error must name: the file and line for a malformed line, the person and image for a missing image.
PAIRS_FILES = {
    "empty": (b"", ("pairs.txt", "empty pairs file")),
    "bad header": (b"ten\t1\nA\t1\t2\nA\t1\tB\t1\n", ("pairs.txt:1: bad header",)),
    "short matched line": (b"1\t1\nA\t1\nA\t1\tB\t1\n", ("pairs.txt:2: expected 'name i j'",)),
    "non-number": (b"1\t1\nA\t1\tx\nA\t1\tB\t1\n", ("pairs.txt:2: image number 'x'",)),
    "image number 0": (b"1\t1\nA\t0\t2\nA\t1\tB\t1\n", ("pairs.txt:2: image number '0'",)),
    "fewer lines than the header": (b"2\t1\nA\t1\t2\nA\t1\tB\t1\n", ("pairs.txt", "promises 2 set")),
    "not UTF-8": (b"1\t1\n\xff\t1\t2\nA\t1\tB\t1\n", ("pairs.txt", "UTF-8")),
    "unknown person": (b"1\t1\nZ\t1\t2\nA\t1\tB\t1\n", ("image 1 of Z",)),
    "image number too large": (b"1\t1\nA\t1\t9\nA\t1\tB\t1\n", ("image 9 of A",)),
    # hostile sizes (issue 14): refused before the rest of the file is read
    "a 1 MiB line": (b"1\t1\n" + b"A" * (1 << 20) + b"\t1\t2\nA\t1\tB\t1\n", ("pairs.txt line 2 is 1048580 bytes",)),
    "a 256-byte identity": (b"1\t1\n" + b"A" * 256 + b"\t1\t2\nA\t1\tB\t1\n", ("pairs.txt:2: identity", "256 bytes")),
    "more pairs than max_pairs": (b"10\t1000000\nA\t1\t2\n", ("pairs.txt:1", "max_pairs=100000")),
    "more lines than the header": (b"1\t1\nA\t1\t2\nA\t1\tB\t1\nA\t1\t2\n", ("pairs.txt:4", "more lines follow")),
}


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores with EXIF ``orientation`` for a scene that looks like ``upright``
    (EXIF 2.3, tag 0x0112: where the stored 0th row / 0th column lie in the visual image)."""
    a = upright
    return {
        1: lambda: a,                                  # top, left
        2: lambda: a[:, ::-1],                         # top, right
        3: lambda: a[::-1, ::-1],                      # bottom, right
        4: lambda: a[::-1],                            # bottom, left
        5: lambda: a.transpose(1, 0, 2),               # left, top
        6: lambda: np.rot90(a, 1),                     # right, top (display turns it 90 deg clockwise)
        7: lambda: a[::-1, ::-1].transpose(1, 0, 2),   # right, bottom
        8: lambda: np.rot90(a, -1),                    # left, bottom
    }[orientation]()
