"""The whole pipeline through kfp.local on synthetic data: a first run, a fully cached rerun, and a rerun
with new epochs that reruns only train and evaluate; on a data folder, a rerun on the same data is cached
and one on changed data reruns fetch and what follows; what the terminal shows of a run, and its log."""

import hashlib
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from deepface.errors import DeepFaceError
from deepface.fingerprint import SYNTHETIC
from pipelines.cli import main as pipelines_main
from pipelines.local import RunOutput, run_local
from pipelines.pipeline import STAGES

# Smaller than the demo defaults, same code paths; epochs enough for the trained model to beat its untrained
# baseline (10 epochs of 3 steps: cosine accuracy 0.767 against the baseline's 0.692).
PARAMS = {"synthetic_identities": 6, "synthetic_images_per_identity": 8, "epochs": 10, "batch_size": 16}
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names and statuses
FINGERPRINT_TASK = "fingerprint-data"  # kfp's task name of the fingerprint stage (it has no artifact)


def terminal_text(captured) -> str:
    return ANSI.sub("", captured.out + captured.err)


@pytest.mark.slow
def test_local_run_then_cached_rerun_then_new_epochs(tmp_path, capfd):
    root = tmp_path / "runs"
    first = run_local(PARAMS, pipeline_root=root)
    # What `python -m pipelines demo` shows: each stage's progress, results and status, then the report; no noise.
    shown = terminal_text(capfd.readouterr()) + first.format() + "\n"
    assert len(shown.splitlines()) < 100, shown
    artifact_stages = [stage for stage in first.stages if stage.name != "fingerprint"]
    for stage in first.stages:
        # kfp's task name, e.g. make-synthetic-dataset: the folder of the stage's artifacts
        task = FINGERPRINT_TASK if stage.name == "fingerprint" else Path(next(iter(stage.outputs.values()))).parent.name
        assert f"Executing task '{task}'" in shown and f"Task '{task}' finished with status SUCCESS" in shown, task
        assert re.search(rf"^{stage.name} +ran +[0-9.]+  ", shown, re.M), stage.name
    assert first.stages[0].outputs == {"fingerprint": SYNTHETIC} and f"data fingerprint: {SYNTHETIC}" in shown
    for result in ("identities", "MD5", "classes", "records in 1 shards", "Epoch 10/10: accuracy", "Training done",
                   "cosine accuracy", "evaluation: accuracy"):
        assert result in shown, result
    for noise in ("cuInit", "absl::InitializeLog", "executor_input", '"outputFile"', '"parameterValues"',
                  "Looking for component", "Sharding callback", "Streamed logs", "metadata=", "Cleaned up workspace"):
        assert noise not in shown, noise
    # All of it, noise included, is in the run's log under the pipeline root, named by the report.
    assert Path(first.log).parent == root / "logs" and f"log: {first.log}" in shown
    log = ANSI.sub("", Path(first.log).read_text())
    assert "Got executor_input:" in log and '"outputFile"' in log and "Streamed logs" in log
    run_lines = shown[:re.search(r"^stage +status", shown, re.M).start()].splitlines()  # before the report
    assert run_lines and all(line in log for line in run_lines)
    assert [stage.name for stage in first.stages] == list(STAGES)
    # The Model Registry step is skipped, and the report says so.
    assert first.skipped == {"register": "local run"} and "\nregister: skipped (local run)\n" in shown
    assert not any(stage.cached for stage in first.stages)
    for stage in artifact_stages:
        for uri in stage.outputs.values():
            assert os.path.exists(uri) and uri.startswith(str(root)), (stage.name, uri)
    assert {"accuracy", "auc", "eer", "baseline_accuracy"} <= set(first.metrics)
    # The model the pipeline trained beats the untrained baseline that its evaluate task recorded
    evaluation = next(stage for stage in first.stages if stage.name == "evaluate")
    recorded = json.loads((Path(evaluation.outputs["evaluation"]) / "metrics.json").read_text())["summary"]
    assert recorded["accuracy"] == first.metrics["accuracy"]
    assert first.metrics["accuracy"] > first.metrics["baseline_accuracy"] == recorded["baseline_accuracy"], (
        first.metrics)

    # The main-job command, same parameters: every stage comes from the cache but the data's fingerprint,
    # which runs every time. With -v the terminal also shows what is otherwise only in the log (here
    # kfp.local's rules).
    args = ["demo", "-v", "--pipeline-root", str(root)] + [f"--param={k}={v}" for k, v in PARAMS.items()]
    result = CliRunner().invoke(pipelines_main, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"^-{10,}$", result.output, re.M), result.output
    report = result.output[re.search(r"^stage +status", result.output, re.M).start():]
    rows = [line.split() for line in report.splitlines()[1:len(STAGES) + 1]]
    assert [(row[0], row[1]) for row in rows] == [
        (stage, "ran" if stage == "fingerprint" else "cached") for stage in STAGES
    ]
    cached_total = float(next(line for line in report.splitlines() if line.startswith("total")).split()[1])
    assert cached_total < 0.2 * first.seconds, (cached_total, first.seconds)
    assert f"accuracy {first.metrics['accuracy']:.4f}" in report
    assert "register: skipped (local run)" in report
    report_line = next(line for line in report.splitlines() if line.startswith("report: "))
    assert Path(report_line.split(": ", 1)[1]).read_text().lstrip().lower().startswith("<!doctype html")
    for stage in first.stages:  # the cached outputs are the first run's
        for uri in stage.outputs.values():
            assert uri in report

    again = run_local({**PARAMS, "epochs": PARAMS["epochs"] + 1}, pipeline_root=root)
    ran = {stage.name for stage in again.stages if not stage.cached}
    assert ran == {"fingerprint", "train", "evaluate"}
    by_name = {stage.name: stage for stage in again.stages}
    assert by_name["tfrecords"].outputs == next(s for s in first.stages if s.name == "tfrecords").outputs
    assert by_name["train"].outputs["model"] != next(s for s in first.stages if s.name == "train").outputs["model"]


