"""Each KFP component on small synthetic data: through kfp.local (the real executor, in subprocesses)
where its inputs allow it, else through ``component.python_func`` (called as the launcher calls it) with
artifacts on local paths."""

import contextlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model, Output

from components import launcher
from components.evaluate import evaluate
from components.fetch import fetch
from components.image import PLACEHOLDER
from components.labels import build_labels
from components.launcher import stage_component
from components.synth import make_synthetic_dataset
from components.tfrecords import build_tfrecords
from components.train import train
from deepface.errors import DeepFaceError
from pipelines.local import init_local

# kfp.local's remark that the project image is not a "python" image: expected, tasks run in this environment.
pytestmark = pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")

SMALL_SYNTH = dict(train_identities=3, test_identities=2, lfw_identities=4, images_per_identity=4,
                   image_size=48, lfw_image_size=64, seed=3)
RELEASE_FILES = {"vggface2_train.tar.gz", "vggface2_test.tar.gz", "train_list.txt", "test_list.txt", "lfw.tgz",
                 "pairs.txt", "MD5SUMS", "bb_landmark.tar.gz", "lfw_landmarks.csv"}


def artifact(kind, path) -> dsl.Artifact:
    return kind(uri=str(path))


def run(component, **arguments):
    """Call the component's function as the KFP launcher does: every parameter passed, the ones not given
    with the component's defaults (the source declares settings parameters without Python defaults)."""
    bound = inspect.signature(component.python_func).bind(**arguments)
    bound.apply_defaults()
    return component.python_func(**bound.arguments)


@pytest.fixture
def local_session(tmp_path):
    init_local(tmp_path / "root", enable_caching=False)
    return tmp_path / "root"


def test_synth_component_through_kfp_local(local_session):
    task = make_synthetic_dataset(**SMALL_SYNTH)
    folder = task.outputs["data"].path
    assert set(os.listdir(folder)) == RELEASE_FILES
    assert folder.startswith(str(local_session))


def test_synth_component_makes_nothing_when_data_is_given(local_session):
    task = make_synthetic_dataset(data_uri="gs://faces-bucket/vggface2/", **SMALL_SYNTH)
    assert os.listdir(task.outputs["data"].path) == []


def test_synth_fetch_labels_chain_through_kfp_local(local_session):
    @dsl.pipeline(name="data-chain")
    def chain() -> Dataset:
        synth = make_synthetic_dataset(**SMALL_SYNTH)
        fetched = fetch(synthetic=synth.outputs["data"])
        return build_labels(data=fetched.outputs["data"]).outputs["labels"]

    labels = chain().output
    classes = open(os.path.join(labels.path, "classes.txt"), encoding="utf-8").read().split()
    assert len(classes) == SMALL_SYNTH["train_identities"] and classes == sorted(classes)
    fetched_dir = os.path.join(os.path.dirname(os.path.dirname(labels.path)), "fetch", "data")
    manifest = json.load(open(os.path.join(fetched_dir, "manifest.json"), encoding="utf-8"))
    assert set(manifest["files"]) == RELEASE_FILES
    assert {entry["verified"] for name, entry in manifest["files"].items() if name != "MD5SUMS"} == {"MD5SUMS"}


def test_fetch_component_reads_an_https_style_folder_with_a_header_from_the_environment(
        synth_dir, http_server, tmp_path, monkeypatch):
    names = ["pairs.txt", "train_list.txt"]
    md5sums = "".join(line + "\n" for line in (synth_dir / "MD5SUMS").read_text().splitlines()
                      if line.split()[-1] in names)
    http_server.files = {f"data/{name}": (synth_dir / name).read_bytes() for name in names}
    http_server.files["data/MD5SUMS"] = md5sums.encode()
    http_server.required_header = ("X-Data-Token", "fetch-secret-62b1")
    monkeypatch.setenv("DATA_TOKEN_HEADER", "X-Data-Token: fetch-secret-62b1")
    data = artifact(Dataset, tmp_path / "data")
    run(fetch, synthetic=artifact(Dataset, tmp_path / "unused"), data=data,
                      data_uri=http_server.url("data/"), auth_header_env="DATA_TOKEN_HEADER")
    for name in names:
        assert (tmp_path / "data" / name).read_bytes() == (synth_dir / name).read_bytes()
    manifest = (tmp_path / "data" / "manifest.json").read_text()
    assert "fetch-secret-62b1" not in manifest
    files = json.loads(manifest)["files"]
    assert [files[name]["verified"] for name in names] == ["MD5SUMS", "MD5SUMS"]


