"""The local run's cache (kfp.local, under ``pipeline_root/.kfp_cache``): ``run-local --no-cache`` reruns every
stage; a component whose code changed gets a new cache key, so its stage reruns and the others stay cached.

kfp.local keys a task on its component's name, image, command and arguments, inputs and environment
(``kfp.local.cache.LocalCache.compute_key``, called as ``kfp.local.orchestrator.task_executor`` does); a
component's code is part of its command (`components.launcher`: ``sh -ec SCRIPT SOURCE START_CODE``).
The key tests compute those keys from the compiled pipeline; the slow tests run the pipeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import components.evaluate
import components.fetch
import components.fingerprint
import components.labels
import components.synth
import components.tfrecords
import components.train
from pipelines.cli import main as pipelines_main
from pipelines.local import pipeline_spec_dict, run_local
from pipelines.pipeline import STAGES, make_pipeline

# test_local_pipeline's PARAMS with one epoch: only which stages run matters here, not the accuracy.
PARAMS = {"synthetic_identities": 6, "synthetic_images_per_identity": 8, "epochs": 1, "batch_size": 16}
COMPONENTS = {  # the component of each stage (the pipeline's plain training component: what runs locally)
    "fingerprint": components.fingerprint.fingerprint_data,
    "synth": components.synth.make_synthetic_dataset,
    "fetch": components.fetch.fetch,
    "labels": components.labels.build_labels,
    "tfrecords": components.tfrecords.build_tfrecords,
    "train": components.train.train,
    "evaluate": components.evaluate.evaluate,
}
SOURCE = 3  # index of the component's code in its command (components.launcher)
# One statement more in a component's code; the task prints it when its (changed) code runs.
CHANGED = "the component's code changed"
EXTRA_STATEMENT = f"\nprint({CHANGED!r})\n"


def change_source(monkeypatch, stage: str) -> None:
    """``stage``'s component with one statement added to its code, until the test ends."""
    container = COMPONENTS[stage].component_spec.implementation.container
    command = list(container.command)
    assert f"def {COMPONENTS[stage].name.replace('-', '_')}(" in command[SOURCE], command[SOURCE][:300]
    command[SOURCE] += EXTRA_STATEMENT
    monkeypatch.setattr(container, "command", command)


def cache_keys(tmp_path: Path) -> dict[str, str]:
    """The kfp.local cache key of each task (by display name) of the pipeline compiled now, as kfp.local
    computes it, with the task's input specification standing for its arguments (the same in every spec
    compared here); only tasks whose caching is on."""
    from kfp.local.cache import LocalCache

    spec = pipeline_spec_dict(make_pipeline())
    cache = LocalCache(str(tmp_path / "cache"))
    keys = {}
    for task in spec["root"]["dag"]["tasks"].values():
        if not task.get("cachingOptions", {}).get("enableCache"):
            continue
        component = task["componentRef"]["name"]
        container = spec["deploymentSpec"]["executors"][spec["components"][component]["executorLabel"]]["container"]
        keys[task["taskInfo"]["name"]] = cache.compute_key(
            component_name=component, image=container["image"],
            full_command=container.get("command", []) + container.get("args", []),
            arguments=task.get("inputs", {}),
            env_vars={env["name"]: env["value"] for env in container.get("env", [])},
            custom_cache_key=task.get("cachingOptions", {}).get("cacheKey"),
        )
    return keys


def test_the_same_code_gives_the_same_cache_keys(tmp_path):
    keys = cache_keys(tmp_path)
    # Every stage but the fingerprint (never cached, `pipelines.pipeline`) is cached, and two compilations of
    # the same code key alike: a rerun is served from the cache.
    assert set(keys) == set(STAGES) - {"fingerprint"}
    assert cache_keys(tmp_path) == keys
    assert len(set(keys.values())) == len(keys)


@pytest.mark.parametrize("stage", [stage for stage in STAGES if stage != "fingerprint"])
def test_a_changed_component_gets_a_new_cache_key(tmp_path, monkeypatch, stage):
    before = cache_keys(tmp_path)
    change_source(monkeypatch, stage)
    after = cache_keys(tmp_path)
    assert {name for name in before if after[name] != before[name]} == {stage}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A local run of `PARAMS` (every stage ran) and its pipeline root, holding its cache."""
    root = tmp_path_factory.mktemp("local_cache") / "runs"
    run = run_local(PARAMS, pipeline_root=root)
    assert not any(stage.cached for stage in run.stages)
    return run, root


def outputs_of(run) -> dict[str, dict[str, str]]:
    return {stage.name: stage.outputs for stage in run.stages}


@pytest.mark.slow
def test_run_local_no_cache_reruns_every_stage(first_run):
    first, root = first_run
    args = ["run-local", "--no-cache", "--pipeline-root", str(root)] + [f"--param={k}={v}" for k, v in PARAMS.items()]
    result = CliRunner().invoke(pipelines_main, args)
    assert result.exit_code == 0, result.output
    report = result.output[re.search(r"^stage +status", result.output, re.M).start():]
    rows = [line.split() for line in report.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows if row[0] in STAGES] == [(stage, "ran") for stage in STAGES]
    # Every artifact written anew, under the pipeline root, none of them the first run's.
    table = report[:re.search(r"^total ", report, re.M).start()]
    written = dict(re.findall(rf"  (\w+): ({re.escape(str(root))}/\S+)$", table, re.M))
    previous = {name: uri for stage in first.stages if stage.name != "fingerprint"
                for name, uri in stage.outputs.items()}
    assert set(written) == set(previous)
    for name, uri in written.items():
        assert uri != previous[name] and Path(uri).exists(), (name, uri)


@pytest.mark.slow
def test_a_changed_component_reruns_and_the_others_stay_cached(first_run, monkeypatch):
    """evaluate's code with one statement more: evaluate reruns (its changed code runs) and every other stage
    comes from the first run's cache (the fingerprint runs every time)."""
    first, root = first_run
    change_source(monkeypatch, "evaluate")
    again = run_local(PARAMS, pipeline_root=root)
    ran = {stage.name for stage in again.stages if not stage.cached}
    assert ran == {"fingerprint", "evaluate"}
    before, after = outputs_of(first), outputs_of(again)
    assert {name: after[name] for name in STAGES if name not in ran} == {
        name: before[name] for name in STAGES if name not in ran}
    assert after["evaluate"]["evaluation"] != before["evaluate"]["evaluation"]
    assert Path(after["evaluate"]["evaluation"], "metrics.json").is_file()
    log = Path(again.log).read_text()
    assert CHANGED in log and CHANGED not in Path(first.log).read_text()
