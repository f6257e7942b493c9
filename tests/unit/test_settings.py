"""One source for every setting: each stage's command line, KFP component and the pipeline take their
settings' names, defaults, ranges and descriptions from `deepface.settings`, and each library function
checks its settings with the same class. Everything compared is read from the code as it builds them
(click parameters, component specs, the compiled pipeline), not from a list kept here.
"""

from __future__ import annotations

import click
import pytest

import components.evaluate
import components.fetch
import components.synth
import components.tfrecords
import components.train
from components.parameters import settings_field
from deepface import detect, evaluate, fetch, synth, tfrecords
from deepface.cli import evaluate as evaluate_cli
from deepface.cli import fetch as fetch_cli
from deepface.cli import landmarks as landmarks_cli
from deepface.cli import synth as synth_cli
from deepface.cli import tfrecords as tfrecords_cli
from deepface.cli import train as train_cli
from deepface.config import LEARNING_RATES, PRESETS, RECIPES, training_recipe
from deepface.settings import (
    EvaluateSettings,
    FetchSettings,
    LandmarksSettings,
    SettingError,
    SynthSettings,
    TfrecordsSettings,
    TrainSettings,
)
from pipelines.params import PIPELINE_RENAMED, PIPELINE_SETTINGS
from pipelines.pipeline import make_pipeline

# (stage, settings, CLI command, KFP component or None, library function; None: deepface.train.train)
STAGES = [
    ("synth", SynthSettings, synth_cli.command, components.synth.make_synthetic_dataset, synth.make_synthetic_dataset),
    ("fetch", FetchSettings, fetch_cli.command, components.fetch.fetch, fetch.fetch),
    ("landmarks", LandmarksSettings, landmarks_cli.command, None, detect.detect_landmarks),
    ("tfrecords", TfrecordsSettings, tfrecords_cli.command, components.tfrecords.build_tfrecords,
     tfrecords.build_tfrecords),
    ("train", TrainSettings, train_cli.command, components.train.train, None),
    ("evaluate", EvaluateSettings, evaluate_cli.command, components.evaluate.evaluate, evaluate.evaluate),
]
IDS = [stage[0] for stage in STAGES]
# Component parameters that differ from their setting on purpose, with the reason.
COMPONENT_CHOICES = {
    ("tfrecords", "image_size"): "not a parameter: the component stores faces at its preset's input size",
    ("evaluate", "align"): "the pipeline states it; the library's None (follow the model) has no KFP value",
}


def cli_defaults(command: click.Command) -> dict:
    """The value each option has when not given (click's own resolution)."""
    context = click.Context(command)
    values = {}
    for option in command.params:
        if isinstance(option, click.Option) and not option.required:
            default = option.get_default(context)
            values[option.name] = None if type(default).__name__ == "Sentinel" else default
    return values


def component_inputs(component) -> dict:
    """The component's parameters as KFP compiled them: ``{name: (default, description)}``."""
    spec = component.pipeline_spec.components[next(iter(component.pipeline_spec.components))]
    parameters = spec.input_definitions.parameters
    return {name: (_value(parameter.default_value), parameter.description) for name, parameter in parameters.items()}


def _value(protobuf_value):
    kind = protobuf_value.WhichOneof("kind")
    value = getattr(protobuf_value, kind) if kind else None
    return int(value) if kind == "number_value" and value == int(value) else value


@pytest.mark.parametrize("stage, settings, command, component, function", STAGES, ids=IDS)
def test_the_command_line_has_one_option_per_setting(stage, settings, command, component, function):
    defaults = cli_defaults(command)
    options = {option.name: option for option in command.params if isinstance(option, click.Option)}
    for name, field in settings.fields().items():
        assert name in options, f"deepface {stage}: no option for the setting {name}"
        assert defaults[name] == field.default, f"deepface {stage} --{name}: {defaults[name]!r} != {field.default!r}"
        assert options[name].help.startswith(field.help)
        if field.rule.choices:
            assert tuple(options[name].type.choices) == field.rule.choices


@pytest.mark.parametrize("stage, settings, command, component, function",
                         [s for s in STAGES if s[3] is not None], ids=[s[0] for s in STAGES if s[3] is not None])
