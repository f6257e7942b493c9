"""The settings of every stage, in one place: a frozen dataclass per stage whose fields carry the default,
the allowed range or choices and a one-line description.

Everything else derives from these classes:

- the library: each stage function takes its settings as keywords and checks them by building the
  dataclass (``TrainSettings(epochs=0)`` raises `SettingError` naming ``epochs``);
- the command line: `click_options` turns the fields into ``--options`` (types, ranges, choices, help);
- the KFP components and the pipeline: ``components.parameters`` gives their parameters these defaults
  and descriptions (the Vertex AI run form shows them), with ``""``/``0`` standing for a default of None,
  which KFP parameters cannot hold (`Settings.from_kfp`).

A field whose default is None means "decided at run time" (the preset's recipe, the number of CPUs, the
model's metadata); its ``unset`` says what, for help texts.

Example::

    >>> TrainSettings(preset="tiny", epochs=3).epochs
    3
    >>> TrainSettings(epochs=0)
    Traceback (most recent call last):
    deepface.settings.SettingError: epochs=0: must be an integer >= 1

Importing this module is cheap (no TensorFlow, no numpy): ``--help`` of every command reads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import typing
from collections.abc import Callable, Mapping
from typing import Any

from deepface.config import OPTIMIZERS, PRECISIONS, PRESETS, STRATEGIES, recipe_help
from deepface.contracts import LFW_FOLDS
from deepface.errors import DeepFaceError

NO_FACE_CHOICES = ("skip", "center-crop")
SPLIT_NAME = r"[A-Za-z0-9_]+"  # names files (shards, CSVs): letters, digits and '_'
MIN_FACE = 20  # the face detector's smallest face, in pixels of the image it sees
MIN_DRAWN_SIDE = 32  # synthetic images: smaller faces cannot be drawn


class SettingError(DeepFaceError):
    """A setting out of its range, of the wrong type or unknown; ``name`` is the library's parameter name
    (the command line reports it as its ``--flag``)."""

    def __init__(self, name: str, value: Any, problem: str):
        super().__init__(f"{name}={value!r}: {problem}")
        self.name, self.value, self.problem = name, value, problem


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a setting's field allows, besides its type: choices, bounds, a pattern; ``unset`` is what a
    default of None stands for; ``kfp`` False keeps it off components and pipelines (machine-local)."""

    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # exclusive lower bound
    below: float | None = None  # exclusive upper bound
    pattern: str | None = None
    unset: str | None = None
    kfp: bool = True


def setting(default: Any, help: str, **rule) -> Any:
    """A settings field: ``epochs: int = setting(15, "Training epochs.", minimum=1)``; ``rule`` takes the
    keywords of `Rule`."""
    return dataclasses.field(default=default, metadata={"rule": Rule(help, **rule)})


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting as the derived interfaces see it."""

    name: str
    type: type  # int, float, str or bool
    optional: bool  # None allowed
    default: Any
    rule: Rule

    @property
    def help(self) -> str:
        return self.rule.help

    def allowed(self) -> str:
        """The rule in words: ``an integer >= 1``, ``one of sgd, adam``."""
        if self.rule.choices:
            return "one of " + ", ".join(map(str, self.rule.choices))
        kind = {int: "an integer", float: "a number", str: "text", bool: "true or false"}[self.type]
        bounds = [f">= {self.rule.minimum:g}" if self.rule.minimum is not None else "",
                  f"> {self.rule.above:g}" if self.rule.above is not None else "",
                  f"< {self.rule.below:g}" if self.rule.below is not None else "",
                  f"<= {self.rule.maximum:g}" if self.rule.maximum is not None else ""]
        if self.rule.pattern:
            bounds.append("of letters, digits and '_'" if self.rule.pattern == SPLIT_NAME
                          else f"matching {self.rule.pattern}")
        return " ".join([kind, " and ".join(b for b in bounds if b)]).strip()

    def check(self, value: Any) -> Any:
        """``value`` if allowed (an int is a valid float), else `SettingError`."""
        if value is None and self.optional:
            return value
        ok = isinstance(value, self.type) and not (isinstance(value, bool) and self.type is not bool)
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        rule = self.rule
        ok = ok and (not rule.choices or value in rule.choices)
        ok = ok and (rule.minimum is None or value >= rule.minimum) and (rule.maximum is None or value <= rule.maximum)
        ok = ok and (rule.above is None or value > rule.above) and (rule.below is None or value < rule.below)
        ok = ok and (rule.pattern is None or re.fullmatch(rule.pattern, value) is not None)
        if not ok:
            unset = f", or None for {self.rule.unset}" if self.optional and self.rule.unset else ""
            raise SettingError(self.name, value, f"must be {self.allowed()}{unset}")
        return value

    @property
    def kfp_default(self) -> Any:
        """The default as a KFP parameter: None becomes "" (text) or 0 (numbers): see `Settings.from_kfp`."""
        if self.default is not None:
            return self.default
        return {str: "", int: 0, float: 0.0, bool: False}[self.type]

    def from_kfp(self, value: Any) -> Any:
        """A KFP parameter's value as a setting: "" or 0 is None where the default is None (`kfp_default`)."""
        return None if self.default is None and value in ("", 0) and value is not False else value

    def describe(self, *, kfp: bool = False) -> str:
        """A one-paragraph description: the help, what is allowed and what an unset value means."""
        text = f"{self.help} Allowed: {self.allowed()}."
        if self.default is None and self.rule.unset:
            text += f" {'Empty or 0' if kfp else 'Unset'}: {self.rule.unset}."
        return text


