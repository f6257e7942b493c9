"""Run the whole pipeline on this machine with kfp.local, caching on.

Each task runs ``python -m kfp.dsl.executor_main`` in a subprocess of the current interpreter
(``SubprocessRunner(use_venv=False)``): nothing is installed, the ``deepface`` package of this
environment does the work. Outputs land under ``pipeline_root/<pipeline>-<timestamp>/<task>/``; the
cache (``pipeline_root/.kfp_cache``) keys each task on its component, image, command and inputs, so a
rerun with the same parameters reuses every output, and changing e.g. only ``epochs`` reruns only
train and evaluate.

kfp.local reports neither which tasks came from the cache nor how long each took, so `run_local` reads
both from disk: a task ran in this run if its outputs lie in the folder this run created (a cached
task's outputs lie in an earlier run's folder), and the task chain runs one task at a time, so a task's
time is from the previous task's end to the ``executor_output.json`` it wrote last.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from google.protobuf import json_format

from deepface.errors import DeepFaceError
from pipelines.params import check_parameters
from pipelines.pipeline import STAGES, CompileOptions, make_pipeline

DEFAULT_PIPELINE_ROOT = "local_outputs"
# Pipeline outputs (see pipelines.pipeline.Outputs) of each task.
STAGE_OUTPUTS = {
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


@dataclasses.dataclass(frozen=True)
class StageRun:
    """One task of a local run: whether it came from the cache, its time, where its outputs are."""

    name: str
    cached: bool
    seconds: float
    outputs: dict[str, str]


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """A finished local run."""

    pipeline_root: str
    seconds: float
    stages: list[StageRun]
    metrics: dict[str, float]

    def format(self) -> str:
        """A report for people: each stage (ran or cached, seconds, outputs) and the evaluation summary."""
        lines = [f"{'stage':<10} {'status':<7} {'seconds':>8}  outputs"]
        for stage in self.stages:
            status = "cached" if stage.cached else "ran"
            first = True
            for name, uri in stage.outputs.items():
                head = f"{stage.name:<10} {status:<7} {stage.seconds:>8.1f}" if first else " " * 27
                lines.append(f"{head}  {name}: {uri}")
                first = False
        lines.append(f"{'total':<10} {'':<7} {self.seconds:>8.1f}")
        evaluation = next((stage.outputs.get("evaluation") for stage in self.stages if "evaluation" in stage.outputs), None)
        if evaluation:
            lines.append(f"report: {evaluation}/report.html")
        lines.append("evaluation: " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(self.metrics.items())))
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
) -> LocalRun:
    """Run the whole pipeline locally (default parameters: the embedded synthetic data).

    Args:
        parameters: pipeline parameters to override, e.g. ``{"epochs": 5}`` (names and types checked).
        pipeline_root: local folder for the outputs and the cache.
        enable_caching: reuse the outputs of tasks whose inputs are unchanged.

    Returns:
        The run: per stage, cached or not, its seconds and output locations; the evaluation metrics.
    """
    root = Path(pipeline_root)
    if "://" in str(pipeline_root):
        raise DeepFaceError(f"--pipeline-root {pipeline_root}: a local run needs a local folder")
    pipeline = make_pipeline(CompileOptions(train_retries=0))
    values = check_parameters(pipeline_spec_dict(pipeline), parameters or {})
    root.mkdir(parents=True, exist_ok=True)
    init_local(root, enable_caching=enable_caching)
    before = set(os.listdir(root))
    started = time.time()
    with warnings.catch_warnings():
        for pattern in _IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        try:
            outputs = pipeline(**values).outputs
        except RuntimeError as error:
            raise DeepFaceError(f"the local pipeline failed: {error}; the failing task's log is above") from None
    seconds = time.time() - started
    run_dirs = {(root / name).resolve() for name in set(os.listdir(root)) - before}
    return LocalRun(str(root), seconds, _stage_runs(outputs, run_dirs, started), _metrics(outputs))


def _stage_runs(outputs: Mapping[str, Any], run_dirs: set[Path], started: float) -> list[StageRun]:
    runs, previous_end = [], started
    for stage in STAGES:
        uris = {name: outputs[name].uri for name in STAGE_OUTPUTS[stage]}
        task_dir = Path(next(iter(uris.values()))).resolve().parent
        cached = task_dir.parent not in run_dirs
        seconds = 0.0
        if not cached:
            end = (task_dir / "executor_output.json").stat().st_mtime
            seconds, previous_end = max(end - previous_end, 0.0), end
        runs.append(StageRun(stage, cached, seconds, uris))
    return runs


def _metrics(outputs: Mapping[str, Any]) -> dict[str, float]:
    return {name: value for name, value in outputs["metrics"].metadata.items() if isinstance(value, (int, float))}
