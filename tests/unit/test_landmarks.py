"""Landmark CSVs in VGGFace2's bb_landmark format: reading, writing, and every malformed row named."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from deepface.errors import DeepFaceError
from deepface.landmarks import (
    LANDMARK_HEADER,
    format_box_rows,
    format_landmark_rows,
    name_id,
    parse_landmarks,
    read_landmarks,
)

HEADER = ",".join(LANDMARK_HEADER)
# Rows as the release writes them (the first is loose_landmark_train.csv's first row).
RELEASE_TEXT = (
    f"{HEADER}\n"
    '"n000001/0001_01",75.81253,110.2077,103.1778,104.6074,90.06353,133.3624,85.08184,149.0388,114.0266,144.5742\n'
    '"n000001/0002_01",1,2,3,4,5,6,7,8,9,10\n'
)


def test_the_release_format_reads_and_writes_back_byte_for_byte():
    table = parse_landmarks(RELEASE_TEXT, "loose_landmark_train.csv")
    assert len(table) == 2
    np.testing.assert_allclose(table.get("train/n000001/0001_01.jpg")[0], [75.81253, 110.2077], rtol=1e-6)
    assert table.get("n000001/0002_01").tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]
    assert table.get("train/n000001/0003_01.jpg") is None
    rows = [(name, table.get(name)) for name in ("n000001/0001_01", "n000001/0002_01")]
    assert format_landmark_rows(rows) == RELEASE_TEXT


def test_names_are_the_path_below_the_split_without_extension():
    assert name_id("train/n000001/0001_01.jpg") == "n000001/0001_01"
    assert name_id("lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg") == "Aaron_Peirsol/Aaron_Peirsol_0001"
    assert name_id("n000001/0001_01") == "n000001/0001_01"


def test_boxes_are_written_as_integers():
    assert format_box_rows([("n1/0001_01", (10.4, 20.6, 30, 40))]) == 'NAME_ID,X,Y,W,H\n"n1/0001_01",10,21,30,40\n'


BAD_ROWS = {
    "missing field": ('"n1/a",1,2,3,4,5,6,7,8,9\n', "line 2 has 10 fields"),
    "extra field": ('"n1/a",1,2,3,4,5,6,7,8,9,10,11\n', "line 2 has 12 fields"),
    "unparsable": ('"n1/a",1,2,3,4,5,six,7,8,9,10\n', "line 2: the coordinates of 'n1/a' are not all numbers"),
    "not finite": ('"n1/a",1,2,3,4,5,nan,7,8,9,10\n', "not finite"),
    "empty name": ('"",1,2,3,4,5,6,7,8,9,10\n', "empty NAME_ID"),
    "duplicate": (
        '"n1/a",1,2,3,4,5,6,7,8,9,10\n"n1/a",1,2,3,4,5,6,7,8,9,10\n', "line 3 repeats 'n1/a' (first on line 2)"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_each_malformed_row_is_an_error_naming_file_and_line(case):
    rows, needle = BAD_ROWS[case]
    with pytest.raises(DeepFaceError, match="landmarks.csv") as error:
        parse_landmarks(HEADER + "\n" + rows, "landmarks.csv")
    assert needle in str(error.value)


def test_a_wrong_header_and_an_empty_file_are_errors():
    with pytest.raises(DeepFaceError, match="first line must be the header"):
        parse_landmarks("NAME,X,Y\n", "x.csv")
    with pytest.raises(DeepFaceError, match="holds no landmark rows"):
        parse_landmarks(HEADER + "\n", "x.csv")


def test_a_huge_bad_line_is_quoted_short():
    with pytest.raises(DeepFaceError) as error:
        parse_landmarks(HEADER + "\n" + '"n1/a",' + "9" * 1_000_000 + "\n", "x.csv")
    assert len(str(error.value)) < 400


def bb_landmark_archive(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"bb_landmark/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_archive_folder_and_file_give_the_same_table(tmp_path):
    other = RELEASE_TEXT.replace("n000001", "n000009")
    files = {"loose_landmark_train.csv": RELEASE_TEXT, "loose_landmark_test.csv": other,
             "loose_bb_train.csv": "NAME_ID,X,Y,W,H\n"}
    archive = bb_landmark_archive(tmp_path / "bb_landmark.tar.gz", files)
    (tmp_path / "bb_landmark").mkdir()
    for name, text in files.items():
        (tmp_path / "bb_landmark" / name).write_text(text)
    for source in (archive, tmp_path / "bb_landmark", tmp_path):
        assert read_landmarks(source, split="train").names() == {"n000001/0001_01", "n000001/0002_01"}
        assert read_landmarks(source).names() == {"n000001/0001_01", "n000001/0002_01", "n000009/0001_01",
                                                  "n000009/0002_01"}  # every split, one table
    assert len(read_landmarks(tmp_path / "bb_landmark" / "loose_landmark_test.csv")) == 2
    with pytest.raises(DeepFaceError, match="holds no loose_landmark_val.csv"):
        read_landmarks(archive, split="val")


def test_unreadable_sources_are_errors_naming_them(tmp_path):
    with pytest.raises(DeepFaceError, match="does not exist"):
        read_landmarks(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + b'\n"n\xe9/a",1,2,3,4,5,6,7,8,9,10\n')
    with pytest.raises(DeepFaceError, match="latin1.csv is not UTF-8"):
        read_landmarks(tmp_path / "latin1.csv")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DeepFaceError, match="broken.tar.gz is not a readable"):
        read_landmarks(tmp_path / "broken.tar.gz")


def test_rows_naming_no_image_are_counted_as_unused():
    table = parse_landmarks(RELEASE_TEXT, "x.csv")
    assert table.get("train/n000001/0001_01.jpg", mark_used=True) is not None
    assert table.unused(10) == (1, ["n000001/0002_01"])