@pytest.fixture(scope="module")
def stages(synth_dir, tmp_path_factory) -> dict:
    """Run fetch -> labels -> tfrecords -> train -> evaluate once through python_func on the shared data."""
    out = tmp_path_factory.mktemp("components")
    made = {
        "data": artifact(Dataset, out / "data"), "labels": artifact(Dataset, out / "labels"),
        "tfrecords": artifact(Dataset, out / "tfrecords"), "model": artifact(Model, out / "model"),
        "evaluation": artifact(Dataset, out / "evaluation"), "metrics": artifact(Metrics, out / "metrics"),
        "roc": artifact(ClassificationMetrics, out / "roc"), "report": artifact(HTML, out / "report.html"),
    }
    run(fetch, synthetic=artifact(Dataset, synth_dir), data=made["data"])
    run(build_labels, data=made["data"], labels=made["labels"])
    run(build_tfrecords, data=made["data"], labels=made["labels"], tfrecords=made["tfrecords"], preset="tiny")
    run(train, tfrecords=made["tfrecords"], labels=made["labels"], model=made["model"], preset="tiny",
                      epochs=1, batch_size=8, seed=0)
    run(evaluate, model=made["model"], data=made["data"], evaluation=made["evaluation"],
                         metrics=made["metrics"], roc=made["roc"], report=made["report"], batch_size=16,
                         roc_points=20)
    return made


def test_fetch_copies_the_synthetic_folder(stages, synth_dir):
    assert set(os.listdir(stages["data"].path)) >= RELEASE_FILES
    for name in RELEASE_FILES:
        assert open(os.path.join(stages["data"].path, name), "rb").read() == (synth_dir / name).read_bytes()


def test_tfrecords_are_stored_at_the_preset_size(stages):
    from deepface.model import get_config

    manifest = json.load(open(os.path.join(stages["tfrecords"].path, "manifest.json"), encoding="utf-8"))
    assert manifest["image_size"] == get_config("tiny").image_size
    assert any(
        name.startswith("train-") and name.endswith(".tfrecord") for name in os.listdir(stages["tfrecords"].path)
    )


def test_train_writes_a_complete_model_directory(stages):
    files = set(os.listdir(stages["model"].path))
    assert {"classifier.keras", "embedding.keras", "classes.txt", "metadata.json", "manifest.json"} <= files
    assert stages["model"].metadata["preset"] == "tiny"


def test_evaluate_logs_metrics_roc_and_report(stages):
    summary = json.load(open(os.path.join(stages["evaluation"].path, "metrics.json"), encoding="utf-8"))["summary"]
    logged = stages["metrics"].metadata
    assert {"accuracy", "accuracy_sem", "auc", "eer"} <= set(logged)
    assert any(name.startswith("tar_at_far_") for name in logged)
    assert logged == {name: value for name, value in summary.items() if value is not None}
    assert json.load(open(stages["metrics"].path, encoding="utf-8")) == logged  # a file, so kfp.local can cache it
    assert json.load(open(stages["roc"].path, encoding="utf-8")) == stages["roc"].metadata
    points = stages["roc"].metadata["confidenceMetrics"]
    assert 2 <= len(points) <= 20
    rates = [(p["falsePositiveRate"], p["recall"]) for p in points]
    assert rates == sorted(rates) and rates[0] == (0.0, 0.0) and rates[-1] == (1.0, 1.0)
    html = open(stages["report"].path, "rb").read()
    assert html == open(os.path.join(stages["evaluation"].path, "report.html"), "rb").read()
    assert html.lstrip().lower().startswith(b"<!doctype html")


