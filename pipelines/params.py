"""Pipeline parameters: check names and types against a compiled pipeline spec before anything runs.

The spec is the compiled template as a dict (``yaml.safe_load`` of the YAML, or the pipeline's
``pipeline_spec`` as JSON); its ``root.inputDefinitions.parameters`` give each parameter's type.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from deepface.errors import DeepFaceError
from deepface.settings import (
    EvaluateSettings,
    FetchSettings,
    PipelineSettings,
    RegisterSettings,
    SettingError,
    SynthSettings,
    TfrecordsSettings,
    TrainSettings,
)

_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
MAX_LABELS = 64  # labels per Vertex AI resource
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
# KFP parameter type -> what a value must be (for messages).
_TYPE_NAMES = {
    "STRING": "a string",
    "NUMBER_INTEGER": "an integer",
    "NUMBER_DOUBLE": "a number",
    "BOOLEAN": "true or false",
    "LIST": "a JSON list",
    "STRUCT": "a JSON object",
}


def parameter_specs(spec: Mapping[str, Any]) -> dict[str, dict]:
    """``{name: {"parameterType": ..., "defaultValue": ..., "description": ...}}`` of the pipeline."""
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))


def _unknown(name: str, known: Iterable[str]) -> DeepFaceError:
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return DeepFaceError(f"unknown pipeline parameter {name!r}{hint}; the parameters are: {', '.join(known)}")


def _wrong_type(name: str, kind: str, value: Any) -> DeepFaceError:
    return DeepFaceError(f"pipeline parameter {name}={value!r}: expected {_TYPE_NAMES.get(kind, kind)}")


def convert_text(name: str, kind: str, text: str) -> Any:
    """The value of a ``NAME=TEXT`` command-line override, converted to the parameter's type."""
    try:
        if kind == "STRING":
            return text
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            lowered = text.strip().lower()
            if lowered in _TRUE | _FALSE:
                return lowered in _TRUE
            raise ValueError(text)
        if kind in ("LIST", "STRUCT"):
            value = json.loads(text)
            return check_value(name, kind, value)
    except ValueError:
        raise _wrong_type(name, kind, text) from None
    raise DeepFaceError(f"pipeline parameter {name} has a type this tool does not know: {kind}")


def check_value(name: str, kind: str, value: Any) -> Any:
    """``value`` if it has the parameter's type (ints are accepted for numbers, never bools)."""
    ok = {
        "STRING": isinstance(value, str),
        "NUMBER_INTEGER": isinstance(value, int) and not isinstance(value, bool),
        "NUMBER_DOUBLE": isinstance(value, (int, float)) and not isinstance(value, bool),
        "BOOLEAN": isinstance(value, bool),
        "LIST": isinstance(value, list),
        "STRUCT": isinstance(value, dict),
    }.get(kind)
    if not ok:
        raise _wrong_type(name, kind, value)
    return float(value) if kind == "NUMBER_DOUBLE" else value


def check_parameters(spec: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the pipeline's parameters: known names, right types."""
    specs = parameter_specs(spec)
    checked = {}
    for name, value in values.items():
        if name not in specs:
            raise _unknown(name, specs)
        checked[name] = check_value(name, specs[name]["parameterType"], value)
    return check_ranges(checked)


# Where each pipeline parameter's default, range and description come from: the first of these settings
# classes with a field of its name, or the field named in PIPELINE_RENAMED (`components.parameters`).
PIPELINE_SETTINGS = (PipelineSettings, TrainSettings, TfrecordsSettings, EvaluateSettings, FetchSettings,
                     RegisterSettings)
PIPELINE_RENAMED = {"data_seed": (SynthSettings, "seed"), "train_seed": (TrainSettings, "seed")}


def check_ranges(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` if each is allowed by its settings field (a known preset, epochs >= 1, ...: the rules the
    stages apply themselves), so that a bad value fails before submission rather than in a task minutes
    later; "" and 0 stand for None where the field's default is None (the preset's recipe, ...)."""
    from components.parameters import settings_field

    for name, value in values.items():
        field = settings_field(name, PIPELINE_SETTINGS, PIPELINE_RENAMED)
        if field is None:
            continue
        try:
            field.check(field.from_kfp(value))
        except SettingError as error:
            raise DeepFaceError(f"pipeline parameter {name}={value!r}: {error.problem}") from None
    return dict(values)


def parse_overrides(spec: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """``["epochs=5", "preset=small"]`` -> ``{"epochs": 5, "preset": "small"}``, checked and typed."""
    specs = parameter_specs(spec)
    values: dict[str, Any] = {}
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise DeepFaceError(f"--param {item!r}: write NAME=VALUE, e.g. --param epochs=5")
        if name not in specs:
            raise _unknown(name, specs)
        if name in values:
            raise DeepFaceError(f"--param {name} is given twice")
        values[name] = convert_text(name, specs[name]["parameterType"], text)
    return check_ranges(values)


def check_labels(labels: Mapping[str, str], option: str = "--label") -> dict[str, str]:
    """``labels`` if every key and value follows Google Cloud's label rules (lowercase letters, digits,
    '-' and '_', at most 63 characters each, the key starting with a letter; at most 64 labels)."""
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or not _LABEL_KEY.fullmatch(key) \
                or not _LABEL_VALUE.fullmatch(value):
            raise DeepFaceError(
                f"{option} {key}={value!r}: write KEY=VALUE with lowercase letters, digits, '-' and '_' (at most 63 "
                "characters each; the key starts with a letter), e.g. --label team=faces"
            )
    if len(labels) > MAX_LABELS:
        raise DeepFaceError(f"{option}: {len(labels)} labels, Vertex AI accepts at most {MAX_LABELS}")
    return dict(labels)


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``["team=faces", "env=dev"]`` -> Vertex AI run labels, checked against Google Cloud's label rules."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise DeepFaceError(
                f"--label {item!r}: write KEY=VALUE with lowercase letters, digits, '-' and '_' (at most 63 "
                "characters each; the key starts with a letter), e.g. --label team=faces"
            )
        labels[key] = value
    return check_labels(labels)


def label_value(text: str) -> str:
    """``text`` as a label value: lowercase, each character a label may not hold as '_', at most 63."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def provenance_labels(image: str, checkout_tag: str | None = None) -> dict[str, str]:
    """Default labels saying which code a run or job runs: ``deepface-image-tag`` (the image's tag, or its
    digest) and ``deepface-git-revision`` (the commit, with ``-dirty`` for uncommitted changes, of the
    image's ``VERSION-gSHA[-dirty-HASH]`` tag, else of ``checkout_tag``, a tag of that form such as
    `components.image.image_tag()`; no such label when neither has one). Values are made label-safe by
    `label_value` ('.' and ':' become '_')."""
    name, _, digest = image.partition("@")
    tag = digest or name.rsplit("/", 1)[-1].partition(":")[2]
    labels = {"deepface-image-tag": label_value(tag)} if tag else {}
    commit = _commit_of(tag) or _commit_of(checkout_tag or "")
    if commit:
        labels["deepface-git-revision"] = label_value(commit)
    return labels


def _commit_of(tag: str) -> str | None:
    """``SHA`` or ``SHA-dirty`` from a ``VERSION-gSHA[-dirty-HASH]`` tag, else None."""
    match = re.search(r"-g([0-9a-f]{7,40})(-dirty)?(?:-|$)", tag)
    return match.group(1) + (match.group(2) or "") if match else None
