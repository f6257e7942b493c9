"""The whole pipeline through kfp.local on synthetic data: a first run, a fully cached rerun, and a rerun
with new epochs that reruns only train and evaluate."""

import os

from pathlib import Path

import pytest
from click.testing import CliRunner

from deepface.cli import main as deepface_main
from deepface.errors import DeepFaceError
from pipelines.local import run_local
from pipelines.pipeline import STAGES

# Smaller than the demo defaults, same code paths.
PARAMS = {"synthetic_identities": 6, "synthetic_images_per_identity": 8, "epochs": 1, "batch_size": 16}


@pytest.mark.slow
def test_local_run_then_cached_rerun_then_new_epochs(tmp_path):
    root = tmp_path / "runs"
    first = run_local(PARAMS, pipeline_root=root)
    assert [stage.name for stage in first.stages] == list(STAGES)
    assert not any(stage.cached for stage in first.stages)
    for stage in first.stages:
        for uri in stage.outputs.values():
            assert os.path.exists(uri) and uri.startswith(str(root)), (stage.name, uri)
    assert {"accuracy", "auc", "eer"} <= set(first.metrics)
    assert 0.0 <= first.metrics["accuracy"] <= 1.0

    # The main-job command, same parameters: every stage comes from the cache.
    args = ["demo", "--pipeline-root", str(root)] + [f"--param={k}={v}" for k, v in PARAMS.items()]
    result = CliRunner().invoke(deepface_main, args)
    assert result.exit_code == 0, result.output
    report = result.output[result.output.index("stage      status"):]
    rows = [line.split() for line in report.splitlines()[1:len(STAGES) + 1]]
    assert [(row[0], row[1]) for row in rows] == [(stage, "cached") for stage in STAGES]
    cached_total = float(next(line for line in report.splitlines() if line.startswith("total")).split()[1])
    assert cached_total < 0.2 * first.seconds, (cached_total, first.seconds)
    assert f"accuracy {first.metrics['accuracy']:.4f}" in report
    report_line = next(line for line in report.splitlines() if line.startswith("report: "))
    assert Path(report_line.split(": ", 1)[1]).read_text().lstrip().lower().startswith("<!doctype html")
    for stage in first.stages:  # the cached outputs are the first run's
        for uri in stage.outputs.values():
            assert uri in report

    again = run_local({**PARAMS, "epochs": 2}, pipeline_root=root)
    ran = {stage.name for stage in again.stages if not stage.cached}
    assert ran == {"train", "evaluate"}
    by_name = {stage.name: stage for stage in again.stages}
    assert by_name["tfrecords"].outputs == next(s for s in first.stages if s.name == "tfrecords").outputs
    assert by_name["train"].outputs["model"] != next(s for s in first.stages if s.name == "train").outputs["model"]


def test_local_run_refuses_bad_parameters_before_running(tmp_path):
    with pytest.raises(DeepFaceError, match="unknown pipeline parameter 'epoch'"):
        run_local({"epoch": 2}, pipeline_root=tmp_path)
    with pytest.raises(DeepFaceError, match="expected an integer"):
        run_local({"epochs": "2"}, pipeline_root=tmp_path)
    with pytest.raises(DeepFaceError, match="local folder"):
        run_local({}, pipeline_root="gs://bucket/root")
    assert os.listdir(tmp_path) == []


def test_demo_command_reports_bad_parameters_in_one_line(tmp_path):
    result = CliRunner().invoke(deepface_main, ["demo", "--pipeline-root", str(tmp_path), "--param", "epochs=many"])
    assert result.exit_code == 1
    assert "epochs='many': expected an integer" in result.output and "Traceback" not in result.output


def test_a_failing_stage_is_one_clear_error(tmp_path):
    missing = tmp_path / "no-such-data"
    with pytest.raises(DeepFaceError, match="'fetch-data'.*log is above"):
        run_local({"data_uri": f"{missing}/"}, pipeline_root=tmp_path / "runs")
