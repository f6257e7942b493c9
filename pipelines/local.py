"""Run the whole pipeline on this machine with kfp.local, caching on.

Each task runs ``python -m kfp.dsl.executor_main`` in a subprocess of the current interpreter
(``SubprocessRunner(use_venv=False)``): nothing is installed, the ``deepface`` package of this
environment does the work. Outputs land under ``pipeline_root/<pipeline>-<timestamp>/<task>/``; the
cache (``pipeline_root/.kfp_cache``) keys each task on its component, image, command and inputs, so a
rerun with the same parameters and the same data reuses every output but the data's fingerprint (a task
whose caching is off, `pipelines.pipeline`), and changing e.g. only ``epochs`` reruns only train and
evaluate (and the fingerprint).

A killed run is not started over: the next run with the same pipeline and parameters runs in the killed
run's folder, so the tasks that finished there come from the cache and train resumes from its last
checkpoint; the unfinished task folders of a killed run that is not resumed are removed
(`pipelines.run_folders`).

The Model Registry step (`pipelines.pipeline.REGISTER_STAGE`) is skipped: a local run sets the pipeline's
``register`` parameter false (given true, it is refused), as the registry is reached from Vertex AI runs
only, and the report says so (`LocalRun.skipped`).

kfp.local reports neither which tasks came from the cache nor how long each took, so `run_local` reads
both from disk: a task ran in this run if it wrote its ``executor_output.json`` in the run's folder
after the run started (a cached task writes nothing), and kfp.local runs one task at a time, so a task's
time is from the end of the task that ran before it to that file's modification time.

kfp.local prints each task's output (stdout and stderr together) on this process's stdout, between its
own lines. `run_local` writes all of it to ``pipeline_root/logs/run-<timestamp>.log`` (the report's
``log:`` line) and, unless ``verbose``, the terminal shows what each stage did and its status, without
kfp's executor input dump and executor messages, TensorFlow's C++ start-up lines, per-epoch bookkeeping
and kfp's list of each task's outputs (the report lists them): see `RunOutput`. Tracebacks and errors are
always shown. The tasks inherit ``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set (or ``verbose``): TensorFlow's
C++ INFO and WARNING lines are off at the source, its errors on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import json_format

from deepface.errors import DeepFaceError
from pipelines.params import check_parameters
from pipelines.pipeline import REGISTER_STAGE, STAGES, CompileOptions, make_pipeline
from pipelines.run_folders import open_run, run_identity

DEFAULT_PIPELINE_ROOT = "local_outputs"
# Pipeline outputs (see pipelines.pipeline.Outputs) of each task: artifacts, but the fingerprint's is text.
STAGE_OUTPUTS = {
    "fingerprint": ("fingerprint",),
    "synth": ("synthetic",),
    "fetch": ("data",),
    "labels": ("labels",),
    "tfrecords": ("tfrecords",),
    "train": ("model",),
    "evaluate": ("evaluation", "metrics", "roc", "report"),
}
# Settings kfp.local ignores (resources, display names) and its remark that our image is not a
# "python" image: expected here, since the tasks run in this environment by design.
_IGNORED_WARNINGS = (r".*have no effect in the current local runner.*", r".*non-Python base image.*")
# Folder under the pipeline root holding the full output of each local run.
LOG_DIR = "logs"
_EXECUTOR_OUTPUT = "executor_output.json"  # what a task that ran writes last in its folder
# Steps a local run skips, and why (the report's lines).
SKIPPED = {REGISTER_STAGE: "local run"}

# The lines of a run's output, without kfp.local's indentation of task output: kfp.local's own log lines
# (`_KFP`), the task's Python log lines (`_TASK`, kfp's executor format), TensorFlow's C++ lines (absl:
# severity letter and date, time, thread, file:line], e.g. `I0000 00:00:1796011919.766 31806 port.cc:153] `).
_KFP = r"\d\d:\d\d:\d\d\.\d{3} - [A-Z]+ - "
_TASK = r"\[KFP Executor [^\]]*\]: "
_RULE = r"-{10,}$"  # kfp.local's rule after each task
# Lines the terminal shows only when verbose (the log has them all).
_HIDDEN = re.compile("|".join([
    _RULE,
    _KFP + r"(Streamed logs:|Task .* has no outputs)$",
    _TASK + r"(Looking for component|Loading KFP component|Wrote executor output file to) ",
    # TensorFlow's C++ start-up, before absl is initialised (TF_CPP_MIN_LOG_LEVEL does not apply yet):
    # oneDNN is on, no CUDA driver... INFO lines only: its warnings and errors stay.
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] ",
    # Every epoch: TensorFlow's checkpoint writer; Keras's learning-rate change (the deepface Epoch line
    # has the learning rate); deepface's input pipeline and checkpoint (the Epoch line says what it did).
    _TASK + r"Sharding callback duration: \d+ microseconds$",
    r"Epoch \d+: ReduceLROnPlateau reducing learning rate to ",
    _TASK + r"(Input pipeline \d+/\d+: |Checkpoint .*: epoch \d+, step \d+/\d+$)",
]))
# Hidden blocks: the executor input (JSON, to its closing brace, the only one at column 0) and kfp.local's
# list of a task's outputs (to its next line or rule). A line of `_NOT_IN_BLOCK` ends either block.
_EXECUTOR_INPUT = re.compile(_TASK + r"Got executor_input:$")
_OUTPUTS = re.compile(_KFP + r"Task .* outputs:$")
_NOT_IN_BLOCK = re.compile("|".join([_KFP, _TASK, _RULE, r"Traceback \(most recent call last\):"]))
_TASK_START = re.compile(_KFP + r"Executing task ")
# TensorFlow's GPU probe fails on every machine without a CUDA driver: hidden only after the task said so.
_NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT_FAILED = re.compile(r"E\d{4} .*failed call to cuInit")
# kfp.local's own messages outside its task output, to the root logger: hidden unless verbose.
_HIDDEN_RECORDS = re.compile(r"Cleaned up workspace: ")
_INDENT = "    "  # kfp.local's indentation of task output


class RunOutput:
    """``sys.stdout`` during a local run: every line to ``log``; to ``terminal`` every line when ``verbose``,
    else all but kfp.local's and TensorFlow's noise (`_HIDDEN`, the hidden blocks, blank lines)."""

    def __init__(self, terminal: TextIO, log: TextIO, *, verbose: bool = False) -> None:
        self.terminal, self.log, self.verbose = terminal, log, verbose
        self._partial = ""
        self._block: str | None = None  # "input" or "outputs" while in a hidden block
        self._no_cuda_driver = False

    def write(self, text: str) -> int:
        self.log.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        if self.verbose or self.shown(line):
            self.terminal.write(line + "\n")
            self.terminal.flush()

    def shown(self, line: str) -> bool:
        """Whether the terminal shows this line of a run's output (lines in order: it follows the blocks)."""
        text = line.strip()
        if self._block is not None:
            if not _NOT_IN_BLOCK.match(text):
                body = line[len(_INDENT):] if line.startswith(_INDENT) else line
                if self._block == "input" and body.rstrip() == "}":
                    self._block = None
                return False
            self._block = None
        if _EXECUTOR_INPUT.match(text):
            self._block = "input"
            return False
        if _OUTPUTS.match(text):
            self._block = "outputs"
            return False
        if _TASK_START.match(text):
            self._no_cuda_driver = False
        if _NO_CUDA_DRIVER in text:
            self._no_cuda_driver = True
        if self._no_cuda_driver and _CUINIT_FAILED.match(text):
            return False
        return bool(text) and not _HIDDEN.match(text)

    def flush(self) -> None:
        self.log.flush()
        self.terminal.flush()

    def close(self) -> None:
        """Show a last line that has no newline; the streams stay open."""
        if self._partial:
            partial, self._partial = self._partial, ""
            self._emit(partial)
        self.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()

    def __getattr__(self, name: str):
        return getattr(self.terminal, name)


