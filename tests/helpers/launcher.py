"""A stand-in for the KFP v2 launcher: runs a compiled pipeline template task by task, each task as its
container's own command and arguments with the executor input the launcher would write.

What the launcher does and this does too (kfp's backend `driver` and `launcher-v2`):
- the task's parameters come from the pipeline's parameters (``componentInputParameter``), constants
  (``runtimeValue``) or upstream outputs (``taskOutputParameter``); a parameter the task does not set takes
  the component's default; integers are passed as numbers of type NUMBER_INTEGER;
- input artifacts are the upstream executor outputs' artifacts (their URIs and metadata);
- each output artifact gets ``PIPELINE_ROOT/TASK/OUTPUT`` (a gs:// URI, which kfp's executor reads and writes
  as ``/gcs/BUCKET/...``), and the executor writes its output JSON to a file the launcher then reads.

What it does not: caching, retries, condition groups and loops (the project's one condition, around the
register step, needs Vertex AI: it is left out), and the custom-job wrapping (the plain template only).
The caller runs each command (`RunTask`): in the image, through buildah, for the container test.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

# run_task(task name, argv, executor output file) -> the executor output JSON it wrote.
RunTask = Callable[[str, list[str], str], dict]


def _order(tasks: Mapping[str, dict]) -> list[str]:
    """Task names, each after the tasks it depends on (stable: alphabetical among ready tasks)."""
    done: list[str] = []
    while len(done) < len(tasks):
        ready = sorted(name for name, task in tasks.items()
                       if name not in done and set(task.get("dependentTasks", [])) <= set(done))
        if not ready:
            raise ValueError(f"the template's tasks have a cycle: {sorted(set(tasks) - set(done))}")
        done.append(ready[0])
    return done


def _number(value: Any, kind: str) -> Any:
    return int(value) if kind == "NUMBER_INTEGER" and value is not None else value


def run_template(template: dict, parameters: Mapping[str, Any], run_task: RunTask, *,
                 pipeline_root: str, output_file: Callable[[str], str]) -> dict[str, dict]:
    """Run every task of ``template`` (a compiled pipeline, as loaded from its YAML) in dependency order.

    Args:
        template: the compiled pipeline spec.
        parameters: pipeline parameters; the others take the template's defaults.
        run_task: runs one task's argv; returns the executor output it wrote (see `RunTask`).
        pipeline_root: e.g. ``gs://bucket/root``: output artifacts go to ``pipeline_root/TASK/OUTPUT``.
        output_file: the path (as the task sees it) where a task writes its executor output.

    Returns:
        Each task's executor output (``parameterValues`` and ``artifacts``).

    Raises:
        KeyError: an unknown pipeline parameter.
    """
    root = template["root"]
    definitions = root["inputDefinitions"]["parameters"]
    unknown = set(parameters) - set(definitions)
    if unknown:
        raise KeyError(f"not parameters of the pipeline: {sorted(unknown)}")
    pipeline_values = {name: _number(parameters.get(name, spec.get("defaultValue")), spec["parameterType"])
                       for name, spec in definitions.items()}
    outputs: dict[str, dict] = {}
    for name in _order(root["dag"]["tasks"]):
        task = root["dag"]["tasks"][name]
        component = template["components"][task["componentRef"]["name"]]
        if "dag" in component:  # a condition group (the register step, which needs Vertex AI): not run here
            continue
        container = template["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        inputs = component.get("inputDefinitions", {})
        values = {key: _number(spec["defaultValue"], spec["parameterType"])
                  for key, spec in inputs.get("parameters", {}).items() if "defaultValue" in spec}
        for key, source in task.get("inputs", {}).get("parameters", {}).items():
            kind = inputs["parameters"][key]["parameterType"]
            if "componentInputParameter" in source:
                values[key] = pipeline_values[source["componentInputParameter"]]
            elif "runtimeValue" in source:
                values[key] = _number(source["runtimeValue"]["constant"], kind)
            else:
                upstream = source["taskOutputParameter"]
                values[key] = outputs[upstream["producerTask"]]["parameterValues"][upstream["outputParameterKey"]]
        artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            upstream = source["taskOutputArtifact"]
            artifacts[key] = outputs[upstream["producerTask"]]["artifacts"][upstream["outputArtifactKey"]]
        declared = component.get("outputDefinitions", {})
        out_file = output_file(name)
        executor_input = {
            "inputs": {"parameterValues": values, "artifacts": artifacts},
            "outputs": {
                "artifacts": {key: {"artifacts": [{"name": key, "type": spec["artifactType"],
                                                   "uri": f"{pipeline_root}/{name}/{key}", "metadata": {}}]}
                              for key, spec in declared.get("artifacts", {}).items()},
                "parameters": {key: {"outputFile": f"{out_file}.{key}"} for key in declared.get("parameters", {})},
                "outputFile": out_file,
            },
        }
        argv = [*container["command"],
                *(json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"])]
        written = run_task(name, argv, out_file)
        # The launcher keeps the declared artifacts, with what the executor wrote of them (uri, metadata).
        produced = {key: value for key, value in executor_input["outputs"]["artifacts"].items()}
        produced.update(written.get("artifacts", {}))
        outputs[name] = {"parameterValues": written.get("parameterValues", {}), "artifacts": produced}
    return outputs