def stage_runs(run) -> dict:
    return {stage.name: stage for stage in run.stages}


@pytest.mark.slow
def test_a_rerun_follows_the_data_behind_data_uri(tmp_path, synth_dir):
    """Same data_uri, same files: all cached but the fingerprint. Same data_uri, one file changed (pairs.txt in
    another valid order, MD5SUMS updated as fetch verifies it): fetch and every stage after it rerun, and the
    fetched copy holds the new bytes."""
    data = shutil.copytree(synth_dir, tmp_path / "data")
    params = {"data_uri": f"{data}/", "epochs": 1, "batch_size": 16}
    root = tmp_path / "runs"
    first = stage_runs(run_local(params, pipeline_root=root))
    assert not any(stage.cached for stage in first.values())
    fingerprint = first["fingerprint"].outputs["fingerprint"]
    assert fingerprint.startswith("local ") and fingerprint != SYNTHETIC
    fetched = Path(first["fetch"].outputs["data"])
    assert (fetched / "pairs.txt").read_bytes() == (data / "pairs.txt").read_bytes()

    same = stage_runs(run_local(params, pipeline_root=root))
    assert {name for name, stage in same.items() if not stage.cached} == {"fingerprint"}
    assert [stage.outputs for stage in same.values()] == [stage.outputs for stage in first.values()]

    header, *lines = (data / "pairs.txt").read_text().splitlines()
    per_set = int(header.split()[1])
    new_pairs = "\n".join([header, *reversed(lines[:per_set]), *lines[per_set:]]) + "\n"  # first set's matched pairs
    assert new_pairs != (data / "pairs.txt").read_text()
    (data / "pairs.txt").write_text(new_pairs)
    old_md5 = hashlib.md5((fetched / "pairs.txt").read_bytes()).hexdigest()
    new_md5 = hashlib.md5(new_pairs.encode()).hexdigest()
    md5sums = (data / "MD5SUMS").read_text()
    assert f"{old_md5}  pairs.txt" in md5sums
    (data / "MD5SUMS").write_text(md5sums.replace(f"{old_md5}  pairs.txt", f"{new_md5}  pairs.txt"))

    changed = stage_runs(run_local(params, pipeline_root=root))
    assert {name for name, stage in changed.items() if not stage.cached} == set(STAGES) - {"synth"}
    assert changed["fingerprint"].outputs["fingerprint"] not in (fingerprint, SYNTHETIC)
    refetched = Path(changed["fetch"].outputs["data"])
    assert refetched != fetched and (refetched / "pairs.txt").read_text() == new_pairs
    assert (fetched / "pairs.txt").read_bytes() != new_pairs.encode()  # the first run's copy is untouched
    for name in ("labels", "tfrecords", "train", "evaluate"):
        assert changed[name].outputs != first[name].outputs, name


def test_local_run_refuses_bad_parameters_before_running(tmp_path):
    with pytest.raises(DeepFaceError, match="unknown pipeline parameter 'epoch'"):
        run_local({"epoch": 2}, pipeline_root=tmp_path)
    with pytest.raises(DeepFaceError, match="expected an integer"):
        run_local({"epochs": "2"}, pipeline_root=tmp_path)
    with pytest.raises(DeepFaceError, match="local folder"):
        run_local({}, pipeline_root="gs://bucket/root")
    assert os.listdir(tmp_path) == []