def test_components_take_each_setting_with_its_default_and_description(stage, settings, command, component,
                                                                          function):
    inputs = component_inputs(component)
    for name, field in settings.fields().items():
        if (stage, name) in COMPONENT_CHOICES:
            continue
        if not field.rule.kfp:  # machine-local (workers, ...): not a component parameter
            assert name not in inputs, f"{stage} component exposes the machine-local setting {name}"
            continue
        assert name in inputs, f"{stage} component lacks the setting {name}"
        default, description = inputs[name]
        assert default == field.kfp_default, f"{stage} component {name}: {default!r} != {field.kfp_default!r}"
        assert description == field.describe(kfp=True)


def test_the_pipeline_parameters_are_settings_with_their_defaults_and_descriptions():
    parameters = make_pipeline().pipeline_spec.root.input_definitions.parameters
    assert len(parameters) >= 15
    for name, parameter in parameters.items():
        field = settings_field(name, PIPELINE_SETTINGS, PIPELINE_RENAMED)
        assert field is not None, f"pipeline parameter {name} is no setting"
        assert _value(parameter.default_value) == field.kfp_default, name
        assert parameter.description == field.describe(kfp=True), name


def test_the_pipeline_passes_its_parameters_to_the_components_settings():
    """A pipeline parameter wired into a component input means the same setting there."""
    spec = make_pipeline().pipeline_spec
    compared = 0
    for task in spec.root.dag.tasks.values():
        for name, argument in task.inputs.parameters.items():
            source = argument.component_input_parameter
            if not source:
                continue
            ours = settings_field(source, PIPELINE_SETTINGS, PIPELINE_RENAMED)
            assert ours is not None
            if ours.name == name or source in PIPELINE_RENAMED:
                compared += 1
            assert ours.type in (int, float, str, bool)
    assert compared >= 15


@pytest.mark.parametrize("stage, settings, command, component, function", STAGES, ids=IDS)
def test_library_functions_check_their_settings_first(stage, settings, command, component, function, tmp_path):
    if function is None:
        from deepface.train import train as function
    arguments = {"synth": [tmp_path], "fetch": [[str(tmp_path)], tmp_path / "out"],
                 "landmarks": [tmp_path, tmp_path / "out"], "tfrecords": [tmp_path, tmp_path, tmp_path / "out"],
                 "train": [tmp_path, tmp_path, tmp_path / "out"],
                 "evaluate": [tmp_path, tmp_path, "generate", tmp_path / "out"]}[stage]
    with pytest.raises(SettingError, match="unknown setting"):
        function(*arguments, no_such_setting=1)
    name, field = next((n, f) for n, f in settings.fields().items() if f.type is int and f.rule.minimum is not None)
    with pytest.raises(SettingError, match=name):
        function(*arguments, **{name: int(field.rule.minimum) - 1})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_entry_point_trains_a_preset_by_the_same_recipe(preset):
    """The CLI (None), the component and the pipeline ("" and 0) all mean the preset's recipe."""
    cli = cli_defaults(train_cli.command)
    component = {name: default for name, (default, _) in component_inputs(components.train.train).items()}
    pipeline = {name: _value(p.default_value)
                for name, p in make_pipeline().pipeline_spec.root.input_definitions.parameters.items()}
    expected = RECIPES[preset]
    for source in (TrainSettings.of(_recipe_options(cli)), TrainSettings.from_kfp(**_recipe_options(component)),
                   TrainSettings.from_kfp(**_recipe_options(pipeline))):
        got = training_recipe(preset, optimizer=source.optimizer, batch_size=source.batch_size,
                              learning_rate=source.learning_rate)
        assert got == expected
    assert training_recipe(preset, batch_size=7).batch_size == 7  # a value given always wins
    for optimizer, rate in LEARNING_RATES.items():  # another optimizer brings its own usual rate
        assert training_recipe(preset, optimizer=optimizer).learning_rate == (
            expected.learning_rate if optimizer == expected.optimizer else rate)
        assert training_recipe(preset, optimizer=optimizer, learning_rate=0.5).learning_rate == 0.5


def _recipe_options(values: dict) -> dict:
    return {name: values[name] for name in ("optimizer", "batch_size", "learning_rate")}


def test_the_small_presets_learn_by_default_and_paper_follows_the_paper():
    assert RECIPES["paper"].optimizer == "sgd" and RECIPES["paper"].batch_size == 128
    assert RECIPES["paper"].learning_rate == 0.01
    assert {RECIPES[name].optimizer for name in ("tiny", "small")} == {"adam"}
