"""deepface.evaluate / deepface.scoring / deepface.verify / deepface.report on the synthetic LFW and VGGFace2 layouts.

A tiny model is trained through the real stages (labels -> tfrecords -> `deepface.train.train`) on the
synthetic train archive, evaluated once on the synthetic LFW pairs (module fixtures), and the tests read that
evaluation.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_inputs

from deepface import files
from deepface.embedding import merge_views
from deepface.errors import DeepFaceError
from deepface.evaluate import evaluate, protocol_folds
from deepface.metrics import verification_metrics
from deepface.pairs import Pair, read_pairs
from deepface.scoring import SCORES, chi2_distance, cosine_similarity, l2_distance
from deepface.settings import EvaluateSettings
from deepface.verify import verify

NUM_TRAIN_CLASSES = 8
TINY_SIZE = 80


# ------------------------------------------------------------------------------------- score functions


def test_scores_of_unit_vectors_by_hand():
    left = merge_views(np.array([[[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]]]))
    right = merge_views(np.array([[[0.0, 1.0, 0.0], [0.6, 0.8, 0.0]]]))
    np.testing.assert_allclose(cosine_similarity(left, right), [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(l2_distance(left, right), [np.sqrt(2), 0.0], atol=1e-15)
    np.testing.assert_allclose(chi2_distance(left, right), [2.0, 0.0], atol=1e-15)  # (1 + 1) / 1 each
    assert SCORES["cosine"][1] and not SCORES["l2"][1] and not SCORES["chi2"][1]


def test_nearly_parallel_embeddings_keep_their_order():
    # float32 unit vectors 1e-6 rad apart, as an untrained net gives: a float32 inner product rounds to 1
    angles = np.array([1e-6, 3e-6, 2e-6])
    base, others = np.zeros((2, 3, 64), np.float32)
    base[:, 0] = 1.0
    others[:, 0], others[:, 1] = np.cos(angles), np.sin(angles)
    left, right = merge_views(base[None]), merge_views(others[None])
    assert np.argsort(-cosine_similarity(left, right)).tolist() == [0, 2, 1]
    assert np.argsort(l2_distance(left, right)).tolist() == [0, 2, 1]
    np.testing.assert_allclose(l2_distance(left, right), angles, rtol=1e-6)


def test_flip_views_are_averaged_and_renormalised():
    views = np.array([[[1.0, 0.0]], [[0.0, 1.0]]], np.float32)  # [V=2, N=1, D=2]
    np.testing.assert_allclose(merge_views(views), [[np.sqrt(0.5), np.sqrt(0.5)]])


def test_a_single_set_file_is_split_into_ten_position_folds():
    pairs = [Pair("a", 1, "a", 2, 0)] * 20 + [Pair("a", 1, "b", 2, 0)] * 20
    folds, how = protocol_folds(pairs)
    assert how.startswith("position")
    assert folds[:20].tolist() == list(range(10)) * 2 and folds[20:].tolist() == list(range(10)) * 2
    view2 = [Pair("a", 1, "a", 2, f) for f in range(3)]
    assert protocol_folds(view2)[0].tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------------------- fixtures


# `deepface train` with the tiny preset's recipe (Adam, lr 0.001) for 20 epochs of 5 steps beats the untrained
# baseline on the synthetic LFW pairs (whole frames) by at least this much accuracy (half as much AUC), every
# score: measured with seeds 0 and 1 (the smallest margins over the three scores: +0.046 and +0.12 accuracy,
# +0.068 and +0.19 AUC).
TRAIN_EPOCHS = 20
TRAIN_SEED = 0
BEATS_BASELINE_BY = 0.03


@pytest.fixture(scope="module")
def trained_model(synth_dir, tmp_path_factory) -> Path:
    """A model directory written by the product's training (`deepface.train.train`, the tiny preset and its
    recipe) on the synthetic train split, whole frames (so evaluate and verify need no landmarks)."""
    from deepface.train import train

    root = tmp_path_factory.mktemp("trained")
    tfrecords, labels = tiny_inputs(synth_dir, root, aligned=False)
    train(tfrecords, labels, root / "model", preset="tiny", epochs=TRAIN_EPOCHS, batch_size=16, seed=TRAIN_SEED,
          checkpoint_steps=0, feature_max_batches=5, strategy="cpu")
    return root / "model"


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory) -> Path:
    """A model directory holding an untrained tiny embedding model (metadata with a preset name)."""
    from deepface.model import build_classifier, build_embedding_model

    model_dir = tmp_path_factory.mktemp("untrained")
    build_embedding_model(build_classifier("tiny", NUM_TRAIN_CLASSES, seed=5)).save(model_dir / "embedding.keras")
    files.write_json(model_dir / "metadata.json", {"preset": "tiny", "num_classes": NUM_TRAIN_CLASSES,
                                                "image_size": TINY_SIZE})
    return with_manifest(model_dir)


def with_manifest(model_dir: Path) -> Path:
    """``model_dir`` with the manifest training writes last (evaluate refuses a directory without it)."""
    from deepface.contracts import write_manifest

    write_manifest(model_dir, {"stage": "train", "files": {
        name: {"bytes": (model_dir / name).stat().st_size} for name in ("embedding.keras", "metadata.json")}})
    return model_dir


@pytest.fixture(scope="module")
def lfw_evaluation(trained_model, synth_dir, tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("evaluation")
    return out_dir, evaluate(trained_model, synth_dir / "lfw.tgz", synth_dir / "pairs.txt", out_dir, batch_size=32)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------- the full evaluation


@pytest.mark.slow
def test_trained_model_beats_its_untrained_baseline(lfw_evaluation):
    _, result = lfw_evaluation
    for name in SCORES:
        trained, baseline = result["metrics"]["trained"][name], result["metrics"]["baseline"][name]
        assert trained["accuracy"] >= baseline["accuracy"] + BEATS_BASELINE_BY, (name, trained, baseline)
        assert trained["auc"] >= baseline["auc"] + BEATS_BASELINE_BY / 2, (name, trained, baseline)
        assert trained["eer"] < baseline["eer"], name
    assert result["summary"]["accuracy"] >= result["summary"]["baseline_accuracy"] + BEATS_BASELINE_BY
    assert result["warnings"] == []


@pytest.mark.slow
def test_outputs_are_complete_and_consistent(lfw_evaluation, synth_dir, trained_model):
    out_dir, result = lfw_evaluation
    pairs = read_pairs(synth_dir / "pairs.txt")
    assert result["counts"]["pairs"] == result["counts"]["pairs_scored"] == len(pairs)
    assert result["counts"]["pairs_skipped"] == 0 and result["counts"]["folds"] == 10
    assert files.read_json(out_dir / "metrics.json") == result
    manifest = files.read_json(out_dir / "manifest.json")
    assert sorted(manifest["outputs"]) == ["metrics.json", "report.html", "roc.json", "scores.csv",
                                           "threshold.json"]
    for name, entry in manifest["outputs"].items():
        assert entry["sha256"] == files.hash_file(out_dir / name)
    assert manifest["model_sha256"] == files.hash_file(trained_model / "embedding.keras")
    assert set(manifest["parameters"]) >= set(EvaluateSettings.fields())  # every setting is recorded
    threshold = files.read_json(out_dir / "threshold.json")
    assert threshold["model_sha256"] == manifest["model_sha256"]
    for name, saved in threshold["thresholds"].items():
        assert saved["threshold"] == result["metrics"]["trained"][name]["best_threshold"]
    roc = files.read_json(out_dir / "roc.json")
    curve = roc["trained"]["cosine"]
    assert curve["far"][0] == 0 and curve["far"][-1] == 1 and curve["tar"][-1] == 1
    assert np.trapezoid(curve["tar"], curve["far"]) == pytest.approx(result["metrics"]["trained"]["cosine"]["auc"])


@pytest.mark.slow
def test_scores_csv_recomputes_the_metrics_exactly(lfw_evaluation, synth_dir):
    out_dir, result = lfw_evaluation
    rows = _read_csv(out_dir / "scores.csv")
    pairs = read_pairs(synth_dir / "pairs.txt")
    assert [(int(r["fold"]), r["name1"], int(r["number1"]), r["name2"], int(r["number2"])) for r in rows] == [
        (p.fold, p.name1, p.number1, p.name2, p.number2) for p in pairs]
    assert rows[0]["file1"] == f"lfw/{pairs[0].name1}/{pairs[0].name1}_{pairs[0].number1:04d}.jpg"
    same = np.array([r["same"] == "1" for r in rows])
    folds = np.array([int(r["fold"]) for r in rows])
    for variant in ("trained", "baseline"):
        for name, (_, higher_is_same) in SCORES.items():
            scores = np.array([float(r[f"{variant}_{name}"]) for r in rows])
            recomputed = verification_metrics(scores, same, folds, higher_is_same=higher_is_same)
            assert json.loads(json.dumps(recomputed)) == result["metrics"][variant][name]


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (entities decoded), and every <img> src."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _figure(number, digits: int = 4) -> str:
    return "n/a" if number is None else f"{number:.{digits}f}"


@pytest.mark.slow
def test_report_is_one_self_contained_page(lfw_evaluation):
    out_dir, _ = lfw_evaluation
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3  # ROC, histograms, training curves (the model has history.json)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "untrained baseline" in page and "Training" in page and "tiny" in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow
def test_report_tables_say_what_metrics_json_says(lfw_evaluation, trained_model):
    """Every cell of the metrics table against metrics.json (trained rows are the trained model's, the
    baseline's the baseline's), the data and model tables against metrics.json and the manifest."""
    out_dir, _ = lfw_evaluation
    metrics = files.read_json(out_dir / "metrics.json")
    manifest = files.read_json(out_dir / "manifest.json")
    parser = _Tables()
    parser.feed((out_dir / "report.html").read_text(encoding="utf-8"))
    metrics_table, data_table, model_table, parameters_table = parser.tables

    fars = list(metrics["metrics"]["trained"]["cosine"]["tar_at_far"])
    assert fars and metrics_table[0] == ["model", "score", "accuracy (10-fold)", "AUC", "EER",
                                         *[f"TAR @ FAR {far}" for far in fars], "best threshold", "same if"]
    expected_rows = []
    for variant, label in (("trained", "trained"), ("baseline", "untrained baseline")):
        for name in SCORES:
            values = metrics["metrics"][variant][name]
            expected_rows.append([
                label, name, f"{_figure(values['accuracy'])} \u00b1 {_figure(values['accuracy_sem'])}",
                _figure(values["auc"]), _figure(values["eer"]),
                *[_figure(values["tar_at_far"][far]["tar"]) for far in fars],
                _figure(values["best_threshold"], 6), "\u2265" if values["higher_is_same"] else "\u2264"])
    assert metrics_table[1:] == expected_rows
    # the two variants differ, so a swap of trained and baseline rows could not pass the comparison above
    assert expected_rows[0][2:] != expected_rows[len(SCORES)][2:]

    data = dict(data_table)
    for name, count in metrics["counts"].items():
        assert data.pop(name) == json.dumps(count), name
    assert data.pop("folds from") == metrics["folds_from"]
    assert data.pop("flip test-time augmentation") == json.dumps(metrics["flip"])
    assert set(data) == {"image source", "pairs file"}
    assert json.loads(data["pairs file"])["sha256"] == manifest["pairs"]["sha256"]

    model = dict(model_table)
    assert model["model directory"] == str(trained_model)
    assert model["embedding.keras sha256"] == manifest["model_sha256"]
    assert model["image size"] == json.dumps(metrics["image_size"]) == str(TINY_SIZE)
    assert json.loads(model["preset"]) == manifest["metadata"]["preset"] and "tiny" in model["preset"]
    assert model["num_classes"] == json.dumps(manifest["metadata"]["num_classes"]) == str(NUM_TRAIN_CLASSES)
    assert dict(parameters_table) == {
        key: value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        for key, value in manifest["parameters"].items()}


@pytest.mark.slow
def test_report_images_decode_at_sane_sizes(lfw_evaluation):
    """The three embedded PNGs (ROC, histograms, training curves) decode, are of figure sizes (a few
    hundred to a few thousand pixels, landscape) and are not blank."""
    from PIL import Image

    out_dir, _ = lfw_evaluation
    parser = _Tables()
    parser.feed((out_dir / "report.html").read_text(encoding="utf-8"))
    assert len(parser.images) == 3
    for src in parser.images:
        prefix, encoded = src.split(",", 1)
        assert prefix == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(encoded, validate=True))) as image:
            image.load()
            assert image.format == "PNG"
            width, height = image.size
            assert 300 <= width <= 4000 and 200 <= height <= 4000 and width >= height, image.size
            extrema = image.convert("L").getextrema()
            assert extrema[1] - extrema[0] > 100, extrema  # drawn lines and text, not one flat colour


def _extract(archive: Path, member: str, out_dir: Path) -> Path:
    with tarfile.open(archive) as tar:
        data = tar.extractfile(member).read()
    path = out_dir / Path(member).name
    path.write_bytes(data)
    return path


@pytest.mark.slow
def test_verify_gives_the_evaluation_score_and_threshold(lfw_evaluation, trained_model, synth_dir, tmp_path):
    from deepface.cli import main

    out_dir, _ = lfw_evaluation
    rows = _read_csv(out_dir / "scores.csv")
    row = next(r for r in rows if r["same"] == "1")
    image1 = _extract(synth_dir / "lfw.tgz", row["file1"], tmp_path)
    image2 = _extract(synth_dir / "lfw.tgz", row["file2"], tmp_path)
    result = verify(trained_model, image1, image2, evaluation_dir=out_dir)
    saved = files.read_json(out_dir / "threshold.json")["thresholds"]["cosine"]["threshold"]
    assert result["threshold"] == saved
    assert result["value"] == pytest.approx(float(row["trained_cosine"]), abs=1e-5)
    assert result["same"] == (result["value"] >= saved)

    distance = verify(trained_model, image1, image2, threshold=-1.0, score="l2")
    assert distance["same"] is False  # no distance is <= -1
    assert distance["value"] == pytest.approx(float(row["trained_l2"]), abs=1e-5)

    printed = CliRunner().invoke(main, ["verify", "--model", str(trained_model), str(image1), str(image2),
                                        "--evaluation", str(out_dir)])
    assert printed.exit_code == (0 if result["same"] else 3), printed.output
    verdict = "same person" if result["same"] else "different people"
    assert re.fullmatch(rf"cosine [0-9.]+ (>=|<) threshold [0-9.-]+: {verdict}\n", printed.output)


def test_verify_needs_a_threshold_for_this_model(untrained_model, synth_dir, tmp_path):
    with tarfile.open(synth_dir / "lfw.tgz") as tar:
        first_image = next(name for name in tar.getnames() if name.endswith(".jpg"))
    image = _extract(synth_dir / "lfw.tgz", first_image, tmp_path)
    with pytest.raises(DeepFaceError, match="--threshold T or --evaluation DIR"):
        verify(untrained_model, image, image)
    other = tmp_path / "other_evaluation"
    files.write_json(other / "threshold.json", {"model_sha256": "0" * 64, "thresholds": {"cosine": {"threshold": 0.5}}})
    with pytest.raises(DeepFaceError, match="computed for another model"):
        verify(untrained_model, image, image, evaluation_dir=other)
    assert verify(untrained_model, image, image, threshold=0.99)["same"] is True  # an image matches itself


# ------------------------------------------------------------------------- pairs, missing images, CLI


def test_generated_pairs_on_held_out_identities(untrained_model, synth_dir, tmp_path):
    out_dir = tmp_path / "eval"
    result = evaluate(untrained_model, synth_dir / "vggface2_test.tar.gz", "generate", out_dir, baseline=False,
                      flip=True, folds=3, pairs_per_fold=10, pairs_seed=4)
    pairs = read_pairs(out_dir / "pairs.txt")
    assert len(pairs) == 60 and {p.fold for p in pairs} == {0, 1, 2}
    assert result["counts"]["pairs_scored"] == 60 and result["counts"]["folds"] == 3
    assert result["flip"] is True and "baseline" not in result["metrics"]
    rows = _read_csv(out_dir / "scores.csv")
    assert all(re.fullmatch(r"test/n\d{6}/\d{4}_\d{2}\.jpg", r["file1"]) for r in rows)
    manifest = files.read_json(out_dir / "manifest.json")
    assert manifest["pairs"]["generated"] and manifest["pairs"]["seed"] == 4
    assert manifest["outputs"]["pairs.txt"]["sha256"] == files.hash_file(out_dir / "pairs.txt")
    assert files.read_json(out_dir / "threshold.json")["flip"] is True


def test_missing_or_undecodable_images_fail_unless_allowed(untrained_model, synth_dir, tmp_path):
    images = tmp_path / "lfw_dir"
    with tarfile.open(synth_dir / "lfw.tgz") as tar:
        tar.extractall(images, filter="data")
    pairs = read_pairs(synth_dir / "pairs.txt")
    missing, broken = pairs[0], pairs[-1]  # a matched pair's first image, a mismatched pair's second
    (images / "lfw" / missing.name1 / f"{missing.name1}_{missing.number1:04d}.jpg").unlink()
    broken_file = images / "lfw" / broken.name2 / f"{broken.name2}_{broken.number2:04d}.jpg"
    broken_file.write_bytes(b"\xff\xd8 not really a JPEG")
    out_dir = tmp_path / "eval"
    with pytest.raises(DeepFaceError, match=rf"pair 1: image {missing.number1} of {missing.name1} not in"):
        evaluate(untrained_model, images, synth_dir / "pairs.txt", out_dir, baseline=False)
    (images / "lfw" / missing.name1 / f"{missing.name1}_{missing.number1:04d}.jpg").write_bytes(
        broken_file.read_bytes()
    )
    with pytest.raises(DeepFaceError, match="2 image.* cannot be used"):
        evaluate(untrained_model, images, synth_dir / "pairs.txt", out_dir, baseline=False)
    assert not (out_dir / "manifest.json").exists()

    (images / "lfw" / missing.name1 / f"{missing.name1}_{missing.number1:04d}.jpg").unlink()
    result = evaluate(untrained_model, images, synth_dir / "pairs.txt", out_dir, baseline=False,
                      allow_missing=True)
    skipped = [k for k, p in enumerate(pairs) if {(p.name1, p.number1), (p.name2, p.number2)}
               & {(missing.name1, missing.number1), (broken.name2, broken.number2)}]
    assert result["counts"]["pairs_skipped"] == len(skipped) >= 2
    assert result["counts"]["pairs_scored"] == len(pairs) - len(skipped)
    assert result["counts"]["images_unusable"] == 1 and result["counts"]["pairs_missing_images"] >= 1
    rows = _read_csv(out_dir / "scores.csv")
    assert len(rows) == len(pairs)
    assert [k for k, r in enumerate(rows) if r["problem"]] == skipped
    assert all(rows[k]["trained_cosine"] == "" for k in skipped)
    assert "not an image" in rows[len(pairs) - 1]["problem"] and "not in" in rows[0]["problem"]


def test_cli_evaluation_is_deterministic(untrained_model, synth_dir, tmp_path):
    from deepface.cli import main

    outputs = []
    for run in ("a", "b"):
        out_dir = tmp_path / run
        invoked = CliRunner().invoke(main, ["evaluate", "--model", str(untrained_model), "--images",
                                            str(synth_dir / "lfw.tgz"), "--pairs", str(synth_dir / "pairs.txt"),
                                            "--out", str(out_dir), "--batch-size", "16"])
        assert invoked.exit_code == 0, invoked.output
        assert "cosine accuracy" in invoked.output and "untrained baseline" in invoked.output
        outputs.append({path.name: path.read_bytes() for path in sorted(out_dir.iterdir())})
    assert outputs[0] == outputs[1]
    assert sorted(outputs[0]) == ["manifest.json", "metrics.json", "report.html", "roc.json", "scores.csv",
                                  "threshold.json"]


def test_cli_reports_user_errors_in_one_line(untrained_model, synth_dir, tmp_path):
    from deepface.cli import main

    invoked = CliRunner().invoke(main, ["evaluate", "--model", str(untrained_model), "--images",
                                        str(synth_dir / "lfw.tgz"), "--pairs", str(tmp_path / "none.txt"),
                                        "--out", str(tmp_path / "out")])
    assert invoked.exit_code == 1 and "does not exist" in invoked.output and "Traceback" not in invoked.output
