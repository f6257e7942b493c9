"""Component and pipeline parameters derived from `deepface.settings`: their defaults and the descriptions
the Vertex AI run form shows.

KFP reads a component's interface from the Python function: its signature (types, defaults) and its
docstring's ``Args:``. `takes_settings` gives a function's parameters that are settings fields the
field's KFP default (None becomes "" or 0: see `deepface.settings.Settings.from_kfp`) and description,
so the component source declares such a parameter by name and type only::

    @dsl.component(base_image=PLACEHOLDER)
    @takes_settings(TrainSettings)
    def train(tfrecords: Input[Dataset], ..., epochs: int, batch_size: int):
        ...

The function body shipped in the template is unchanged (KFP copies the source from ``def`` on); the
launcher passes every parameter, defaults included, so the body never needs a Python default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from deepface.settings import Field, Settings


def takes_settings(*sources: type[Settings], renamed: Mapping[str, tuple[type[Settings], str]] | None = None,
                   defaults: Mapping[str, Any] | None = None) -> Callable:
    """A decorator (placed under ``@dsl.component`` / ``@dsl.pipeline``) giving each parameter of the
    function that names a field of one of ``sources`` (the first that has it) that field's KFP default and
    description. ``renamed`` maps a parameter to another name's field (``train_seed`` ->
    ``(TrainSettings, "seed")``); ``defaults`` overrides a default where the caller's differs on purpose.
    A parameter that is no field keeps its own default and docstring entry. Raises TypeError when a
    settings parameter has a Python default of its own (the settings are the one source)."""
    renamed, defaults = dict(renamed or {}), dict(defaults or {})

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)
        parameters, described = [], {}
        for parameter in signature.parameters.values():
            field = settings_field(parameter.name, sources, renamed)
            if field is None:
                parameters.append(parameter)
                continue
            if parameter.default is not inspect.Parameter.empty:
                raise TypeError(f"{function.__name__}({parameter.name}=...): a settings parameter takes its "
                                f"default from {field.name} of the settings, not from the source")
            default = defaults.get(parameter.name, field.kfp_default)
            parameters.append(parameter.replace(default=default))
            described[parameter.name] = field.describe(kfp=True)
        function.__signature__ = signature.replace(parameters=parameters)
        function.__doc__ = _with_args(inspect.getdoc(function) or "", described)
        return function

    return decorate


def settings_field(name: str, sources, renamed) -> Field | None:
    """The settings field a parameter stands for, or None."""
    if name in renamed:
        settings, field = renamed[name]
        return settings.fields()[field]
    for settings in sources:
        if name in settings.fields():
            return settings.fields()[name]
    return None


def _with_args(doc: str, described: Mapping[str, str]) -> str:
    """``doc`` with ``name: description`` lines added to its ``Args:`` section (created if absent)."""
    if not described:
        return doc
    lines = doc.splitlines()
    entries = [f"    {name}: {text}" for name, text in described.items()]
    if "Args:" in lines:
        at = lines.index("Args:") + 1
        while at < len(lines) and (lines[at].startswith(" ") or not lines[at].strip()):
            if not lines[at].strip() and (at + 1 == len(lines) or not lines[at + 1].startswith(" ")):
                break
            at += 1
        return "\n".join(lines[:at] + entries + lines[at:])
    at = lines.index("Returns:") if "Returns:" in lines else len(lines)
    return "\n".join(lines[:at] + ["Args:", *entries, ""] + lines[at:])
