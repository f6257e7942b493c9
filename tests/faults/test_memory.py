"""Bounded memory (issue 14): every stage meets hostile sizes in a child process and stays under a stated
ceiling, with a clear error or a correct result.

How memory is limited and measured: RLIMIT_AS does not work with TensorFlow (it reserves far more address
space than it uses), so each child reports its own peak resident memory as it ends (``VmHWM`` of
/proc/self/status: the high-water mark of the memory map it has since exec) and that is compared with the
ceiling. (Its rusage's ``ru_maxrss`` would not do: Linux carries the parent's high-water mark over the
exec, so a child of a 3 GB test worker reads 3 GB.) Children that import no TensorFlow (pairs, lists, class
maps, archives) also run under RLIMIT_AS = 1 GiB, so a regression ends in a MemoryError in the child, not
in the machine's OOM killer. cgroup limits are not used: the machine's cgroups belong to its runner.

Ceilings (peak RSS of the child, VmHWM, MiB) against what was measured on the 2-core development machine:

    stage, hostile input                                         measured   ceiling
    pairs: 2 M lines after a '10 300' header (error, line 6002)       20.3       64
    pairs: 10 M lines (300 MB) likewise (slow)                        20.2       64
    pairs: header promising 20 M pairs, 2 M lines (error, line 1)     19.0       64
    pairs: 100,000 = max_pairs pairs of distinct names (read)         40.1      128
    pairs / image list / class map: a 1 MiB line (error)         19.1-22.6       64
    archive (+ labels, ImageCollection): member of 64 MiB + 1 byte    23.7       64
    archive: a 2 GiB all-zero member, 9 MB .tar.gz (slow, 33 s)       23.7       64
    archive: a PAX name of 1 MiB + (error)                            19.0       64
    labels: 1 M classes from a list (result), then load_classes      315        512

The stages' ceilings, stated: reading a pairs file holds at most ``max_pairs`` pairs (about 0.2 KiB each,
a setting, 100,000 by default); a line of a pairs file, image list or class map at most 4 KiB
(`deepface.lines`); an archive member at most 64 MiB (`deepface.archives.MAX_MEMBER_BYTES`), and
extended tar headers at most 1 MiB; labels grows with the distinct image names and identities (about
0.3 KiB per image name).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from deepface.archives import MAX_HEADER_BYTES, MAX_MEMBER_BYTES, TOO_LARGE
from deepface.lines import EXCERPT_CHARS
from deepface.settings import EvaluateSettings

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
ADDRESS_SPACE = 1 << 30  # RLIMIT_AS of the children without TensorFlow
MAX_MESSAGE = 600  # characters of an error message quoting a hostile line (80 of it at most)


def run_stage(tmp_path: Path, body: str) -> tuple[dict, float]:
    """Runs ``body`` (Python defining ``result``, with the deepface package importable) in a child under
    RLIMIT_AS; returns ``({"result": ...} or {"error": message}, peak RSS in MiB)``."""
    script = tmp_path / "stage.py"
    script.write_text("import json\nfrom deepface.errors import DeepFaceError\ntry:\n"
                      + textwrap.indent(textwrap.dedent(body).strip(), "    ")
                      + '\n    out = {"result": result}\nexcept DeepFaceError as error:\n'
                      + '    out = {"error": str(error)}\n'
                      + "out['peak_kib'] = next(int(line.split()[1]) for line in open('/proc/self/status')"
                      + " if line.startswith('VmHWM:'))\n"
                      + "print(json.dumps(out))\n")
    output = tmp_path / "stage.out"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    with open(output, "wb") as out:
        child = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=limit, env={**os.environ, "PYTHONPATH": str(ROOT)})
        child.wait()
    text = output.read_text()
    assert child.returncode == 0, text[-3000:]
    out = json.loads(text.strip().splitlines()[-1])
    peak = out.pop("peak_kib") / 1024
    print(f"peak RSS {peak:.1f} MiB")  # the figures of the module docstring (pytest -s)
    return out, peak


def pair_line(k: int) -> str:
    """Line ``k`` of a well-formed View 2 file of sets of 300: 300 matched, then 300 mismatched pairs."""
    return f"Name_{k}\t1\t2\n" if k % 600 < 300 else f"Left_{k}\t1\tRight_{k}\t2\n"


def write_lines(path: Path, header: str, count: int, line=pair_line) -> Path:
    """``header`` then lines ``line(0)``... ``line(count - 1)``, written in blocks (never the whole file)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(header)
        for start in range(0, count, 100_000):
            handle.write("".join(line(k) for k in range(start, min(start + 100_000, count))))
    return path


