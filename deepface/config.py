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