# ---------------------------------------------------------------------------------------------------- launcher
# The container command of every component (components.launcher): kfp's `sh -ec` script, with Python exec'd
# so that the task's Python is the container's main process, and components/task_start.py run first.

STAGE_COMPONENTS = [make_synthetic_dataset, fetch, build_labels, build_tfrecords, train, evaluate]


@stage_component
def report_pid(out: Output[Dataset]):
    """Stand-in task: prints its process id, then waits for its stdin to close (or for a signal)."""
    import os
    import sys

    print(f"pid {os.getpid()}", flush=True)
    sys.stdin.read()
    os.makedirs(out.path, exist_ok=True)


def task_command(component, out_uri: str, output_file: Path) -> list[str]:
    """The component's command and arguments with an executor input as the platform gives it."""
    container = component.component_spec.implementation.container
    executor_input = {
        "inputs": {"parameterValues": {}},
        "outputs": {"artifacts": {"out": {"artifacts": [{"name": "out", "type": {"schemaTitle": "system.Dataset"},
                                                          "uri": out_uri, "metadata": {}}]}},
                    "outputFile": str(output_file)},
    }
    return [*container.command, *(json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container.args)]


def printed_pid(process: subprocess.Popen) -> int:
    """The pid the stand-in task prints (kfp's executor logs on stdout too); fails at end of output."""
    for line in process.stdout:
        if line.startswith("pid "):
            return int(line.split()[1])
    raise AssertionError(f"the task ended (status {process.wait()}) without printing its pid")


def task_env() -> dict[str, str]:
    """This environment with this venv's interpreter first on PATH as ``python3``, as in the image."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.parametrize("component", STAGE_COMPONENTS, ids=lambda c: c.name)
def test_every_stage_command_execs_python(component):
    container = component.component_spec.implementation.container
    assert container.command == ["sh", "-ec", launcher.SCRIPT, container.command[3], launcher.START_CODE]
    script_lines = [line for line in container.command[2].splitlines() if line]
    assert script_lines[-1].startswith('exec python3 -c "$start_code" --component_module_path ')
    assert "export _KFP_RUNTIME=true" in script_lines
    assert container.command[3].lstrip().startswith("import kfp")  # kfp's SOURCE, unchanged
    assert "def " + component.python_func.__name__ in container.command[3]
    assert container.args == ["--executor_input", "{{$}}", "--function_to_execute", component.python_func.__name__]


def test_compiled_template_commands_exec_python(tmp_path):
    import yaml

    from pipelines.pipeline import CompileOptions, compile_pipeline

    spec = yaml.safe_load(Path(compile_pipeline(tmp_path / "pipeline.yaml")).read_text())
    tasks = spec["root"]["dag"]["tasks"]
    for component in STAGE_COMPONENTS:
        [task] = [body for body in tasks.values() if body["componentRef"]["name"] == f"comp-{component.name}"]
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        command = spec["deploymentSpec"]["executors"][label]["container"]["command"]
        assert command[:3] == ["sh", "-ec", launcher.SCRIPT] and command[4] == launcher.START_CODE, component.name

    # Training as a Vertex AI custom job: its worker pools run the same command.
    custom_job = CompileOptions(training="custom-job", replicas=2)
    spec = yaml.safe_load(Path(compile_pipeline(tmp_path / "custom-job.yaml", custom_job)).read_text())
    train_component = spec["components"][spec["root"]["dag"]["tasks"]["train"]["componentRef"]["name"]]
    pools = train_component["inputDefinitions"]["parameters"]["worker_pool_specs"]["defaultValue"]
    assert len(pools) == 2
    for pool in pools:
        command = pool["container_spec"]["command"]
        assert command[:3] == ["sh", "-ec", launcher.SCRIPT] and command[4] == launcher.START_CODE


def test_exec_python_command_refuses_a_command_it_does_not_know():
    with pytest.raises(DeepFaceError, match=r"update components/launcher.py"):
        launcher.exec_python_command(["python3", "-m", "kfp.dsl.executor_main"])


def test_the_task_python_is_the_process_the_platform_signals(tmp_path):
    """Run the real command with sh and this venv's python3: the shell's process becomes the Python
    process (same pid), so SIGTERM to the container's main process ends Python. kfp's own command, run
    the same way, leaves Python running as a child of the shell when the shell gets SIGTERM."""
    ours = subprocess.Popen(task_command(report_pid, str(tmp_path / "ours" / "out"), tmp_path / "ours" / "out.json"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=task_env(), start_new_session=True)
    try:
        assert printed_pid(ours) == ours.pid
        ours.send_signal(signal.SIGTERM)
        assert ours.wait(timeout=60) == 128 + signal.SIGTERM  # the task's handler: the default's status
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ours.pid, signal.SIGKILL)

    kfp_command = dsl.component(report_pid.python_func, base_image=PLACEHOLDER, install_kfp_package=False)
    theirs = subprocess.Popen(task_command(kfp_command, str(tmp_path / "kfp" / "out"), tmp_path / "kfp" / "out.json"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env=task_env(), start_new_session=True)
    try:
        python_pid = printed_pid(theirs)
        assert python_pid != theirs.pid
        theirs.send_signal(signal.SIGTERM)
        assert theirs.wait(timeout=60) == -signal.SIGTERM
        os.kill(python_pid, 0)  # still running: the signal never reached it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(theirs.pid, signal.SIGKILL)


def test_the_task_ends_on_sigterm_as_a_containers_first_process(tmp_path):
    """In a container the task's Python is PID 1 of its PID namespace, and Linux drops a signal that PID 1
    has no handler for: the task would run on until SIGKILL. Its handler ends it with status 143."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to start a PID namespace")
    command = ["unshare", "--pid", "--fork", "--kill-child", "--",
               *task_command(report_pid, str(tmp_path / "out"), tmp_path / "out.json")]
    task = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=task_env(), start_new_session=True)
    try:
        assert printed_pid(task) == 1  # the first process of its namespace, as in a container
        (first,) = Path(f"/proc/{task.pid}/task/{task.pid}/children").read_text().split()
        os.kill(int(first), signal.SIGTERM)  # what the platform sends on preemption
        assert task.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task.pid, signal.SIGKILL)


