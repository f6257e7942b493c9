"""One source for every setting: each stage's library function, its CLI command, its KFP component and the
pipeline agree on names and defaults. Everything compared is read from the code (signatures, click
parameters, the compiled template), not from a list kept here; the few deliberate differences are
named below with their reason.
"""

from __future__ import annotations

import inspect

import click
import pytest

import components.evaluate
import components.synth
import components.tfrecords
import components.train
from deepface import evaluate, synth, tfrecords
from deepface.cli import train as train_cli
from deepface.config import LEARNING_RATES, PRESETS, RECIPES, training_recipe, unset_to_none
from pipelines.pipeline import make_pipeline

# (stage, library function, CLI command, KFP component)
STAGES = [
    ("synth", synth.make_synthetic_dataset, synth.command, components.synth.synth_data),
    ("tfrecords", tfrecords.build_tfrecords, tfrecords.command, components.tfrecords.build_tfrecords),
    ("evaluate", evaluate.evaluate, evaluate.command, components.evaluate.evaluate_model),
    ("train", None, train_cli.command, components.train.train_model),
]
# Component defaults that differ from the library's on purpose: the pipeline's default run is the embedded
# demo (the tiny preset), and components name files of the fetched data folder (not paths, not None).
COMPONENT_CHOICES = {
    ("train", "preset"): "the pipeline's default run is the embedded demo: tiny",
    ("tfrecords", "landmarks"): "a file of the data folder (VGGFace2's release name)",
    ("evaluate", "landmarks"): "a file of the data folder (what `deepface landmarks` writes for LFW)",
    ("evaluate", "align"): "the pipeline states it (the library's None follows the model's metadata)",
}


def library_function(stage: str, function):
    if function is not None:
        return function
    from deepface.train import train

    return train


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def cli_defaults(command: click.Command) -> dict:
    """The value each option has when not given (click's own resolution: a bare flag is False)."""
    context = click.Context(command)
    values = {}
    for option in command.params:
        if isinstance(option, click.Option) and not option.required:
            default = option.get_default(context)
            values[option.name] = (False if option.is_flag and not option.secondary_opts else None) \
                if default is None or type(default).__name__ == "Sentinel" else default
    return values


def component_defaults(component) -> dict:
    return defaults(component.python_func)


@pytest.mark.parametrize("stage, function, command, component", STAGES, ids=[s[0] for s in STAGES])
def test_the_cli_takes_the_library_defaults(stage, function, command, component):
    library = defaults(library_function(stage, function))
    cli = cli_defaults(command)
    shared = set(library) & set(cli)
    assert len(shared) >= 5, (stage, sorted(shared))
    for name in shared:
        if name == "shard_bytes":
            continue
        assert cli[name] == library[name], f"{stage} --{name}: CLI {cli[name]!r}, library {library[name]!r}"
    if "shard_mb" in cli:  # the CLI's MiB for the library's bytes
        assert int(cli["shard_mb"] * 2**20) == library["shard_bytes"]


@pytest.mark.parametrize("stage, function, command, component", STAGES, ids=[s[0] for s in STAGES])
def test_components_take_the_library_defaults(stage, function, command, component):
    library = defaults(library_function(stage, function))
    ours = component_defaults(component)
    shared = set(library) & set(ours)
    assert len(shared) >= 3, (stage, sorted(shared))
    for name in sorted(shared):
        if (stage, name) in COMPONENT_CHOICES:
            continue
        # KFP parameters cannot be None: "" and 0 stand for it (deepface.config.unset_to_none).
        value = ours[name] if library[name] is not None else unset_to_none(ours[name])
        assert value == library[name], f"{stage} component {name}: {ours[name]!r}, library {library[name]!r}"


def test_the_pipeline_passes_its_parameters_with_the_components_defaults():
    pipeline = defaults(make_pipeline().pipeline_func)
    spec = make_pipeline().pipeline_spec
    tasks = spec.root.dag.tasks
    task_of = {
        "synth": "synth-data", "tfrecords": "build-tfrecords", "evaluate": "evaluate-model", "train": "train-model"
    }
    compared = 0
    for stage, _, _, component in STAGES:
        ours = component_defaults(component)
        wired = tasks[task_of[stage]].inputs.parameters
        for name, argument in wired.items():
            source = argument.component_input_parameter
            if source == name and name in pipeline and name in ours:  # the same setting under the same name
                assert pipeline[source] == ours[name], (
                    f"pipeline {source}={pipeline[source]!r}, {stage} {name}={ours[name]!r}"
                )
                compared += 1
    assert compared >= 8


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_entry_point_trains_a_preset_by_the_same_recipe(preset):
    """The CLI (None), the component and the pipeline ("" and 0) all mean the preset's recipe."""
    cli = cli_defaults(train_cli.command)
    ours = component_defaults(components.train.train_model)
    pipeline = defaults(make_pipeline().pipeline_func)
    expected = RECIPES[preset]
    for source in (cli, ours, pipeline):
        got = training_recipe(preset, optimizer=unset_to_none(source["optimizer"]),
                              batch_size=unset_to_none(source["batch_size"]),
                              learning_rate=unset_to_none(source["learning_rate"]))
        assert got == expected
    assert training_recipe(preset, batch_size=7).batch_size == 7  # a value given always wins
    for optimizer, rate in LEARNING_RATES.items():  # another optimizer brings its own usual rate
        assert training_recipe(preset, optimizer=optimizer).learning_rate == (
            expected.learning_rate if optimizer == expected.optimizer else rate)
        assert training_recipe(preset, optimizer=optimizer, learning_rate=0.5).learning_rate == 0.5


def test_the_small_presets_learn_by_default_and_paper_follows_the_paper():
    assert RECIPES["paper"].optimizer == "sgd" and RECIPES["paper"].batch_size == 128
    assert RECIPES["paper"].learning_rate == 0.01
    assert {RECIPES[name].optimizer for name in ("tiny", "small")} == {"adam"}