def _hide_kfp_records(record: logging.LogRecord) -> bool:
    return not _HIDDEN_RECORDS.match(record.getMessage())


@contextlib.contextmanager
def _run_output(log_path: Path, *, verbose: bool):
    """This process's stdout through `RunOutput` into ``log_path``, and TF_CPP_MIN_LOG_LEVEL for the tasks
    (subprocesses: they inherit this environment), for the time of a run."""
    root_logger = logging.getLogger()
    set_level = not verbose and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    with open(log_path, "x", encoding="utf-8", buffering=1) as log:
        output = RunOutput(sys.stdout, log, verbose=verbose)
        if not verbose:
            root_logger.addFilter(_hide_kfp_records)
        if set_level:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        try:
            with contextlib.redirect_stdout(output):
                yield
        finally:
            output.close()
            root_logger.removeFilter(_hide_kfp_records)
            if set_level:
                os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


@dataclasses.dataclass(frozen=True)
class StageRun:
    """One task of a local run: whether it came from the cache, its time, where its output artifacts are
    (``outputs``: name -> uri; the fingerprint's output is its value)."""

    name: str
    cached: bool
    seconds: float
    outputs: dict[str, str]


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """A finished local run; ``log``: the file with all of its output; ``skipped``: the steps it skipped,
    with why (`SKIPPED`)."""

    pipeline_root: str
    seconds: float
    stages: list[StageRun]
    metrics: dict[str, float]
    log: str = ""
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def format(self) -> str:
        """A report for people: each stage (ran or cached, seconds, outputs) and the evaluation summary."""
        width = max(len(stage.name) for stage in self.stages)
        lines = [f"{'stage':<{width}} {'status':<7} {'seconds':>8}  outputs"]
        for stage in self.stages:
            status = "cached" if stage.cached else "ran"
            first = True
            for name, uri in stage.outputs.items():
                head = f"{stage.name:<{width}} {status:<7} {stage.seconds:>8.1f}" if first else " " * (width + 17)
                lines.append(f"{head}  {name}: {uri}")
                first = False
        lines.append(f"{'total':<{width}} {'':<7} {self.seconds:>8.1f}")
        lines.extend(f"{name}: skipped ({why})" for name, why in self.skipped.items())
        evaluation = next((stage.outputs.get("evaluation") for stage in self.stages
                           if "evaluation" in stage.outputs), None)
        if evaluation:
            lines.append(f"report: {evaluation}/report.html")
        lines.append("evaluation: " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(self.metrics.items())))
        if self.log:
            lines.append(f"log: {self.log}")
        return "\n".join(lines)


