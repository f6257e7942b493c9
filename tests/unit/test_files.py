"""Atomic writes: nothing half-written under the final name, usual permissions, leftovers removable."""

import os
import stat

import pytest

from deepface import files


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out" / "data.json"
    files.write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError), files.atomic_open(target, "wb") as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert files.read_json(target) == {"a": [1, 2], "b": 1}  # the old content survives
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.json"]  # no temporary left


def test_outputs_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        files.write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_remove_temporaries_deletes_what_a_killed_write_left(tmp_path):
    (tmp_path / ".state.json.abc123.tmp").write_text("partial")  # as a SIGKILLed atomic_open leaves it
    (tmp_path / "state.json").write_text("{}")
    assert files.remove_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_md5_and_file_uri(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert files.md5_file(f"file://{path}") == "900150983cd24fb0d6963f7d28e17f72"
    assert not files.is_remote(f"file://{path}") and files.is_remote("gs://bucket/x")