def test_demo_command_reports_bad_parameters_in_one_line(tmp_path):
    result = CliRunner().invoke(pipelines_main, ["demo", "--pipeline-root", str(tmp_path), "--param", "epochs=many"])
    assert result.exit_code == 1
    assert "epochs='many': expected an integer" in result.output and "Traceback" not in result.output


def test_a_failing_stage_is_one_clear_error(tmp_path, capfd):
    missing = tmp_path / "no-such-data"
    # The fingerprint step, which lists data_uri before fetch copies it, stops the run.
    with pytest.raises(DeepFaceError, match=f"'{FINGERPRINT_TASK}'.*log is above, all of it in ") as error:
        run_local({"data_uri": f"{missing}/"}, pipeline_root=tmp_path / "runs")
    # The failing task's traceback and error are on the terminal (not only in the log), and in the log.
    shown = terminal_text(capfd.readouterr())
    log = Path(str(error.value).rsplit(" all of it in ", 1)[1]).read_text()
    for text in (shown, log):
        assert "Traceback (most recent call last):" in text
        assert f"DeepFaceError: source directory {missing}/ does not exist: check the path" in text
        assert "finished with status FAILURE" in ANSI.sub("", text)
    assert "executor_input" not in shown and "executor_input" in log


def test_run_output_hides_noise_from_the_terminal_and_logs_everything():
    """kfp.local's output of a task (as printed: in parts, task lines indented), line by line: shown or not."""
    executor = "    [KFP Executor 2026-11-30 04:11:56,931 INFO]: "
    absl = "00:00:1796011919.766359   31806"
    lines = [
        (True, "04:11:59.205 - INFO - Executing task \x1b[96m'train'\x1b[0m"),
        (False, "04:11:59.205 - INFO - Streamed logs:"),
        (False, ""),
        (False, executor + "Looking for component `train` in --component_module_path `/tmp/x/component.py`"),
        (False, executor + "Got executor_input:"),
        (False, "    {"),
        (False, '        "inputs": {"parameterValues": {"note": "}"}},'),
        (False, '        "outputs": {'),
        (False, "        }"),
        (False, "    }"),
        (False, "    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"),
        (False, f"    I0000 {absl} port.cc:153] oneDNN custom operations are on."),
        (False, f"    I0000 {absl} cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not "
                "be used."),
        (False, f"    E0000 {absl} cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: UNKNOWN "
                "ERROR (303)"),
        (True, executor + "Training tiny on 576 records in 1 shard(s): 15 epochs of 18 steps; validating on 0 records"),
        (False, executor + "Input pipeline 0/1: 1 shard(s), batch 32, image 80, training=True, augment=False, seed=1"),
        (False, executor + "Sharding callback duration: 32 microseconds"),
        (False, executor + "Checkpoint /tmp/model/checkpoints/ckpt-18: epoch 1, step 0/18"),
        (True, executor + "Epoch 1/15: accuracy 0.03646, learning_rate 0.001, loss 3.183; 18 steps in 3.2 s "
                          "(181.3 img/s)"),
        (False, "    Epoch 2: ReduceLROnPlateau reducing learning rate to 0.0005."),
        (True, f"    W0000 {absl} allocator.cc:1] Allocation of 1000000 exceeds 10% of free system memory."),
        (False, executor + "Wrote executor output file to /tmp/model/executor_output.json."),
        (True, "04:12:50.308 - INFO - Task \x1b[96m'train'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m"),
        (False, "04:12:50.309 - INFO - Task \x1b[96m'train'\x1b[0m outputs:"),
        (False, "    model: Model( name='model',"),
        (False, "                  metadata={'preset': 'tiny'} )"),
        (False, "-" * 80),
        (True, "04:12:50.310 - INFO - Executing task \x1b[96m'evaluate'\x1b[0m"),
        # No "no CUDA driver" line in this task: a failing cuInit is news.
        (True, f"    E0000 {absl} cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"),
        (True, "    Traceback (most recent call last):"),
        (True, '      File "/work/main/deepface/evaluate.py", line 1, in evaluate'),
        (False, ""),
        (True, "    deepface.errors.DeepFaceError: no pairs"),
        (True, "04:12:58.614 - ERROR - Task \x1b[96m'evaluate'\x1b[0m finished with status "
               "\x1b[91mFAILURE\x1b[0m"),
    ]
    text = "".join(line + "\n" for _, line in lines)
    for verbose in (False, True):
        terminal, log = io.StringIO(), io.StringIO()
        output = RunOutput(terminal, log, verbose=verbose)
        for _, line in lines:  # as kfp.local prints task output: the indentation, then the line
            if line.startswith("    "):
                output.write("    ")
                line = line[4:]
            output.write(line + "\n")
        output.close()
        assert log.getvalue() == text
        assert terminal.getvalue() == (text if verbose else "".join(line + "\n" for shown, line in lines if shown))