# --------------------------------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("lines", [2_000_000, pytest.param(10_000_000, marks=pytest.mark.slow)])
def test_a_pairs_file_of_millions_of_lines_fails_at_the_first_line_its_header_does_not_promise(tmp_path, lines):
    pairs = write_lines(tmp_path / "pairs.txt", "10\t300\n", lines)
    out, peak = run_stage(tmp_path, f"""
        from deepface.pairs import read_pairs
        result = len(read_pairs({str(pairs)!r}))
    """)
    assert "pairs.txt:6002: the header promises 10 set(s)" in out["error"] and "more lines follow" in out["error"]
    assert peak < 64, f"{peak:.0f} MiB"


def test_a_header_promising_more_than_max_pairs_is_refused_before_any_pair_is_read(tmp_path):
    pairs = write_lines(tmp_path / "pairs.txt", "10\t1000000\n", 2_000_000)
    out, peak = run_stage(tmp_path, f"""
        from deepface.pairs import read_pairs
        result = len(read_pairs({str(pairs)!r}, max_pairs={EvaluateSettings().max_pairs}))
    """)
    assert "pairs.txt:1: the header '10\\t1000000' promises 20000000 pairs" in out["error"]
    assert "max_pairs=100000" in out["error"]
    assert peak < 64, f"{peak:.0f} MiB"


def test_max_pairs_pairs_of_distinct_names_are_read_under_the_ceiling(tmp_path):
    per_set = EvaluateSettings().max_pairs // 20
    with open(tmp_path / "pairs.txt", "w", encoding="utf-8") as handle:
        handle.write(f"10\t{per_set}\n")
        for fold in range(10):
            handle.write("".join(f"Person_{fold}_{k}\t1\t2\n" for k in range(per_set)))
            handle.write("".join(f"Left_{fold}_{k}\t1\tRight_{fold}_{k}\t3\n" for k in range(per_set)))
    out, peak = run_stage(tmp_path, f"""
        from deepface.pairs import read_pairs
        pairs = read_pairs({str(tmp_path / "pairs.txt")!r})
        result = [len(pairs), sum(pair.same for pair in pairs), pairs[-1].fold, pairs[-1].name2]
    """)
    assert out["result"] == [100_000, 50_000, 9, f"Right_9_{per_set - 1}"]
    assert peak < 128, f"{peak:.0f} MiB"


# ------------------------------------------------------------------------------------ one hostile line

ONE_MIB_LINE = "A" * MIB


@pytest.mark.parametrize("reader, content, needle", [
    ("from deepface.pairs import read_pairs as read", f"10\t300\n{ONE_MIB_LINE}\t1\t2\n", "line 2 is 1048580 bytes"),
    ("from deepface.labels import load_classes as read", f"n000001\n{ONE_MIB_LINE}\n", "line 2 is 1048576 bytes"),
    ("from deepface.labels import build_labels; read = lambda path: build_labels(path, path + '.out')",
     f"n000001/0001.jpg\n{ONE_MIB_LINE}/0001_01.jpg\n", "line 2 is 1048588 bytes"),
], ids=["pairs file", "class map", "image list: a 1 MiB identity name"])
def test_a_1mib_line_is_an_error_quoting_80_characters(tmp_path, reader, content, needle):
    path = tmp_path / ("classes.txt" if "load_classes" in reader else "input.txt")
    path.write_text(content, encoding="utf-8")
    out, peak = run_stage(tmp_path, f"""
        {reader}
        result = str(read({str(path)!r}))
    """)
    message = out["error"]
    assert str(path) in message and needle in message and "more than the 4096" in message
    assert "A" * EXCERPT_CHARS in message and "A" * (EXCERPT_CHARS + 1) not in message
    assert len(message) < MAX_MESSAGE
    assert peak < 64, f"{peak:.0f} MiB"


