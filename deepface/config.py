"""Configuration that needs no TensorFlow: the model presets and the ranges of the training options.

Kept apart from ``deepface.model`` and ``deepface.train`` so that light commands (pipeline submission,
the TFRecords component) can check values and read a preset's image size without importing TensorFlow.
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
DEFAULT_EPOCHS = 15  # the paper: about 15


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
    """The preset's `Recipe` with each value that is given (not None) winning. (KFP parameters cannot be
    None: the pipeline and its components pass "" and 0 for "the preset's", see `unset_to_none`.)

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


def unset_to_none(value):
    """A pipeline parameter's "the preset's" ("" or 0) as None, any other value as it is."""
    return None if value in ("", 0) and not isinstance(value, bool) else value


def recipe_help() -> str:
    """The recipes in a line, for option help texts: ``paper: sgd, batch 128, lr 0.01; ...``."""
    return "; ".join(
        f"{name}: {r.optimizer}, batch {r.batch_size}, lr {r.learning_rate}" for name, r in RECIPES.items()
    )


def check_options(**options) -> None:
    """Range checks of `train`'s numeric options (any subset, by keyword), named as on the command line
    in the error; e.g. ``check_options(epochs=0)`` raises. Pipelines can check their parameters with it
    before submitting."""
    rules = {
        "epochs": lambda v: isinstance(v, int) and v >= 1,
        "batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "learning_rate": lambda v: v > 0,
        "min_learning_rate": lambda v: v >= 0,
        "momentum": lambda v: 0 <= v < 1,
        "optimizer": lambda v: v in OPTIMIZERS,
        "lr_factor": lambda v: 0 < v < 1,
        "lr_patience": lambda v: isinstance(v, int) and v >= 0,
        "weight_decay": lambda v: v >= 0,
        "label_smoothing": lambda v: 0 <= v < 1,
        "validation_fraction": lambda v: 0 <= v < 1,
        "checkpoint_steps": lambda v: isinstance(v, int) and v >= 0,
        "steps_per_execution": lambda v: isinstance(v, int) and v >= 1,
        "steps_per_epoch": lambda v: v is None or (isinstance(v, int) and v >= 1),
        "feature_max_batches": lambda v: v is None or (isinstance(v, int) and v >= 1),
        "shuffle_buffer": lambda v: isinstance(v, int) and v >= 1,
    }
    for name, value in options.items():
        if not rules[name](value):
            raise DeepFaceError(f"--{name.replace('_', '-')} {value!r} is out of range.")
