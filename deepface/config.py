"""The model presets and their training recipes, without TensorFlow (the settings, the pipeline and the
TFRecords component read a preset's image size and recipe without importing it). The training options'
defaults and ranges are `deepface.settings.TrainSettings`.
"""

from __future__ import annotations

import dataclasses

from deepface.errors import DeepFaceError

PAPER_NUM_CLASSES = 8631  # VGGFace2 training identities


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of one DeepFace variant; every preset shares the paper's topology."""

    name: str
    image_size: int
    c1_filters: int = 32
    c3_filters: int = 16
    l4_filters: int = 16
    l5_filters: int = 16
    l6_filters: int = 16
    f7_units: int = 4096
    dropout: float = 0.5
    kernel_stddev: float | None = 0.01  # None: He normal, sqrt(2 / fan_in)
    bias_value: float = 0.5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, ModelConfig] = {
    "paper": ModelConfig("paper", image_size=152),
    "small": ModelConfig("small", 96, c1_filters=16, c3_filters=8, l4_filters=8, l5_filters=8, l6_filters=8,
                         f7_units=512, kernel_stddev=None, bias_value=0.0),
    "tiny": ModelConfig("tiny", 80, c1_filters=8, c3_filters=4, l4_filters=4, l5_filters=4, l6_filters=4,
                        f7_units=128, kernel_stddev=None, bias_value=0.0),
}


def get_config(preset: str | ModelConfig) -> ModelConfig:
    """The ModelConfig of a preset name (or the config itself)."""
    if isinstance(preset, ModelConfig):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise DeepFaceError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}") from None


OPTIMIZERS = ("sgd", "adam")
STRATEGIES = ("auto", "tpu", "gpu", "multi-gpu", "multi-worker", "cpu")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a preset trains when the optimizer, batch size and learning rate are not given.

    ``paper`` gets the paper's recipe (SGD with momentum 0.9, batch 128, learning rate 0.01 for a batch of
    128, scaled linearly with the batch). The small presets get what makes them learn in a few hundred
    steps: Adam, batch 32, learning rate 0.001 (as given); with the paper's SGD their loss stays at chance
    (one SGD rate is too large for the conv layers' summed gradients and too small for the unshared ones).
    """

    optimizer: str
    batch_size: int
    learning_rate: float


# The learning rate an optimizer gets when the caller picks it but not its rate (sgd: for a batch of 128).
LEARNING_RATES = {"sgd": 0.01, "adam": 0.001}

RECIPES: dict[str, Recipe] = {
    "paper": Recipe("sgd", 128, 0.01),
    "small": Recipe("adam", 32, 0.001),
    "tiny": Recipe("adam", 32, 0.001),
}


def training_recipe(preset: str | ModelConfig, *, optimizer: str | None = None, batch_size: int | None = None,
                    learning_rate: float | None = None) -> Recipe:
    """The preset's `Recipe` with each value that is given (not None) winning.

    A custom `ModelConfig` trains by the recipe of the preset of its name, else by the paper's.

    An optimizer given without a learning rate gets that optimizer's usual rate (`LEARNING_RATES`), not
    the preset's.

    Example: ``training_recipe("tiny", batch_size=64)`` -> ``Recipe("adam", 64, 0.001)``;
    ``training_recipe("tiny", optimizer="sgd")`` -> ``Recipe("sgd", 32, 0.01)``.
    """
    name = preset.name if isinstance(preset, ModelConfig) else get_config(preset).name
    recipe = RECIPES.get(name, RECIPES["paper"])
    optimizer = recipe.optimizer if optimizer is None else optimizer
    if learning_rate is None:  # the preset's, or the usual one of the optimizer the caller chose instead
        learning_rate = recipe.learning_rate if optimizer == recipe.optimizer else LEARNING_RATES.get(optimizer)
    return Recipe(optimizer=optimizer, batch_size=recipe.batch_size if batch_size is None else batch_size,
                  learning_rate=learning_rate)


def recipe_help() -> str:
    """The recipes in a line, for option help texts: ``paper: sgd, batch 128, lr 0.01; ...``."""
    return "; ".join(
        f"{name}: {r.optimizer}, batch {r.batch_size}, lr {r.learning_rate}" for name, r in RECIPES.items()
    )
