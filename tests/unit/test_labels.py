"""The labels stage: class map from an image list, a tar archive or a directory; classes.txt checks."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SYNTH_PARAMS, write_tar

from deepface.archives import iter_members
from deepface.cli import main
from deepface.contracts import MANIFEST_FILE, read_manifest, remove_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import read_json
from deepface.labels import build_labels, load_classes

OUTPUT_FILES = ("classes.txt", "class_counts.tsv", "manifest.json")


@pytest.fixture(scope="module")
def extracted_train(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic train archive extracted: a directory holding train/<identity>/<image>.jpg."""
    root = tmp_path_factory.mktemp("extracted")
    with tarfile.open(synth_dir / "vggface2_train.tar.gz") as archive:
        archive.extractall(root, filter="data")
    return root


def test_list_archive_and_directory_give_the_same_class_map(synth_dir, extracted_train, tmp_path):
    sources = {
        "list": synth_dir / "train_list.txt",
        "archive": synth_dir / "vggface2_train.tar.gz",
        "directory": extracted_train,
    }
    outputs = {}
    for kind, source in sources.items():
        manifest = build_labels(source, tmp_path / kind)
        assert manifest["source_kind"] == kind
        outputs[kind] = {name: (tmp_path / kind / name).read_bytes() for name in ("classes.txt", "class_counts.tsv")}
    assert outputs["list"] == outputs["archive"] == outputs["directory"]

    # The class map agrees with the list, read here independently.
    list_lines = (synth_dir / "train_list.txt").read_text().split()
    expected = sorted({line.split("/")[0] for line in list_lines})
    classes = load_classes(tmp_path / "archive")
    assert classes == expected
    assert len(classes) == SYNTH_PARAMS["train_identities"]
    counts = (tmp_path / "archive" / "class_counts.tsv").read_text().splitlines()
    assert counts[0] == "identity\tcount"
    assert counts[1:] == [f"{identity}\t{SYNTH_PARAMS['images_per_identity']}" for identity in expected]


def test_manifest_describes_the_outputs(synth_dir, tmp_path):
    manifest = build_labels(synth_dir / "vggface2_train.tar.gz", tmp_path)
    assert read_json(tmp_path / "manifest.json") == manifest
    assert manifest["num_classes"] == SYNTH_PARAMS["train_identities"]
    assert manifest["num_images"] == SYNTH_PARAMS["train_identities"] * SYNTH_PARAMS["images_per_identity"]
    assert manifest["classes_sha256"] == hashlib.sha256((tmp_path / "classes.txt").read_bytes()).hexdigest()
    assert manifest["duplicates"]["count"] == 0 and manifest["ignored"]["count"] == 0


def test_the_manifest_contract(tmp_path):
    """deepface.contracts: one manifest.json per output directory, canonical JSON, absent until written."""
    assert MANIFEST_FILE == "manifest.json"
    assert read_manifest(tmp_path) is None
    write_manifest(f"file://{tmp_path}", {"b": 1, "a": [2]})
    assert (tmp_path / "manifest.json").read_text() == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert read_manifest(tmp_path) == {"a": [2], "b": 1}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["manifest.json"]  # no temporaries left
    remove_manifest(tmp_path)
    remove_manifest(tmp_path)  # nothing to remove: not an error
    assert read_manifest(tmp_path) is None
    with pytest.raises(ValueError, match="gs://bucket/out"):
        read_manifest("gs://bucket/out")