def test_the_task_runs_and_leaves_no_write_check_behind(tmp_path):
    task = tmp_path / "root" / "task"
    result = subprocess.run(task_command(report_pid, str(task / "out"), task / "executor_output.json"),
                            input="", capture_output=True, text=True, env=task_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(task)) == ["executor_output.json", "out"]
    assert json.loads((task / "executor_output.json").read_text())["artifacts"]["out"]["artifacts"][0]["uri"] == \
        str(task / "out")


def _read_only(folder: Path, command: list[str]) -> list[str]:
    """``command`` run where ``folder`` cannot be written by this user: mode 555, or for root (whom modes do
    not stop) a read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return command
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: no way to make a folder unwritable")
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--", "sh", "-c", script, "sh", str(folder), *command]


@pytest.mark.parametrize("unwritable", ["output", "executor output"])
def test_an_output_folder_that_cannot_be_written_fails_at_start_in_one_line(tmp_path, unwritable):
    locked = tmp_path / "locked"
    locked.mkdir()
    free = tmp_path / "free"
    out = locked / "task" / "out" if unwritable == "output" else free / "task" / "out"
    output_file = free / "task" / "executor_output.json" if unwritable == "output" else locked / "executor_output.json"
    result = subprocess.run(_read_only(locked, task_command(report_pid, str(out), output_file)),
                            input="", capture_output=True, text=True, env=task_env(), timeout=120)
    if result.returncode != 0 and "mount" in result.stderr and "deepface task" not in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    what = "output 'out'" if unwritable == "output" else "the executor output file"
    path = out if unwritable == "output" else output_file
    assert line.startswith(f"deepface task: cannot write {what} at {path}: folder {path.parent} as uid {os.geteuid()}")
    assert "Fix: make" in line and "writable for uid" in line
    assert "pid " not in result.stdout and "KFP Executor" not in result.stdout  # kfp's executor never ran
