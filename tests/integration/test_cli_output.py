"""What scripts read from the stage commands: `deepface verify`'s exit codes and ``--json``, and the warning of
`deepface evaluate` when a trained model scores below its untrained baseline.

The model is tiny and trained for two steps on whole frames (``align=False``), so noise images can be
verified and evaluated without faces.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import tiny_model
from helpers.corpus import encode, noise_image

from deepface.cli import main
from deepface.evaluate import evaluation_warnings
from deepface.verify import EXIT_DIFFERENT, verify

REPOSITORY = Path(__file__).resolve().parents[2]
RESULT_KEYS = {"score", "value", "threshold", "same", "flip", "align"}


@pytest.fixture(scope="module")
def model_dir(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for two steps on whole frames (80 px; its metadata: not aligned)."""
    return tiny_model(synth_dir, tmp_path_factory.mktemp("model"), aligned=False) / "model"


@pytest.fixture(scope="module")
def lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lfw/<name>/<name>_000N.jpg``: people A, B and C, two noise images each."""
    root = tmp_path_factory.mktemp("images") / "lfw"
    for k, name in enumerate("ABC"):
        (root / name).mkdir(parents=True)
        for number in (1, 2):
            (root / name / f"{name}_{number:04d}.jpg").write_bytes(encode(noise_image(10 * k + number, 64, 64)))
    return root


def invoke(*args) -> Result:
    return CliRunner().invoke(main, [str(arg) for arg in args])


# --------------------------------------------------------------------------------------------------
# deepface verify: 0 same, 3 different, 1 user error, 2 usage error; --json


def test_verify_exit_code_says_same_or_different(model_dir, lfw):
    one, other = lfw / "A" / "A_0001.jpg", lfw / "B" / "B_0001.jpg"
    value = verify(model_dir, one, other, threshold=0.0)["value"]  # cosine: same when >= threshold

    result = invoke("verify", "--model", model_dir, "--threshold", value - 0.01, one, other)
    assert result.exit_code == 0 and result.output.strip().endswith(": same person"), result.output
    result = invoke("verify", "--model", model_dir, "--threshold", value + 0.01, one, other)
    assert result.exit_code == EXIT_DIFFERENT == 3, result.output
    assert result.output.strip().endswith(": different people") and "Error" not in result.output

    # a distance: same when <= threshold
    distance = verify(model_dir, one, other, threshold=0.0, score="l2")["value"]
    assert invoke("verify", "--model", model_dir, "--score", "l2", "--threshold", distance + 0.01, one,
                  other).exit_code == 0
    assert invoke("verify", "--model", model_dir, "--score", "l2", "--threshold", distance - 0.01, one,
                  other).exit_code == EXIT_DIFFERENT


def test_verify_json_prints_the_result_dict_only(model_dir, lfw):
    one, other = lfw / "A" / "A_0001.jpg", lfw / "C" / "C_0002.jpg"
    expected = verify(model_dir, one, other, threshold=0.5)
    result = invoke("verify", "--model", model_dir, "--threshold", "0.5", "--json", one, other)
    assert result.exit_code == (0 if expected["same"] else EXIT_DIFFERENT), result.output
    assert json.loads(result.stdout) == expected and set(expected) == RESULT_KEYS

    same = invoke("verify", "--model", model_dir, "--threshold", "0.5", "--json", one, one)
    assert same.exit_code == 0 and json.loads(same.stdout)["same"] is True


def test_verify_json_stdout_of_a_process_is_one_json_object(model_dir, lfw):
    """In a real process (TensorFlow and logging at work, -v on): stdout holds the JSON object only."""
    one, other = lfw / "A" / "A_0001.jpg", lfw / "B" / "B_0002.jpg"
    result = subprocess.run(
        [sys.executable, "-m", "deepface.cli", "-v", "verify", "--model", str(model_dir), "--threshold", "2",
         "--json", str(one), str(other)],
        capture_output=True, text=True, cwd=REPOSITORY, timeout=300)
    assert result.returncode == EXIT_DIFFERENT, result.stderr  # cosine <= 1 < 2: different people
    output = json.loads(result.stdout)  # fails on anything else printed to stdout
    assert set(output) == RESULT_KEYS and output["same"] is False and output["threshold"] == 2.0


def test_verify_user_and_usage_errors_keep_their_exit_codes(model_dir, lfw):
    one = lfw / "A" / "A_0001.jpg"
    result = invoke("verify", "--model", model_dir, one, one)  # no threshold: a user error
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith("Error: "), result.output
    assert "--threshold" in result.output and "Traceback" not in result.output
    result = invoke("verify", "--model", model_dir, "--threshold", "0.5", "--json", one, lfw / "A" / "missing.jpg")
    assert result.exit_code == 1 and "missing.jpg" in result.output and result.stdout == ""
    assert invoke("verify", "--model", model_dir, "--threshold", "0.5", one).exit_code == 2  # missing IMAGE2


def test_verify_help_documents_the_exit_codes():
    result = invoke("verify", "--help")
    assert result.exit_code == 0 and "--json" in result.output
    assert "3  different people" in result.output and "0  same person" in result.output


# --------------------------------------------------------------------------------------------------
# deepface evaluate: a trained model below its untrained baseline is a warning


def test_a_model_below_its_baseline_gets_a_warning_naming_both_accuracies():
    (warning,) = evaluation_warnings({"accuracy": 0.55, "baseline_accuracy": 0.625})
    assert "0.5500" in warning and "0.6250" in warning and "\n" not in warning
    for what in ("epochs", "learning_rate", "preset"):
        assert what in warning
    assert evaluation_warnings({"accuracy": 0.625, "baseline_accuracy": 0.625}) == []
    assert evaluation_warnings({"accuracy": 0.7, "baseline_accuracy": 0.625}) == []
    assert evaluation_warnings({"accuracy": 0.5}) == []  # --no-baseline


# One set of 3 matched + 3 mismatched pairs (split into 3 folds by position). Each matched pair shows one
# image twice, so any network, the untrained baseline too, scores it 1.0, above every mismatched pair.
PAIRS = "1\t3\nA\t1\t1\nB\t2\t2\nC\t1\t1\nA\t1\tB\t1\nA\t2\tC\t1\nB\t2\tC\t2\n"


def test_evaluate_warns_in_the_log_metrics_and_output_line(model_dir, lfw, tmp_path, monkeypatch, caplog):
    """A trained model below its baseline, deterministically: the trained embedding is replaced by one that
    gives every image the same features (every pair ties: accuracy 0.5), while the baseline tells the
    matched pairs (one image twice) from the mismatched ones (accuracy 1)."""
    import keras

    import deepface.model

    load = deepface.model.load_embedding_model

    def load_constant_model(model_dir):  # evaluate imports it from deepface.model when it runs
        model, metadata = load(model_dir)
        inputs = keras.Input(model.input_shape[1:])
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        features = keras.layers.Dense(8, kernel_initializer="zeros", bias_initializer="ones")(pooled)
        return keras.Model(inputs, features), metadata

    monkeypatch.setattr(deepface.model, "load_embedding_model", load_constant_model)
    pairs, out = tmp_path / "pairs.txt", tmp_path / "evaluation"
    pairs.write_text(PAIRS)
    with caplog.at_level(logging.WARNING, logger="deepface.evaluate"):
        result = invoke("evaluate", "--model", model_dir, "--images", lfw, "--pairs", pairs, "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["accuracy"] == 0.5 and summary["baseline_accuracy"] == 1.0, summary
    (warning,) = metrics["warnings"]
    assert warning == evaluation_warnings(summary)[0] and "0.5000" in warning and "1.0000" in warning
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == [warning]
    (line,) = result.stdout.splitlines()
    assert line.endswith(f"; WARNING: {warning}") and line.startswith("cosine accuracy 0.5000")


def test_evaluate_without_a_problem_has_no_warning(model_dir, lfw, tmp_path):
    pairs, out = tmp_path / "pairs.txt", tmp_path / "evaluation"
    pairs.write_text(PAIRS)
    result = invoke("evaluate", "--model", model_dir, "--images", lfw, "--pairs", pairs, "--out", out, "--no-baseline")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["warnings"] == []
    assert "WARNING" not in result.output