@pytest.mark.parametrize("source_name", ["train_list.txt", "vggface2_train.tar.gz"])
def test_same_input_gives_the_same_bytes(synth_dir, tmp_path, source_name):
    for run in ("first", "second"):
        build_labels(synth_dir / source_name, tmp_path / run)
    for name in OUTPUT_FILES:
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def test_malformed_list_lines_are_rejected_with_their_line_numbers(tmp_path):
    image_list = tmp_path / "list.txt"
    image_list.write_text("n000002/0001_01.jpg\n0002_01.jpg\n\nn000002/notes.txt\nn000003/0001_01.jpg\n")
    with pytest.raises(DeepFaceError) as error:
        build_labels(image_list, tmp_path / "out")
    message = str(error.value)
    assert str(image_list) in message and "2 malformed lines" in message
    assert "line 2: '0002_01.jpg' (no identity folder)" in message
    assert "line 4: 'n000002/notes.txt' (not an image file name)" in message
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_duplicated_list_entries_are_counted_once_and_reported(tmp_path):
    image_list = tmp_path / "list.txt"
    image_list.write_text("n000002/1.jpg\nn000002/2.jpg\nn000003/1.jpg\n\nn000002/1.jpg\n")
    manifest = build_labels(image_list, tmp_path / "out")
    assert (tmp_path / "out" / "class_counts.tsv").read_text() == "identity\tcount\nn000002\t2\nn000003\t1\n"
    assert manifest["num_images"] == 3
    assert manifest["duplicates"] == {"count": 1, "examples": ["n000002/1.jpg"]}


def test_files_that_are_not_images_of_an_identity_are_ignored_and_counted(tmp_path):
    archive = write_tar(tmp_path / "train.tar.gz", [
        ("train/README.txt", b"about"),
        ("train/n000002/0001_01.jpg", b"jpeg bytes (never read)"),
        ("train/n000002/._0001_01.jpg", b"resource fork"),
        ("./train/n000003/0001_01.JPG", b"x"),
        ("loose.jpg", b"x"),
        ("train/n000002/0001_01.jpg", b"the same name again"),
    ])
    manifest = build_labels(archive, tmp_path / "out")
    assert load_classes(tmp_path / "out") == ["n000002", "n000003"]
    assert manifest["num_images"] == 2
    assert manifest["ignored"]["by_reason"] == {"not an image file name": 2, "no identity folder": 1}
    assert manifest["ignored"]["count"] == 3
    assert manifest["duplicates"] == {"count": 1, "examples": ["train/n000002/0001_01.jpg"]}


def test_iter_members_reads_archives_and_directories_alike(synth_dir, extracted_train):
    from_archive = [(m.name, m.size, m.read()) for m in iter_members(synth_dir / "vggface2_train.tar.gz")]
    from_directory = [(m.name, m.size, m.read()) for m in iter_members(extracted_train)]
    assert from_archive == from_directory
    assert len(from_archive) == SYNTH_PARAMS["train_identities"] * SYNTH_PARAMS["images_per_identity"]


def test_a_truncated_archive_is_a_clear_error(synth_dir, tmp_path):
    data = (synth_dir / "vggface2_train.tar.gz").read_bytes()
    truncated = tmp_path / "vggface2_train.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DeepFaceError, match=r"Cannot read archive .*vggface2_train\.tar\.gz.*deepface fetch"):
        build_labels(truncated, tmp_path / "out")


def test_a_source_without_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepFaceError, match="No images found"):
        build_labels(tmp_path / "empty", tmp_path / "out")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ("n000002\n\nn000003\n", "line 2 is blank"),
        ("n000002\nn000003\nn000002\n", "line 3: identity 'n000002' repeats line 1"),
        ("n000003\nn000002\n", "line 2: 'n000002' sorts before 'n000003'"),
        ("n000002\nn000003 \n", r"line 2 \('n000003 '\) has surrounding spaces"),
    ],
)
def test_load_classes_names_the_file_and_line_of_each_problem(tmp_path, content, expected):
    (tmp_path / "classes.txt").write_text(content, newline="")
    with pytest.raises(DeepFaceError, match=f"{tmp_path / 'classes.txt'}.*{expected}"):
        load_classes(tmp_path)


def test_load_classes_reports_a_missing_file(tmp_path):
    with pytest.raises(DeepFaceError, match="classes.txt does not exist"):
        load_classes(tmp_path)


def test_command_line(synth_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["labels", "--source", str(synth_dir / "train_list.txt"), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"{SYNTH_PARAMS['train_identities']} classes" in result.output
    assert all((tmp_path / name).is_file() for name in OUTPUT_FILES)

    result = runner.invoke(main, ["labels", "--source", str(tmp_path / "missing.txt"), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "missing.txt does not exist" in result.output and "Traceback" not in result.output
