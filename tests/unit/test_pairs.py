"""deepface.pairs and deepface.pair_generation: the LFW pairs.txt parser, image lookup in archives/folders, and the
pairs generators."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from deepface.errors import DeepFaceError
from deepface.pair_generation import draw_lfw_folds, generate_pairs
from deepface.pairs import ImageCollection, Pair, format_pairs, parse_pairs, read_pairs, resolve_pairs, write_pairs

# The first lines of the real LFW View 2 pairs.txt, cut to 2 sets of 2 pairs (same spelling and tabs).
VIEW2 = (
    "2\t2\n"
    "Abel_Pacheco\t1\t4\n"
    "Akhmed_Zakayev\t1\t3\n"
    "AJ_Cook\t1\tMarsha_Thomason\t1\n"
    "Aaron_Sorkin\t2\tFrank_Solich\t5\n"
    "Amber_Tamblyn\t1\t2\n"
    "Anders_Fogh_Rasmussen\t1\t3\n"
    "Abdel_Madi_Shabneh\t1\tDean_Barker\t1\n"
    "Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1\n"
)


def test_parses_view2_sets_as_folds():
    pairs = parse_pairs(VIEW2)
    assert len(pairs) == 8
    assert pairs[0] == Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4, fold=0)
    assert pairs[3] == Pair("Aaron_Sorkin", 2, "Frank_Solich", 5, fold=0)
    assert [pair.fold for pair in pairs] == [0] * 4 + [1] * 4
    assert [pair.same for pair in pairs] == [True, True, False, False] * 2


def test_parses_view1_header_and_space_separated_fields():
    text = "2\nAbel_Pacheco 1 4\nAkhmed_Zakayev  1  3\nAJ_Cook 1 Marsha_Thomason 1\nA_B 2\tC_D 5\n\n"
    pairs = parse_pairs(text)
    assert [pair.fold for pair in pairs] == [0, 0, 0, 0]
    assert pairs[1] == Pair("Akhmed_Zakayev", 1, "Akhmed_Zakayev", 3, 0)
    assert pairs[3] == Pair("A_B", 2, "C_D", 5, 0)


def test_format_round_trips_the_canonical_text(tmp_path):
    assert format_pairs(parse_pairs(VIEW2)) == VIEW2
    write_pairs(parse_pairs(VIEW2), tmp_path / "pairs.txt")
    assert read_pairs(tmp_path / "pairs.txt") == parse_pairs(VIEW2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty pairs file"),
        ("ten\t300\nA\t1\t2\n", r"pairs.txt:1: bad header"),
        ("1\t1\nA\t1\t2\nB\t1\n", r"pairs.txt:3: expected 'name i j'"),
        ("1\t1\nA\t1\t2\nB\t1\tC\t1\t2\n", r"pairs.txt:3: expected 'name i j'"),
        ("1\t1\nA\t1\t0\nB\t1\tC\t1\n", r"pairs.txt:2: image number '0'"),
        ("1\t1\nA\t1\tx\nB\t1\tC\t1\n", r"pairs.txt:2: image number 'x'"),
        ("1\t1\nA\t1\t2\nB\t1\tB\t3\n", r"pairs.txt:3: mismatched pair names one identity twice"),
        ("2\t1\nA\t1\t2\nB\t1\tC\t1\n", "promises 2 set.* but 2 lines follow"),
        ("1\t1\nA\t1\t2\nB\t1\tC\t1\nD\t1\t2\n", "pairs.txt:4: the header promises 1 set.* but more lines follow"),
        ("2\t1\nA\t1\t2\nB\t1\tC\t1\nD\t1\t2\nE\t3\t4\n", r"pairs.txt:4-5: set 2 holds 2 matched"),
    ],
)
def test_malformed_files_are_errors_naming_the_line(text, message):
    with pytest.raises(DeepFaceError, match=message):
        parse_pairs(text, source="pairs.txt")


def test_missing_pairs_file_is_a_clear_error(tmp_path):
    with pytest.raises(DeepFaceError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")


def _write_tar(path: Path, names: list[str]) -> Path:
    """A tar.gz whose members ``names`` each hold their own name as bytes."""
    with tarfile.open(path, "w:gz") as archive:
        for name in names:
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _write_tree(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    return root


LFW_FILES = ["lfw/Ann_Lee/Ann_Lee_0001.jpg", "lfw/Ann_Lee/Ann_Lee_0003.jpg", "lfw/Bo/Bo_0001.jpg"]
VGG_FILES = ["test/n000009/0002_01.jpg", "test/n000009/0001_02.jpg", "test/n000009/0001_01.jpg",
             "test/n000010/0005_01.jpg", "test/n000010/._0001_01.jpg"]


@pytest.mark.parametrize("layout", ["tar", "dir"])
def test_lfw_names_are_looked_up_by_their_number(tmp_path, layout):
    source = (_write_tar(tmp_path / "lfw.tgz", LFW_FILES) if layout == "tar"
              else _write_tree(tmp_path / "lfw_dir", LFW_FILES))
    images = ImageCollection(source)
    assert images.path("Ann_Lee", 3) == "lfw/Ann_Lee/Ann_Lee_0003.jpg"
    assert images.path("Ann_Lee", 2) is None  # numbers are names, not positions
    assert images.path("Bo", 1) == "lfw/Bo/Bo_0001.jpg"
    wanted = ["lfw/Bo/Bo_0001.jpg", "lfw/Ann_Lee/Ann_Lee_0001.jpg"]
    assert dict(images.read(wanted)) == {name: name.encode() for name in wanted}


def test_vggface2_names_are_numbered_by_sorted_position(tmp_path):
    images = ImageCollection(_write_tar(tmp_path / "vggface2_test.tar.gz", VGG_FILES))
    assert images.identities == {
        "n000009": {1: "test/n000009/0001_01.jpg", 2: "test/n000009/0001_02.jpg",
                    3: "test/n000009/0002_01.jpg"},
        "n000010": {1: "test/n000010/0005_01.jpg"},  # the AppleDouble file is not an image
    }


def test_unusable_image_sources_are_clear_errors(tmp_path):
    with pytest.raises(DeepFaceError, match="does not exist"):
        ImageCollection(tmp_path / "missing.tgz")
    with pytest.raises(DeepFaceError, match="holds no image files"):
        ImageCollection(_write_tar(tmp_path / "empty.tar.gz", ["notes/readme.txt", "top.jpg"]))
    (tmp_path / "broken.tgz").write_bytes(b"not a tar file")
    with pytest.raises(DeepFaceError, match="Cannot read archive .*broken.tgz"):
        ImageCollection(tmp_path / "broken.tgz")
    with pytest.raises(DeepFaceError, match="two folders"):
        ImageCollection(_write_tree(tmp_path / "both", ["train/n1/a.jpg", "test/n1/b.jpg"]))


def test_missing_pair_images_are_errors_unless_allowed(tmp_path):
    images = ImageCollection(_write_tar(tmp_path / "lfw.tgz", LFW_FILES))
    pairs = [Pair("Ann_Lee", 1, "Ann_Lee", 3, 0), Pair("Ann_Lee", 2, "Bo", 1, 0), Pair("Cy", 1, "Bo", 9, 0)]
    with pytest.raises(DeepFaceError, match="2 pair.* missing, e.g. pair 2: image 2 of Ann_Lee not in"):
        resolve_pairs(pairs, images)
    files, problems = resolve_pairs(pairs, images, allow_missing=True)
    assert files == [("lfw/Ann_Lee/Ann_Lee_0001.jpg", "lfw/Ann_Lee/Ann_Lee_0003.jpg"),
                     (None, "lfw/Bo/Bo_0001.jpg"), (None, None)]
    assert sorted(problems) == [1, 2] and problems[2].startswith("image 1 of Cy and image 9 of Bo not in")


def _identity_folder(root: Path, identities: int, images: int) -> ImageCollection:
    names = [f"test/n{100 + i:06d}/{j:04d}_01.jpg" for i in range(identities) for j in range(1, images + 1)]
    return ImageCollection(_write_tree(root, names))


def test_generated_pairs_keep_the_protocol_invariants(tmp_path):
    images = _identity_folder(tmp_path / "ids", identities=25, images=4)
    pairs = generate_pairs(images, folds=5, pairs_per_fold=12, seed=3)
    assert len(pairs) == 5 * 24
    identities_of_fold = {}
    for fold in range(5):
        block = [pair for pair in pairs if pair.fold == fold]
        assert sum(pair.same for pair in block) == 12 and len(block) == 24
        assert len(set(block)) == 24  # no repeated pair
        identities_of_fold[fold] = {pair.name1 for pair in block} | {pair.name2 for pair in block}
        for pair in block:
            assert images.path(pair.name1, pair.number1) and images.path(pair.name2, pair.number2)
            if pair.same:
                assert pair.number1 < pair.number2
    for fold in range(5):
        for other in range(fold + 1, 5):
            assert not identities_of_fold[fold] & identities_of_fold[other]


def test_generated_pairs_are_deterministic_and_round_trip(tmp_path):
    images = _identity_folder(tmp_path / "ids", identities=20, images=3)
    first = generate_pairs(images, folds=10, pairs_per_fold=2, seed=0)
    assert generate_pairs(images, folds=10, pairs_per_fold=2, seed=0) == first
    assert generate_pairs(images, folds=10, pairs_per_fold=2, seed=1) != first
    write_pairs(first, tmp_path / "pairs.txt")
    assert (tmp_path / "pairs.txt").read_text().startswith("10\t2\n")
    assert read_pairs(tmp_path / "pairs.txt") == first


def test_generation_refuses_impossible_requests(tmp_path):
    images = _identity_folder(tmp_path / "ids", identities=4, images=2)
    with pytest.raises(DeepFaceError, match="cannot fill 10 folds"):
        generate_pairs(images, folds=10, pairs_per_fold=1)
    # 2 identities x 2 images per fold: 2 matched and 4 mismatched pairs exist
    assert len(generate_pairs(images, folds=2, pairs_per_fold=2)) == 8
    with pytest.raises(DeepFaceError, match="fold 1: matched: only 2 distinct pairs exist"):
        generate_pairs(images, folds=2, pairs_per_fold=3)


# ---------------------------------------------------------------------- LFW-style folds from image counts


def test_lfw_folds_draw_every_pair_once_when_a_fold_holds_them_all():
    # One fold: all 10 matched pairs fit (35 mismatched exist), then all 15 mismatched (21 matched exist).
    counts = {"Ann_Lee": 3, "Bob_Ray": 1, "Cy_Day": 4, "Di_Fox": 2}
    pairs, _ = draw_lfw_folds(counts, folds=1, seed=2)
    assert [(p.name1, p.number1, p.number2) for p in pairs if p.same] == [
        (name, i, j) for name, count in sorted(counts.items())
        for i in range(1, count + 1) for j in range(i + 1, count + 1)]
    counts = {"Ann_Lee": 7, "Bob_Ray": 1, "Cy_Day": 1}
    pairs, _ = draw_lfw_folds(counts, folds=1, seed=2)
    assert [(p.name1, p.number1, p.name2, p.number2) for p in pairs if not p.same] == sorted(
        (a, i, b, j) for a, b in [("Ann_Lee", "Bob_Ray"), ("Ann_Lee", "Cy_Day"), ("Bob_Ray", "Cy_Day")]
        for i in range(1, counts[a] + 1) for j in range(1, counts[b] + 1))


def test_lfw_folds_keep_the_protocol_invariants():
    counts = {f"Person_{i:02d}": 2 + i % 7 for i in range(30)}
    pairs, disjoint = draw_lfw_folds(counts, folds=4, max_pairs_per_fold=9, seed=[1, 2])
    assert disjoint and len(pairs) == 4 * 18
    people = []
    for fold in range(4):
        block = [pair for pair in pairs if pair.fold == fold]
        assert [pair.same for pair in block] == [True] * 9 + [False] * 9
        for run in (block[:9], block[9:]):
            keys = [(p.name1, p.number1, p.name2, p.number2) for p in run]
            assert keys == sorted(keys)
        for pair in block:
            assert 1 <= pair.number1 <= counts[pair.name1] and 1 <= pair.number2 <= counts[pair.name2]
            assert pair.number1 < pair.number2 or not pair.same
        people.append({pair.name1 for pair in block} | {pair.name2 for pair in block})
    assert len(set(pairs)) == len(pairs)
    assert all(not people[a] & people[b] for a in range(4) for b in range(a + 1, 4))
    assert draw_lfw_folds(counts, folds=4, max_pairs_per_fold=9, seed=[1, 2]) == (pairs, disjoint)
    assert parse_pairs(format_pairs(pairs)) == pairs


def test_lfw_folds_share_identities_when_too_few_and_refuse_when_hopeless():
    pairs, disjoint = draw_lfw_folds({"Ann_Lee": 6, "Bob_Ray": 5, "Cy_Day": 1}, folds=10, seed=0)
    assert not disjoint and len(pairs) == len(set(pairs)) == 10 * 2 * 2  # 25 matched, 41 mismatched pairs
    with pytest.raises(DeepFaceError, match="3 identities .* fewer than 10"):
        draw_lfw_folds({"Ann_Lee": 2, "Bob_Ray": 2, "Cy_Day": 1}, folds=10)
    with pytest.raises(DeepFaceError, match="must be positive"):
        draw_lfw_folds({"Ann_Lee": 2, "Bob_Ray": 2}, folds=0)


# ------------------------------------------------------------- LFW numbering with stray files in a folder

AMANDA = ["lfw/Amanda_Bynes/Amanda_Bynes_0001.jpg", "lfw/Amanda_Bynes/Amanda_Bynes_0002.jpg",
          "lfw/Amanda_Bynes/Amanda_Bynes_0003.jpg", "lfw/Amanda_Bynes/Amanda_Bynes_0004.jpg"]
STRAY = "lfw/Amanda_Bynes/Amanda_Bynes_0001 (1).jpg"


def _ignored_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name == "deepface.pairs" and record.levelname == "WARNING"]


@pytest.mark.parametrize("layout", ["tar", "dir"])
def test_a_stray_file_does_not_renumber_an_lfw_folder(tmp_path, layout, caplog):
    names = AMANDA + [STRAY] + LFW_FILES
    source = (_write_tar(tmp_path / "lfw.tgz", names) if layout == "tar"
              else _write_tree(tmp_path / "lfw_dir", names))
    with caplog.at_level("WARNING", logger="deepface.pairs"):
        images = ImageCollection(source)
    assert images.identities["Amanda_Bynes"] == {k: f"lfw/Amanda_Bynes/Amanda_Bynes_{k:04d}.jpg"
                                                 for k in range(1, 5)}
    assert images.ignored == [STRAY]
    pairs = [Pair("Amanda_Bynes", 1, "Amanda_Bynes", 4, 0), Pair("Amanda_Bynes", 2, "Bo", 1, 0)]
    files, problems = resolve_pairs(pairs, images)
    assert files == [(AMANDA[0], AMANDA[3]), (AMANDA[1], "lfw/Bo/Bo_0001.jpg")] and not problems
    [warning] = _ignored_warnings(caplog)
    assert "ignored 1 image file" in warning and STRAY in warning


def test_wrong_prefixes_and_repeated_numbers_are_ignored_in_one_warning(tmp_path, caplog):
    ann = ["lfw/Ann_Lee/Ann_Lee_0001.jpg", "lfw/Ann_Lee/Ann_Lee_0002.jpg", "lfw/Ann_Lee/Ann_Lee_0003.jpg"]
    odd = ["lfw/Ann_Lee/Bo_0002.jpg",          # another identity's prefix
           "lfw/Ann_Lee/Ann_Lee_0002.png",     # number 2 again, another extension
           "lfw/Ann_Lee/Ann_Lee_12.jpg",       # not four digits
           "lfw/Ann_Lee/Ann_Lee_0000.jpg",     # numbers start at 1
           "lfw/Ann_Lee/Ann_Lee.jpg"]
    with caplog.at_level("WARNING", logger="deepface.pairs"):
        images = ImageCollection(_write_tree(tmp_path / "lfw_dir", ann + odd))
    assert images.identities == {"Ann_Lee": dict(enumerate(ann, start=1))}
    assert images.ignored == sorted(odd)
    [warning] = _ignored_warnings(caplog)
    assert "ignored 5 image file" in warning and all(path in warning for path in odd)


def test_the_warning_for_many_ignored_files_is_one_short_line(tmp_path, caplog):
    strays = [f"lfw/Bo/photo_{k:03d}.jpg" for k in range(200)]
    with caplog.at_level("WARNING", logger="deepface.pairs"):
        images = ImageCollection(_write_tar(tmp_path / "lfw.tgz", ["lfw/Bo/Bo_0001.jpg"] + strays))
    assert images.identities == {"Bo": {1: "lfw/Bo/Bo_0001.jpg"}}
    [warning] = _ignored_warnings(caplog)
    assert "ignored 200 image file" in warning and len(warning) < 600 and strays[-1] not in warning


def test_folders_without_lfw_names_keep_position_numbering_next_to_lfw_folders(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="deepface.pairs"):
        images = ImageCollection(_write_tree(tmp_path / "mixed", VGG_FILES + [
            "test/Ann_Lee/Ann_Lee_0002.jpg", "test/Ann_Lee/Ann_Lee_0002 copy.jpg"]))
    assert images.identities["n000009"] == {1: "test/n000009/0001_01.jpg", 2: "test/n000009/0001_02.jpg",
                                            3: "test/n000009/0002_01.jpg"}
    assert images.identities["Ann_Lee"] == {2: "test/Ann_Lee/Ann_Lee_0002.jpg"}
    [warning] = _ignored_warnings(caplog)
    assert "test/Ann_Lee/Ann_Lee_0002 copy.jpg" in warning and "n000009" not in warning


def test_clean_collections_log_no_warning(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="deepface.pairs"):
        ImageCollection(_write_tar(tmp_path / "lfw.tgz", LFW_FILES))
        ImageCollection(_write_tar(tmp_path / "vgg.tar.gz", VGG_FILES))
    assert _ignored_warnings(caplog) == []


def test_generated_pairs_round_trip_to_the_numbered_files_never_a_stray(tmp_path):
    names = [f"lfw/P{i}/P{i}_{k:04d}.jpg" for i in range(8) for k in (1, 3, 4)]
    strays = [f"lfw/P{i}/P{i}_0001 (1).jpg" for i in range(8)] + ["lfw/P0/P1_0002.jpg"]
    images = ImageCollection(_write_tar(tmp_path / "lfw.tgz", names + strays))
    pairs = generate_pairs(images, folds=2, pairs_per_fold=6, seed=5)
    write_pairs(pairs, tmp_path / "pairs.txt")
    files, problems = resolve_pairs(read_pairs(tmp_path / "pairs.txt"), images)
    assert not problems
    for pair, (left, right) in zip(pairs, files):
        assert left == f"lfw/{pair.name1}/{pair.name1}_{pair.number1:04d}.jpg"
        assert right == f"lfw/{pair.name2}/{pair.name2}_{pair.number2:04d}.jpg"


# ------------------------------------------------------------------ names a pairs file can hold; caps (issue 14)

LFW_PEOPLE = [f"lfw/{name}/{name}_{k:04d}.jpg" for name in ("John_Smith", "Ann_Lee", "Bo", "Cy_De_La_Cruz")
              for k in (1, 2, 3)]


def test_generated_lfw_pairs_with_underscored_names_round_trip_through_a_file(tmp_path):
    images = ImageCollection(_write_tree(tmp_path / "lfw", LFW_PEOPLE))
    pairs = generate_pairs(images, folds=2, pairs_per_fold=2, seed=0)
    write_pairs(pairs, tmp_path / "pairs.txt")
    assert read_pairs(tmp_path / "pairs.txt") == pairs
    files, problems = resolve_pairs(read_pairs(tmp_path / "pairs.txt"), images)
    assert not problems and all(left and right for left, right in files)


def test_generation_refuses_an_identity_folder_with_whitespace_naming_it(tmp_path):
    people = LFW_PEOPLE + ["lfw/Mary Jones/Mary Jones_0001.jpg", "lfw/Mary Jones/Mary Jones_0002.jpg",
                           "lfw/Al\tBo/Al\tBo_0001.jpg"]
    images = ImageCollection(_write_tree(tmp_path / "lfw", people))
    with pytest.raises(DeepFaceError, match=r"folder 'Al\\tBo' has a tab or a line break \(and 1 other folder"):
        generate_pairs(images, folds=2, pairs_per_fold=1)
    with pytest.raises(DeepFaceError, match="'Mary Jones' holds whitespace.*rename its folder"):
        format_pairs([Pair("Mary Jones", 1, "Mary Jones", 2, 0), Pair("Mary Jones", 1, "Bo", 1, 0)])


def test_generation_refuses_more_pairs_than_max_pairs(tmp_path):
    images = _identity_folder(tmp_path / "ids", identities=20, images=3)
    with pytest.raises(DeepFaceError, match="make 40 pairs, more than max_pairs=39"):
        generate_pairs(images, folds=10, pairs_per_fold=2, max_pairs=39)


def test_a_header_promising_more_than_max_pairs_is_refused_at_line_1():
    with pytest.raises(DeepFaceError, match=r"pairs.txt:1: the header '10\\t300' promises 6000 pairs, more than "
                                            r"max_pairs=5999"):
        parse_pairs("10\t300\nA\t1\t2\n", max_pairs=5999)
    assert len(parse_pairs(VIEW2, max_pairs=8)) == 8


def test_an_identity_over_255_bytes_is_an_error_naming_the_line():
    long_name = "é" * 128  # 256 bytes
    with pytest.raises(DeepFaceError, match=r"pairs.txt:3: identity 'é{80}'…\(256 bytes\) is 256 bytes long"):
        parse_pairs(f"1\t1\nA\t1\t2\n{long_name}\t1\tB\t1\n", source="pairs.txt")


def test_errors_quote_at_most_80_characters_of_a_bad_line(tmp_path):
    line = "A " * 2000  # 4000 bytes: under the line limit, malformed
    with pytest.raises(DeepFaceError) as error:
        parse_pairs(f"1\t1\n{line}\nA\t1\tB\t1\n", source="pairs.txt")
    message = str(error.value)
    assert "pairs.txt:2: expected 'name i j'" in message and "…(4000 bytes)" in message
    assert len(message) < 300
    (tmp_path / "pairs.txt").write_text(f"1\t1\nA\t1\t2\n{'B' * 5000}\t1\tC\t1\n")
    with pytest.raises(DeepFaceError, match=r"pairs.txt line 3 is 5006 bytes long, more than the 4096 .*'B{80}'…"):
        read_pairs(tmp_path / "pairs.txt")


def test_max_pairs_default_is_the_evaluation_setting():
    from deepface.pairs import MAX_PAIRS
    from deepface.settings import EvaluateSettings

    assert EvaluateSettings().max_pairs == MAX_PAIRS
