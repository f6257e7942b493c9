"""deepface.settings: each field's rule is enforced by the library, shown and enforced by the command line,
and given to components (KFP defaults, run-form descriptions) by components.parameters."""

from __future__ import annotations

import inspect

import click
import pytest
from click.testing import CliRunner

from components.parameters import takes_settings
from deepface import settings as settings_module
from deepface.settings import (
    EvaluateSettings,
    SettingError,
    Settings,
    TfrecordsSettings,
    TrainSettings,
    click_options,
)

ALL_SETTINGS = [cls for cls in vars(settings_module).values()
                if isinstance(cls, type) and issubclass(cls, Settings) and cls is not Settings]


def test_every_stage_has_settings_and_every_field_a_description():
    assert {cls.__name__ for cls in ALL_SETTINGS} >= {
        "SynthSettings", "FetchSettings", "LandmarksSettings", "TfrecordsSettings", "TrainSettings",
        "EvaluateSettings"}
    for cls in ALL_SETTINGS:
        cls()  # the defaults obey the rules
        for field in cls.fields().values():
            assert field.help.endswith(".") and len(field.help) > 10, (cls.__name__, field.name)
            assert field.type in (int, float, str, bool)
            if field.default is None:
                assert field.optional and field.rule.unset, (cls.__name__, field.name)


@pytest.mark.parametrize("options, name", [
    ({"epochs": 0}, "epochs"), ({"optimizer": "rmsprop"}, "optimizer"), ({"learning_rate": 0.0}, "learning_rate"),
    ({"momentum": 1.0}, "momentum"), ({"batch_size": True}, "batch_size"), ({"preset": "huge"}, "preset"),
    ({"steps_per_epoch": 1.5}, "steps_per_epoch"),
])
def test_out_of_range_values_are_refused_naming_the_parameter(options, name):
    with pytest.raises(SettingError) as raised:
        TrainSettings(**options)
    assert raised.value.name == name and str(raised.value).startswith(f"{name}=")


def test_none_means_decided_at_run_time_and_ints_are_numbers():
    settings = TrainSettings(batch_size=None, learning_rate=1)  # an int is a valid float
    assert settings.batch_size is None and settings.learning_rate == 1


def test_an_unknown_setting_suggests_the_close_name():
    with pytest.raises(SettingError, match="did you mean 'epochs'"):
        TrainSettings.of({"epoch": 3})


def test_rules_between_fields():
    with pytest.raises(SettingError, match="needs align off"):
        TfrecordsSettings(keep_original=True, align=True)
    assert TfrecordsSettings(keep_original=True, align=False).keep_original


def test_kfp_values_mean_none_where_the_default_is_none():
    settings = TrainSettings.from_kfp(batch_size=0, learning_rate=0.0, optimizer="", epochs=3, seed=0)
    assert (settings.batch_size, settings.learning_rate, settings.optimizer) == (None, None, None)
    assert (settings.epochs, settings.seed) == (3, 0)  # 0 is a value where the default is not None


def _command(settings=TrainSettings):
    @click.command()
    @click_options(settings)
    def command(**values):
        built = settings(**values)
        click.echo(repr(built))

    return command


def test_the_command_line_shows_and_enforces_each_rule():
    command = _command()
    help_text = CliRunner().invoke(command, ["--help"]).output
    for field in TrainSettings.fields().values():
        assert "--" + field.name.replace("_", "-") in help_text
    assert "[default: the preset's]" in help_text and "0<=x<1" in help_text
    bad = CliRunner().invoke(command, ["--epochs", "0"])
    assert bad.exit_code == 2 and "--epochs" in bad.output
    good = CliRunner().invoke(command, ["--epochs", "3", "--optimizer", "adam", "--augment"])
    assert good.exit_code == 0 and "epochs=3" in good.output and "augment=True" in good.output


def test_a_rule_between_fields_is_reported_as_the_flag():
    result = CliRunner().invoke(_command(TfrecordsSettings), ["--keep-original"])
    assert result.exit_code == 2 and "'--keep-original'" in result.output and "align off" in result.output


def test_components_take_defaults_and_descriptions_from_the_settings():
    def evaluate(model: str, batch_size: int, align: bool, pairs: str = "pairs.txt"):
        """Evaluate.

        Args:
            model: the model.
            pairs: the pairs file.
        """

    decorated = takes_settings(EvaluateSettings, defaults={"align": True})(evaluate)
    parameters = inspect.signature(decorated).parameters
    assert parameters["batch_size"].default == 64 and parameters["align"].default is True
    assert parameters["pairs"].default == "pairs.txt" and parameters["model"].default is inspect.Parameter.empty
    assert "batch_size: Images per forward pass." in decorated.__doc__
    assert "model: the model." in decorated.__doc__


def test_a_component_cannot_keep_a_default_of_its_own_for_a_setting():
    def train(epochs: int = 3):
        """Train."""

    with pytest.raises(TypeError, match="epochs"):
        takes_settings(TrainSettings)(train)


def test_renamed_parameters_take_the_named_field():
    def pipeline(train_seed: int, data_seed: int):
        """Pipeline."""

    decorated = takes_settings(renamed={"train_seed": (TrainSettings, "seed"),
                                        "data_seed": (EvaluateSettings, "pairs_seed")})(pipeline)
    assert "train_seed: Seeds the weights" in decorated.__doc__
    assert "data_seed: Seed of generated pairs" in decorated.__doc__