# ------------------------------------------------------------------------------------------- archives


class Zeros(io.RawIOBase):
    """``size`` zero bytes as a stream, so a huge member is written without holding it."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def zero_member_archive(path: Path, size: int) -> Path:
    """A .tar.gz holding ``train/n000001/huge.jpg`` (``size`` zero bytes) then a 3-byte image, streamed."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w|") as archive:
        info = tarfile.TarInfo("train/n000001/huge.jpg")
        info.size = size
        archive.addfile(info, io.BufferedReader(Zeros(size), 1 << 20))
        info = tarfile.TarInfo("train/n000002/small.jpg")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    return path


READ_ALL = """
    from deepface.archives import iter_members
    from deepface.labels import build_labels
    from deepface.pairs import ImageCollection
    read = [(m.name, m.problem, len(m.read())) for m in iter_members({archive!r}) if not m.problem]
    skipped = [(m.name, m.problem) for m in iter_members({archive!r}) if m.problem]
    collection = ImageCollection({archive!r})
    labels = build_labels({archive!r}, {archive!r} + ".labels")
    result = [read, skipped, sorted(collection.identities), labels["num_classes"], labels["ignored"]["by_reason"]]
"""


@pytest.mark.parametrize("size", [MAX_MEMBER_BYTES + 1, pytest.param(2 << 30, marks=pytest.mark.slow)],
                         ids=["64 MiB + 1 byte", "2 GiB"])
def test_an_archive_member_over_the_cap_is_skipped_unread_by_every_reader(tmp_path, size):
    archive = str(zero_member_archive(tmp_path / "huge.tar.gz", size))
    out, peak = run_stage(tmp_path, READ_ALL.format(archive=archive))
    read, skipped, identities, classes, ignored = out["result"]
    assert read == [["train/n000002/small.jpg", None, 3]]
    assert skipped == [["train/n000001/huge.jpg", TOO_LARGE]]
    assert identities == ["n000002"] and classes == 1 and sum(ignored.values()) == 1
    assert peak < 64, f"{peak:.0f} MiB"


def test_a_pax_header_over_1mib_is_an_error_naming_the_archive(tmp_path):
    path = tmp_path / "long.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(f"train/{'x' * MAX_HEADER_BYTES}/0001.jpg")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    out, peak = run_stage(tmp_path, f"""
        from deepface.archives import iter_members
        result = [m.name for m in iter_members({str(path)!r})]
    """)
    assert str(path) in out["error"] and "extended header" in out["error"] and len(out["error"]) < MAX_MESSAGE
    assert peak < 64, f"{peak:.0f} MiB"


# --------------------------------------------------------------------------------------------- labels


def test_a_class_map_of_1m_classes_is_built_and_loaded_under_the_ceiling(tmp_path):
    write_lines(tmp_path / "train_list.txt", "", 1_000_000, lambda k: f"n{k:07d}/0001_01.jpg\n")
    out, peak = run_stage(tmp_path, f"""
        from deepface.labels import build_labels, load_classes
        manifest = build_labels({str(tmp_path / "train_list.txt")!r}, {str(tmp_path / "labels")!r})
        classes = load_classes({str(tmp_path / "labels")!r})
        result = [manifest["num_classes"], len(classes), classes[-1]]
    """)
    assert out["result"] == [1_000_000, 1_000_000, "n0999999"]
    assert peak < 512, f"{peak:.0f} MiB"
