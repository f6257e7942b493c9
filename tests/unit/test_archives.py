"""deepface.archives, deepface.lines and the labels stage's identity rules (issue 14): the member size cap,
permission errors said as such, identity names over 255 bytes, short quotes of bad lines."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from deepface.archives import MAX_MEMBER_BYTES, TOO_LARGE, identity_problem, iter_members
from deepface.errors import DeepFaceError
from deepface.labels import build_labels, load_classes
from deepface.lines import excerpt, read_lines

ROOT = Path(__file__).resolve().parents[2]


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_a_directory_file_over_the_cap_is_never_read(tmp_path, caplog):
    (tmp_path / "src" / "n1").mkdir(parents=True)
    with open(tmp_path / "src" / "n1" / "huge.jpg", "wb") as handle:
        handle.truncate(MAX_MEMBER_BYTES + 1)  # sparse: no disk space used
    (tmp_path / "src" / "n1" / "small.jpg").write_bytes(b"abc")
    members = {member.name: member for member in iter_members(tmp_path / "src")}
    assert members["n1/huge.jpg"].problem == TOO_LARGE
    with pytest.raises(DeepFaceError, match="never read"):
        members["n1/huge.jpg"].read()
    assert members["n1/small.jpg"].read() == b"abc"
    assert "n1/huge.jpg' is 67108865 bytes, larger than 64 MiB" in caplog.text


def test_an_archive_member_at_the_cap_is_read(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", {"train/n1/edge.jpg": bytes(MAX_MEMBER_BYTES)})
    sizes = [(member.problem, len(member.read())) for member in iter_members(archive)]
    assert sizes == [(None, MAX_MEMBER_BYTES)]


def _as_nobody(code: str) -> str:
    """Runs ``code`` in a child that imports deepface, then becomes uid/gid 65534 (root bypasses file
    permissions); returns its output."""
    prelude = ("import os\nfrom deepface.archives import iter_members\nfrom deepface.labels import build_labels\n"
               "from deepface.errors import DeepFaceError\nos.setgid(65534)\nos.setuid(65534)\n")
    result = subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    return result.stdout + result.stderr


@pytest.fixture
def open_dir():
    """A fresh directory that every user may enter (pytest's own are root's only), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="deepface-perm-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a child as another user")
def test_an_unreadable_archive_is_a_permission_error_not_a_corrupt_archive(open_dir, tmp_path):
    archive = _tar(open_dir / "lfw.tgz", {"lfw/A/A_0001.jpg": b"abc"})
    archive.chmod(0o600)  # owned by root
    listing = open_dir / "train_list.txt"
    listing.write_text("n1/1.jpg\n")
    listing.chmod(0o600)
    hidden = _tar(tmp_path / "behind.tgz", {"lfw/A/A_0001.jpg": b"abc"})  # in a folder only root may enter
    output = _as_nobody(
        f"calls = (lambda: list(iter_members({str(archive)!r})), lambda: build_labels({str(listing)!r}, '/tmp/x'),\n"
        f"         lambda: list(iter_members({str(hidden)!r})))\n"
        "for call in calls:\n"
        "    try:\n        call()\n    except DeepFaceError as error:\n        print('ERROR', error)\n"
    )
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 3, output
    assert f"cannot read {archive}: Permission denied (EACCES)" in errors[0]
    assert "corrupt" not in errors[0] and "not a tar archive" not in errors[0]
    assert f"cannot read {listing}: Permission denied (EACCES)" in errors[1]
    assert f"cannot read {hidden}: Permission denied (EACCES)" in errors[2]


def test_identity_rule():
    assert identity_problem("n000002") is None and identity_problem("John Smith") is None
    assert identity_problem("x" * 255) is None
    assert identity_problem("x" * 256) == "is 256 bytes long, more than the 255 an identity id may have"
    assert identity_problem("a\tb") == "has a tab or a line break"
    assert identity_problem(" a") == "has surrounding spaces"


def test_an_identity_over_255_bytes_is_refused_naming_the_line_or_member(tmp_path):
    listing = tmp_path / "train_list.txt"
    listing.write_text(f"n1/1.jpg\n{'y' * 256}/1.jpg\n")
    with pytest.raises(DeepFaceError, match=rf"{listing} line 2: identity folder 'y{{80}}'…\(256 bytes\) is 256"):
        build_labels(listing, tmp_path / "out")
    archive = _tar(tmp_path / "train.tar.gz", {f"train/{'z' * 300}/1.jpg": b"abc"})
    with pytest.raises(DeepFaceError, match=r"train.tar.gz member 'train/z+'….*'z{80}'…\(300 bytes\) is 300 bytes"):
        build_labels(archive, tmp_path / "out")
    (tmp_path / "classes.txt").write_text(f"a\n{'b' * 256}\n")
    with pytest.raises(DeepFaceError, match=r"classes.txt line 2 \('b{80}'…\(256 bytes\)\) is 256 bytes long"):
        load_classes(tmp_path / "classes.txt")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_image_list_of_many_malformed_lines_quotes_ten_short_ones(tmp_path):
    listing = tmp_path / "train_list.txt"
    listing.write_text("".join(f"{'q' * 1000}{k}.jpg\n" for k in range(5000)))
    with pytest.raises(DeepFaceError) as error:
        build_labels(listing, tmp_path / "out")
    message = str(error.value)
    assert "has 5000 malformed lines (line 1: 'q" in message and "and 4990 more" in message
    assert len(message) < 2500


def test_read_lines_keeps_carriage_returns_and_excerpt_says_the_size(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\nthree")
    assert list(read_lines(tmp_path / "a.txt", "list", "fix it")) == [(1, "one\r"), (2, "two"), (3, "three")]
    (tmp_path / "b.txt").write_bytes(b"ok\n\xff\n")
    with pytest.raises(DeepFaceError, match=r"b.txt line 2 is not UTF-8 text \(byte 1 of the line\); fix it"):
        list(read_lines(tmp_path / "b.txt", "list", "fix it"))
    assert excerpt("short") == "'short'"
    assert excerpt("é" * 100) == repr("é" * 80) + "…(200 bytes)"