def init_local(pipeline_root: str | os.PathLike, *, enable_caching: bool = True) -> None:
    """Start a kfp.local session that runs tasks as subprocesses of this interpreter."""
    # kfp.local imports the `docker` package if it can and only expects ImportError otherwise; the
    # repository's own docker/ folder (build scripts) is a namespace package when the working directory
    # is on sys.path (`python -m ...` from the repository root): make that import fail as if absent.
    spec = importlib.util.find_spec("docker")
    if spec is not None and spec.origin is None and "docker" not in sys.modules:
        sys.modules["docker"] = None
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               enable_caching=enable_caching, raise_on_error=True)


def pipeline_spec_dict(pipeline) -> dict:
    """The compiled spec of a pipeline function, as the dict a template file holds."""
    return json_format.MessageToDict(pipeline.pipeline_spec)


def run_local(
    parameters: Mapping[str, Any] | None = None,
    *,
    pipeline_root: str | os.PathLike = DEFAULT_PIPELINE_ROOT,
    enable_caching: bool = True,
    verbose: bool = False,
) -> LocalRun:
    """Run the whole pipeline locally (default parameters: the embedded synthetic data).

    Args:
        parameters: pipeline parameters to override, e.g. ``{"epochs": 5}`` (names and types checked);
            ``register`` may only be false: the registry step is skipped (see the module docstring).
        pipeline_root: local folder for the outputs and the cache.
        enable_caching: reuse the outputs of tasks whose inputs are unchanged.
        verbose: show every line of the tasks' output (kfp's executor input, TensorFlow's start-up...);
            else only what each stage did, its status and any error. Either way the run's whole output
            goes to ``pipeline_root/logs/run-<timestamp>.log`` (`LocalRun.log`).

    Returns:
        The run: per stage, cached or not, its seconds and output locations; the evaluation metrics; the
        skipped steps.
    """
    root = Path(pipeline_root)
    if "://" in str(pipeline_root):
        raise DeepFaceError(f"--pipeline-root {pipeline_root}: a local run needs a local folder")
    pipeline = make_pipeline(CompileOptions(train_retries=0))
    values = check_parameters(pipeline_spec_dict(pipeline), parameters or {})
    if values.get("register"):
        raise DeepFaceError("register=true: a local run cannot reach the Vertex AI Model Registry; register on "
                            "Vertex AI (python -m pipelines submit), or leave register out")
    values["register"] = False
    (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
    log = root / LOG_DIR / f"run-{datetime.datetime.now():%Y-%m-%d-%H-%M-%S-%f}.log"
    init_local(root, enable_caching=enable_caching)
    identity = run_identity(pipeline_spec_dict(pipeline), values, enable_caching)
    run_folder = open_run(root, pipeline.pipeline_spec.pipeline_info.name, identity)
    started = time.time()
    try:
        with warnings.catch_warnings(), _run_output(log, verbose=verbose), run_folder.named():
            for pattern in _IGNORED_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            try:
                outputs = pipeline(**values).outputs
            except RuntimeError as error:
                raise DeepFaceError(f"the local pipeline failed: {error}; the failing task's log is above, "
                                    f"all of it in {log}") from None
        run_folder.complete(identity)
    finally:
        run_folder.release()
    seconds = time.time() - started
    tasks = {body.task_info.name: task for task, body in pipeline.pipeline_spec.root.dag.tasks.items()}
    stages = _stage_runs(outputs, tasks, run_folder.path, started)
    return LocalRun(str(root), seconds, stages, _metrics(outputs), str(log), dict(SKIPPED))


def _stage_runs(outputs: Mapping[str, Any], tasks: Mapping[str, str], run_dir: Path,
                started: float) -> list[StageRun]:
    """Each stage (``tasks``: display name -> kfp task name) as run in ``run_dir`` since ``started`` (a task
    that finished there before, in the killed run this one resumed, came from the cache)."""
    ends = {}  # stage -> when it finished, for the stages that ran
    for stage in STAGES:
        written = run_dir / tasks[stage] / _EXECUTOR_OUTPUT
        if written.is_file() and written.stat().st_mtime >= started:
            ends[stage] = written.stat().st_mtime
    seconds, previous_end = {}, started
    for stage, end in sorted(ends.items(), key=lambda item: item[1]):
        seconds[stage], previous_end = max(end - previous_end, 0.0), end
    return [
        StageRun(stage, stage not in ends, seconds.get(stage, 0.0),
                 {name: _output_text(outputs[name]) for name in STAGE_OUTPUTS[stage]})
        for stage in STAGES
    ]


def _output_text(output: Any) -> str:
    """Where an output artifact is, or a text output itself."""
    return output if isinstance(output, str) else output.uri


def _metrics(outputs: Mapping[str, Any]) -> dict[str, float]:
    return {name: value for name, value in outputs["metrics"].metadata.items() if isinstance(value, (int, float))}