class Settings:
    """Base of the per-stage settings dataclasses: checks every field when built."""

    def __post_init__(self):
        for field in self.fields().values():
            field.check(getattr(self, field.name))
        self.check()

    def check(self) -> None:
        """Rules between fields (override); raise `SettingError` naming one of them."""

    @classmethod
    def fields(cls) -> dict[str, Field]:
        return _fields(cls)

    @classmethod
    def of(cls, options: Mapping[str, Any]):
        """The settings from keyword options, with a clear error for an unknown name."""
        known = cls.fields()
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; the settings are: {', '.join(known)}"
                raise SettingError(name, options[name], f"unknown setting of {cls.__name__}{hint}")
        return cls(**options)

    @classmethod
    def from_kfp(cls, **values):
        """The settings from component parameters, where "" and 0 stand for None (fields defaulting to None)."""
        fields = cls.fields()
        return cls.of({name: fields[name].from_kfp(value) if name in fields else value
                       for name, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@functools.cache
def _fields(cls) -> dict[str, Field]:
    hints = typing.get_type_hints(cls)
    result = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        result[field.name] = Field(field.name, args[0] if optional else hint, optional, field.default,
                                   field.metadata["rule"])
    return result


# ----------------------------------------------------------------------------------------------- stages

@dataclasses.dataclass(frozen=True)
class SynthSettings(Settings):
    """`deepface.synth.make_synthetic_dataset`: the synthetic VGGFace2 and LFW releases."""

    train_identities: int = setting(40, "Identities of the VGGFace2 train archive.", minimum=1)
    test_identities: int = setting(
        20, "Identities of the VGGFace2 test archive, disjoint from train (20 fill the 10 folds of generated pairs).",
        minimum=1)
    lfw_identities: int = setting(40, "People of the LFW archive (mismatched pairs need two).", minimum=2)
    images_per_identity: int = setting(
        24, "Images per VGGFace2 identity, and the most of an LFW person (matched pairs need two).", minimum=2)
    image_size: int = setting(112, "Nominal side of the VGGFace2 images in pixels (sizes vary).",
                              minimum=MIN_DRAWN_SIDE, maximum=1024)
    lfw_image_size: int = setting(250, "Side of the square LFW images in pixels.", minimum=MIN_DRAWN_SIDE,
                                  maximum=1024)
    seed: int = setting(0, "Random seed: the same seed and sizes give the same bytes.", minimum=0)
    workers: int | None = setting(None, "Processes drawing faces (the output does not depend on it).", minimum=1,
                                  unset="one per CPU this process may use (the container's CPU limit)", kfp=False)

    def check(self):
        if self.train_identities + self.test_identities > 200_000:  # six-digit VGGFace2 ids, drawn sparsely
            raise SettingError("train_identities", self.train_identities,
                               "train_identities + test_identities must be <= 200000 (six-digit VGGFace2 ids)")


@dataclasses.dataclass(frozen=True)
class FetchSettings(Settings):
    """`deepface.fetch.fetch`: copying the data and verifying it."""

    md5: str | None = setting(None, "Expected MD5 of a single file source (hex).", pattern=r"[0-9a-fA-F]{32}",
                              unset="the source's MD5SUMS, or the storage's own checksum", kfp=False)
    auth_header_env: str | None = setting(
        None, "Name of an environment variable holding an HTTP header for http(s) sources, 'Header-Name: value' "
        "or a bare value for 'Authorization: value'; the value itself is never logged or recorded.",
        pattern=r"[A-Za-z_][A-Za-z0-9_]*", unset="no header")
    auth_secret: str | None = setting(
        None, "Resource name of a Google Secret Manager secret version holding the HTTP header for http(s) "
        "sources (as auth_header_env's variable does), projects/P/secrets/S/versions/V or .../versions/latest; "
        "the task reads it with the run's service account (which needs roles/secretmanager.secretAccessor). "
        "Never the value, which is never logged or recorded; not with auth_header_env.",
        pattern=r"projects/[A-Za-z0-9_.:-]+/secrets/[A-Za-z0-9_-]+/versions/[A-Za-z0-9_-]+", unset="no secret")
    retries: int = setting(2, "Resume an interrupted transfer this many times before giving up.", minimum=0)
    copy_gs: bool = setting(
        False, "Copy a gs:// folder even where it can be read in place. By default a gs:// folder that the Cloud "
        "Storage FUSE mount /gcs shows (as on Vertex AI) is verified from the MD5s GCS stores, without downloading "
        "it, and read where it is (lineage starts at the source); only the manifest is written.")

    def check(self):
        if self.auth_header_env and self.auth_secret:
            raise SettingError("auth_secret", self.auth_secret,
                               "give either auth_header_env or auth_secret, not both (both name the same header)")


@dataclasses.dataclass(frozen=True)
class LandmarksSettings(Settings):
    """`deepface.detect.detect_landmarks`: the face detector's pass over a set of images."""

    min_face: int = setting(MIN_FACE, "Smallest face searched for, in pixels of the image the detector sees.",
                            minimum=1)
    split: str = setting("images", "Names the CSV files (loose_landmark_<split>.csv).", pattern=SPLIT_NAME)
    workers: int | None = setting(None, "Processes running the detector, this one included.", minimum=1,
                                  unset="one per CPU this process may use (the container's CPU limit)", kfp=False)


@dataclasses.dataclass(frozen=True)
class TfrecordsSettings(Settings):
    """`deepface.tfrecords.build_tfrecords`: the training records."""

    split: str = setting("train", "Split name, the prefix of the shard files.", pattern=SPLIT_NAME)
    image_size: int = setting(152, "Side of the stored square faces in pixels (the model preset's input).",
                              minimum=1, maximum=4096)
    keep_original: bool = setting(False, "Store each file's original bytes (still validated) instead of a resized "
                                  "JPEG; only with align off.")
    align: bool = setting(True, "Store faces aligned from 5 landmarks (eyes, nose, mouth corners), as the paper "
                          "does; off: whole frames, fitted.")
    no_face: str = setting("skip", "When the detector finds no face: skip the image (counted), or store its "
                           "centre crop.", choices=NO_FACE_CHOICES)
    max_bad_fraction: float = setting(0.01, "Fail when a larger share of the images cannot be stored.",
                                      minimum=0, maximum=1)
    jpeg_quality: int = setting(90, "Quality of the re-encoded JPEGs.", minimum=1, maximum=100)
    shard_mb: float = setting(150.0, "Target shard size in MiB.", above=0)
    workers: int | None = setting(None, "Processes encoding images, this one included.", minimum=1,
                                  unset="one per CPU this process may use (the container's CPU limit)", kfp=False)

    def check(self):
        if self.keep_original and self.align:
            raise SettingError("keep_original", True, "stores the files as they are, so it needs align off")


@dataclasses.dataclass(frozen=True)
class TrainSettings(Settings):
    """`deepface.train.train`: the model, its training recipe and the run's hardware."""

    preset: str = setting("paper", "Model preset; its input size must match the records. It sets the defaults of "
                          f"optimizer, batch size and learning rate ({recipe_help()}).", choices=tuple(sorted(PRESETS)))
    epochs: int = setting(15, "Training epochs (the paper: about 15).", minimum=1)
    batch_size: int | None = setting(None, "Global batch size, over all replicas.", minimum=1, unset="the preset's")
    learning_rate: float | None = setting(
        None, "Initial learning rate; sgd: for a batch of 128, scaled linearly with the batch; adam: as given.",
        above=0, unset="the preset's, or with another optimizer its usual rate (sgd 0.01, adam 0.001)")
    optimizer: str | None = setting(None, "sgd (the paper's, momentum below) or adam.", choices=OPTIMIZERS,
                                    unset="the preset's")
    min_learning_rate: float = setting(1e-4, "Floor of the plateau reductions, for a batch of 128.", minimum=0)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0, below=1)
    lr_factor: float = setting(0.1, "Learning-rate factor on a plateau of the monitored loss.", above=0, below=1)
    lr_patience: int = setting(1, "Epochs without improvement before the learning rate drops.", minimum=0)
    weight_decay: float = setting(0.0, "Decoupled weight decay (0: none).", minimum=0)
    label_smoothing: float = setting(0.0, "Label smoothing (0: none).", minimum=0, below=1)
    validation_fraction: float = setting(0.0, "Share of the shards held out to monitor validation loss (0: none).",
                                         minimum=0, below=1)
    steps_per_epoch: int | None = setting(None, "Steps per epoch.", minimum=1, unset="each training record once")
    augment: bool = setting(False, "Random flips and shifts of the training images.")
    seed: int = setting(0, "Seeds the weights, dropout, data order and augmentation.", minimum=0)
    strategy: str = setting("auto", "Distribution strategy; auto: from the hardware.", choices=STRATEGIES)
    precision: str = setting("auto", "Compute precision; auto: bfloat16 on TPU, else float32.", choices=PRECISIONS)
    jit_compile: bool = setting(False, "Compile the training step with XLA.")
    steps_per_execution: int = setting(1, "Steps per compiled call (TPU throughput).", minimum=1)
    shuffle_buffer: int = setting(10_000, "Records in the shuffle buffer.", minimum=1)
    checkpoint_steps: int = setting(500, "Checkpoint every N steps (0: each epoch only).", minimum=0)
    keep_checkpoints: bool = setting(False, "Keep the checkpoints once the model directory is complete.", kfp=False)
    feature_max_batches: int | None = setting(None, "Batches read to compute the F7 feature maxima.", minimum=1,
                                              unset="all training data")
    overwrite: bool = setting(False, "Train again from scratch even if the output holds a complete model.",
                              kfp=False)


@dataclasses.dataclass(frozen=True)
class EvaluateSettings(Settings):
    """`deepface.evaluate.evaluate`: face verification with the LFW protocol."""

    batch_size: int = setting(64, "Images per forward pass.", minimum=1)
    flip: bool = setting(False, "Average each embedding with that of the mirrored image.")
    baseline: bool = setting(True, "Also score an untrained model of the same preset, to show what training bought.")
    seed: int = setting(0, "Seed of the untrained baseline.", minimum=0)
    allow_missing: bool = setting(False, "Skip and count pairs whose image is missing or undecodable instead of "
                                  "failing.")
    folds: int = setting(LFW_FOLDS, "Folds of generated pairs (pairs 'generate').", minimum=2)
    pairs_per_fold: int = setting(300, "Matched (and as many mismatched) pairs per generated fold.", minimum=1)
    pairs_seed: int = setting(0, "Seed of generated pairs.", minimum=0)
    align: bool | None = setting(None, "Align faces from 5 landmarks.", unset="as the model's training data")
    no_face: str = setting("skip", "When no face is found: the image is unusable (skip), or use its centre crop.",
                           choices=NO_FACE_CHOICES)
    max_pairs: int = setting(100_000, "Refuse more pairs than this (a pairs file's header or generated folds); "
                             "memory grows by about 0.2 KiB per pair (LFW: 6,000 pairs).", minimum=2,
                             maximum=10_000_000)


@dataclasses.dataclass(frozen=True)
class PipelineSettings(Settings):
    """The pipeline's own run parameters: the data folder and its files, and the size of the embedded demo.
    The pipeline's other parameters are stage settings (`TrainSettings.epochs`, ...); file names here are
    also the defaults of the components that read them."""

    data_uri: str = setting(
        "", "Folder (gs://bucket/path/, https://host/path/ with an MD5SUMS file, or a local path) holding "
        "vggface2_train.tar.gz, train_list.txt, lfw.tgz and pairs.txt under their release names; empty: the "
        "embedded synthetic dataset.")
    preset: str = setting("tiny", "Model size: tiny (80 px), small (96 px) or paper (152 px, the published "
                          "network); tiny keeps the default run, the embedded demo, fast.",
                          choices=tuple(sorted(PRESETS)))
    training_images: str = setting("vggface2_train.tar.gz", "Archive of the data folder holding the training "
                                   "images, read as a stream.")
    landmarks: str = setting(
        "bb_landmark.tar.gz", "Landmarks of the training images in the data folder: VGGFace2's bb_landmark.tar.gz "
        "or a loose_landmark_*.csv; if absent, a face detector finds them (slow on millions of images).")
    verification_images: str = setting(
        "lfw.tgz", "Archive of the data folder whose faces are paired for evaluation: lfw.tgz, or "
        "vggface2_test.tar.gz (identities never seen in training).")
    verification_pairs: str = setting(
        "pairs.txt", "Pairs file of the data folder (LFW pairs.txt format), or 'generate' to draw 10 folds of "
        "pairs from the identities of the verification images.")
    verification_landmarks: str = setting(
        "lfw_landmarks.csv", "Landmarks of the verification images in the data folder: a CSV written by "
        "`deepface landmarks` for lfw.tgz, or bb_landmark.tar.gz for vggface2_test.tar.gz; if absent, a face "
        "detector finds them.")
    synthetic_identities: int = setting(24, "Identities of each synthetic set (used only when data_uri is empty).",
                                        minimum=2)
    synthetic_images_per_identity: int = setting(
        24, "Images per synthetic identity (used only when data_uri is empty).", minimum=2)


# ----------------------------------------------------------------------------------------------- command line

def click_options(settings: type[Settings], *, exclude: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one click option per field of ``settings`` (``--batch-size``; booleans as
    ``--flip/--no-flip``), with the field's type, range or choices, default and help; a `SettingError`
    raised by the command is reported as a bad value of its option (exit code 2)."""
    import click  # only where a command line is built

    fields = [f for name, f in settings.fields().items() if name not in exclude]

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def checked(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except SettingError as error:
                if error.name not in settings.fields() or error.name in exclude:
                    raise
                raise click.BadParameter(error.problem, param_hint=f"'{_flag(error.name)}'") from error

        for field in reversed(fields):
            checked = click.option(*_declarations(field), **_option_keywords(field))(checked)
        return checked

    return decorate


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _declarations(field: Field) -> tuple[str, ...]:
    flag = _flag(field.name)
    return (f"{flag}/--no-{flag[2:]}", field.name) if field.type is bool else (flag, field.name)


def _option_keywords(field: Field) -> dict:
    import click

    rule = field.rule
    if rule.choices:
        kind = click.Choice(rule.choices)
    elif field.type in (int, float) and (rule.minimum, rule.maximum, rule.above, rule.below) != (None,) * 4:
        ranged = click.IntRange if field.type is int else click.FloatRange
        low = rule.minimum if rule.minimum is not None else rule.above
        high = rule.maximum if rule.maximum is not None else rule.below
        kind = ranged(min=low, max=high, min_open=rule.above is not None, max_open=rule.below is not None)
    else:
        kind = field.type
    unset = f"  [default: {rule.unset}]" if field.default is None and rule.unset else ""
    return {"type": kind, "default": field.default, "show_default": field.default is not None,
            "help": rule.help + unset}


# ----------------------------------------------------------------------------------------------- serving
# (at the end of the file: `deepface serve` and `deepface embed`, which have no KFP component)

VERTEX_PAYLOAD_BYTES = 1_500_000  # Vertex AI online prediction's request limit ("1.5 MB")


@dataclasses.dataclass(frozen=True)
class ServeSettings(Settings):
    """`deepface.serving.server.serve`: the verification server under Vertex AI's custom-container contract."""

    host: str = setting("0.0.0.0", "Address to listen on (0.0.0.0: every interface, as a container needs).",
                        kfp=False)
    port: int | None = setting(None, "Port to listen on (0: a free port, logged).", minimum=0, maximum=65535,
                               unset="$AIP_HTTP_PORT, else 8080", kfp=False)
    max_batch_size: int = setting(32, "Most images in one forward pass: concurrent requests share a pass up to "
                                  "this many images.", minimum=1, kfp=False)
    max_wait_ms: float = setting(20.0, "How long a pass waits for requests still cutting their faces (ms); "
                                 "a lone request never waits; 0: run at once.",
                                 minimum=0, maximum=10_000, kfp=False)
    max_instances: int = setting(64, "Most instances in one request; more is refused (400).", minimum=1, kfp=False)
    max_image_bytes: int = setting(1_000_000, "Largest image file in an instance (decoded from base64); larger "
                                   "is refused (413).", minimum=1, kfp=False)
    max_request_bytes: int = setting(VERTEX_PAYLOAD_BYTES, "Largest request body; larger is refused (413). "
                                     "Vertex AI itself refuses more than 1.5 MB.", minimum=1, kfp=False)
    align: bool | None = setting(None, "Find and align faces.", unset="as the model's training data", kfp=False)
    no_face: str = setting("skip", "When an image shows no face: refuse the request (skip: 422), or use the "
                           "image's centre crop.", choices=NO_FACE_CHOICES, kfp=False)


@dataclasses.dataclass(frozen=True)
class EmbedSettings(Settings):
    """`deepface.serving.embed.embed_folder`: the embeddings of every face image of a folder or archive."""

    batch_size: int = setting(64, "Images per forward pass.", minimum=1)
    shard_size: int = setting(4096, "Images per output shard (memory holds one shard's embeddings; a killed run "
                              "resumes from the last complete shard).", minimum=1)
    flip: bool = setting(False, "Average each embedding with that of the mirrored image (as an evaluation "
                         "with flip did).")
    align: bool | None = setting(None, "Find and align faces.", unset="as the model's training data")
    no_face: str = setting("skip", "When no face is found: leave the image out (listed in the manifest), or "
                           "embed its centre crop.", choices=NO_FACE_CHOICES)


# ----------------------------------------------------------------------------------------------- registry

MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"  # a Model Registry display name this pipeline uses


@dataclasses.dataclass(frozen=True)
class RegisterSettings(Settings):
    """`deepface.registry.register_model` and the pipeline's register step: a new version in the Vertex AI
    Model Registry, promoted (the ``default`` alias) only when it verifies better than the default version."""

    register: bool = setting(True, "Upload the evaluated model to the Vertex AI Model Registry as a new version of "
                             "model_name, served by the project image; its 'default' alias moves to it only if its "
                             "verification accuracy beats the default version's. Local runs skip this step.")
    model_name: str = setting("deepface", "Display name of the model in the Vertex AI Model Registry; each "
                              "registered run adds a version of it.", pattern=MODEL_NAME_PATTERN)
    promote_margin: float = setting(0.0, "How much the new version's verification accuracy must exceed the "
                                    "default version's for 'default' to move to it (0: any gain).",
                                    minimum=0.0, below=1.0)
