"""The Model Registry step: an evaluated model as a new version of one Vertex AI model, promoted only if better.

`register_model(model_dir, evaluation_dir, out_dir, serving_image=..., project=..., location=...)`:

1. exports the embedding model for serving (`deepface.serving.export.export_saved_model`, with the evaluation's
   threshold) to ``out_dir/serving/``, the folder Vertex AI reads (``artifact_uri``: a ``gs://`` URI; a folder
   under Cloud Storage FUSE, ``/gcs/BUCKET/PATH`` as on Vertex AI, is ``gs://BUCKET/PATH``);
2. finds the model named ``model_name`` (``aiplatform.Model.list`` with a ``display_name`` filter) and reads
   its default version's verification accuracy (the champion's) from that version's labels;
3. uploads a new version of it (``parent_model``; the first upload makes the model) served by the project
   image: ``deepface serve`` (command ``deepface``, args ``serve``) on port 8080 with the health and predict
   routes of `deepface.serving.server`; its metrics go into its labels (`METRIC_LABELS`) and its version
   description; ``is_default_version`` (the ``default`` alias) is the champion/challenger decision;
4. writes the decision record ``out_dir/registration.json`` (`RECORD_FILE`) and returns it.

Champion/challenger: the new version (challenger) becomes ``default`` when the model has no version yet, or
when its accuracy (``metrics.json``'s ``summary.accuracy``: the primary score's 10-fold accuracy) exceeds the
default version's (champion's) by more than ``promote_margin`` (0: strictly better). Both figures are
compared as the labels hold them, in millionths (`ACCURACY_DIGITS`), so a rerun of a model compares equal to
itself. A default version without the accuracy label (uploaded by other means) is never replaced here: the
record says so, and moving the alias is left to a person (``gcloud ai models`` or the console).

Why labels: Vertex AI keeps a version's labels with the version, ``Model.list`` / ``get`` return them, and a
filter can select on them (``labels.deepface-accuracy``); a label value holds lowercase letters, digits,
``_`` and ``-`` only, so ``0.973417`` is written ``0_973417``.

Credentials: Application Default Credentials (on Vertex AI, the run's service account), or ``credentials``;
a plain ``http://`` ``api_endpoint`` (an emulator or a test server on this machine) gets anonymous
credentials and the REST transport, so no token is ever sent over an unencrypted connection.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

from deepface import files
from deepface.errors import DeepFaceError
from deepface.settings import RegisterSettings

logger = logging.getLogger(__name__)

RECORD_FILE = "registration.json"
SERVING_FOLDER = "serving"
ACCURACY_LABEL = "deepface-accuracy"
# metrics.json summary value -> label of the model version holding it.
METRIC_LABELS = {"accuracy": ACCURACY_LABEL, "auc": "deepface-auc", "eer": "deepface-eer"}
MODEL_LABEL = "deepface-model-sha256"  # the first 32 hex digits of embedding.keras's sha256
ACCURACY_DIGITS = 6  # decimals of the accuracy labels, and of the comparison
SERVING_COMMAND = ("deepface",)
SERVING_ARGS = ("serve",)
DEFAULT_ALIAS = "default"
GCS_MOUNT = "/gcs"  # Vertex AI's Cloud Storage FUSE mount: /gcs/BUCKET/PATH is gs://BUCKET/PATH
# A Google Cloud project ID (optionally domain-scoped), matched whole; pipelines.submit checks --project with it.
PROJECT_ID = re.compile(r"([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")
_LOCATION = re.compile(r"[a-z]+(-[a-z0-9]+)+")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")
_LABEL_NUMBER = re.compile(r"(\d+)(?:_(\d+))?")


def register_model(
    model_dir: str | os.PathLike,
    evaluation_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    serving_image: str,
    project: str,
    location: str,
    artifact_uri: str | None = None,
    labels: Mapping[str, str] | None = None,
    version_aliases: Sequence[str] = (),
    api_endpoint: str | None = None,
    credentials=None,
    **settings,
) -> dict:
    """Upload ``model_dir`` as a new version of the registry model ``model_name``; promote it if it verifies
    better than the default version (see the module docstring).

    Args:
        model_dir: a complete local model directory of ``deepface train``.
        evaluation_dir: the output of ``deepface evaluate`` for this model (metrics.json, threshold.json).
        out_dir: folder to write (local, ``/gcs/...`` or ``gs://``): the serving export in ``serving/`` and
            the decision record ``registration.json``.
        serving_image: the serving container image (the project image, CPU flavour), with a tag or digest.
        project, location: where the registry model lives (on Vertex AI: the pipeline run's own).
        artifact_uri: the ``gs://`` URI Vertex AI reads ``out_dir/serving`` from; None: derived from
            ``out_dir`` (``gs://`` as is, ``/gcs/BUCKET/PATH`` -> ``gs://BUCKET/PATH``).
        labels: labels of the new version (e.g. the image's provenance), Google Cloud's label rules; the
            metric labels (`METRIC_LABELS`) and `MODEL_LABEL` are added.
        version_aliases: extra aliases of the new version (``default`` is the decision's, not the caller's).
        api_endpoint: the Vertex AI API endpoint; None: the region's (``LOCATION-aiplatform.googleapis.com``).
        credentials: Google credentials; None: Application Default Credentials (anonymous for ``http://``).
        **settings: fields of `deepface.settings.RegisterSettings`: model_name (the registry display name),
            promote_margin (the accuracy gain needed to move ``default``); ``register`` is the pipeline's
            switch and changes nothing here.

    Returns:
        The decision record, as written to ``out_dir/registration.json``: ``model_name``, ``model`` (the
        registry model's resource name), ``version`` (the new version's id), ``version_name``
        (``MODEL@VERSION``), ``parent_model`` (None for a new model), ``champion`` (``{"version",
        "accuracy"}`` of the default version before the upload, or None), ``champion_accuracy``,
        ``challenger_accuracy``, ``promote_margin``, ``promoted``, ``reason``, ``default_version`` (the
        version holding ``default`` afterwards), ``artifact_uri``, ``serving_image``, ``labels``.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: a bad project, location, image, label or alias (before any work); an evaluation
            directory that is incomplete or not of this model; an ``out_dir`` Vertex AI cannot read; several
            registry models named ``model_name``; an export that fails (`export_saved_model`).

    Example::

        register_model("out/model", "out/eval", "/gcs/faces/runs/42/register", serving_image=IMAGE,
                       project="faces-prod", location="us-central1", model_name="deepface")
    """
    chosen = RegisterSettings.of(settings)
    _check_target(project, location, serving_image)
    labels = _check_labels(dict(labels or {}))
    aliases = _check_aliases(version_aliases)
    summary = _evaluation_summary(evaluation_dir)
    serving_dir = posixpath.join(str(out_dir), SERVING_FOLDER) if files.is_remote(out_dir) \
        else str(Path(files.local_path(out_dir)) / SERVING_FOLDER)
    artifact_uri = _artifact_uri(serving_dir, artifact_uri)

    from deepface.serving.export import export_saved_model

    manifest = export_saved_model(model_dir, serving_dir, threshold_json=Path(evaluation_dir) / "threshold.json")
    challenger = _units(summary["accuracy"])
    version_labels = {**labels, **{label: _label_number(summary[name]) for name, label in METRIC_LABELS.items()
                                   if summary.get(name) is not None},
                      MODEL_LABEL: manifest["model_sha256"][:32]}

    aiplatform = _init_vertex(project, location, api_endpoint, credentials)
    champion = _champion(aiplatform, chosen.model_name, project, location)
    promoted, reason = _decide(champion, challenger, _units(chosen.promote_margin))
    logger.info("register %s: challenger accuracy %s, champion %s: %s", chosen.model_name,
                _text(challenger), _champion_text(champion), reason)

    from deepface.evaluate import headline
    from deepface.serving.server import DEFAULT_HEALTH_ROUTE, DEFAULT_PORT, DEFAULT_PREDICT_ROUTE

    uploaded = aiplatform.Model.upload(
        serving_container_image_uri=serving_image,
        artifact_uri=artifact_uri,
        display_name=chosen.model_name,
        parent_model=champion["model"] if champion else None,
        is_default_version=promoted,
        version_aliases=list(aliases) or None,
        version_description=f"{headline(summary)} (deepface evaluate); {reason}",
        description="DeepFace (Taigman et al., 2014) face embeddings and verification, served by `deepface serve`.",
        serving_container_command=list(SERVING_COMMAND),
        serving_container_args=list(SERVING_ARGS),
        serving_container_health_route=DEFAULT_HEALTH_ROUTE,
        serving_container_predict_route=DEFAULT_PREDICT_ROUTE,
        serving_container_ports=[DEFAULT_PORT],
        labels=version_labels,
        project=project,
        location=location,
    )
    version = str(uploaded.version_id)
    default_version = version if DEFAULT_ALIAS in (uploaded.version_aliases or ()) else (
        champion["version"] if champion else None)
    record = {
        "model_name": chosen.model_name,
        "model": uploaded.resource_name,
        "version": version,
        "version_name": f"{uploaded.resource_name}@{version}",
        "parent_model": champion["model"] if champion else None,
        "champion": {"version": champion["version"], "accuracy": _number(champion["accuracy"])} if champion else None,
        "champion_accuracy": _number(champion["accuracy"]) if champion else None,
        "challenger_accuracy": _number(challenger),
        "promote_margin": chosen.promote_margin,
        "promoted": promoted,
        "reason": reason,
        "default_version": default_version,
        "artifact_uri": artifact_uri,
        "serving_image": serving_image,
        "labels": version_labels,
    }
    files.write_json(posixpath.join(str(out_dir), RECORD_FILE) if files.is_remote(out_dir)
                     else Path(files.local_path(out_dir)) / RECORD_FILE, record)
    logger.info("registered %s@%s (%s); default version: %s", uploaded.resource_name, version,
                "promoted to default" if promoted else "not promoted", default_version)
    return record


# ----------------------------------------------------------------------------------------------- checks


def _check_target(project: str, location: str, serving_image: str) -> None:
    if not project or "{{" in project or not PROJECT_ID.fullmatch(project):
        raise DeepFaceError(f"project={project!r}: give the Google Cloud project id of the Model Registry (on Vertex "
                            "AI the pipeline passes the run's own project)")
    if not location or "{{" in location or not _LOCATION.fullmatch(location):
        raise DeepFaceError(f"location={location!r}: give a Vertex AI region such as us-central1 (on Vertex AI the "
                            "pipeline passes the run's own region)")
    name = serving_image.partition("@")[0]
    tagged = "@" in serving_image or ":" in name.rsplit("/", 1)[-1]
    if not serving_image or not tagged or name.endswith(":latest"):
        raise DeepFaceError(f"serving_image={serving_image!r}: give the project image with an immutable tag or "
                            "digest (python -m components.image prints it)")


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str) or not _LABEL_KEY.fullmatch(key) \
                or not _LABEL_VALUE.fullmatch(value):
            raise DeepFaceError(f"labels {key}={value!r}: use lowercase letters, digits, '-' and '_' (at most 63 "
                                "characters each; the key starts with a letter)")
    taken = sorted(set(labels) & {*METRIC_LABELS.values(), MODEL_LABEL})
    if taken:
        raise DeepFaceError(f"labels {', '.join(taken)}: these are the registry step's own labels; rename yours")
    return labels


def _check_aliases(aliases: Sequence[str]) -> tuple[str, ...]:
    for alias in aliases:
        if alias == DEFAULT_ALIAS:
            raise DeepFaceError("version_aliases 'default': the champion/challenger decision moves 'default'; "
                                "leave it out")
        if not _ALIAS.fullmatch(alias):
            raise DeepFaceError(f"version_aliases {alias!r}: an alias is a lowercase letter, then letters, digits "
                                "or '-', ending in a lowercase letter or digit")
    return tuple(aliases)


def _evaluation_summary(evaluation_dir: str | os.PathLike) -> dict:
    """``metrics.json``'s summary of a complete evaluation directory."""
    path = Path(files.local_path(evaluation_dir))
    if not (path / "manifest.json").is_file() or not (path / "metrics.json").is_file():
        raise DeepFaceError(f"evaluation_dir {path}: not a complete output of `deepface evaluate` (no manifest.json "
                            "or metrics.json): evaluate the model first")
    summary = files.read_json(path / "metrics.json").get("summary") or {}
    if not isinstance(summary.get("accuracy"), (int, float)):
        raise DeepFaceError(f"{path / 'metrics.json'} has no summary accuracy: evaluate the model again with this "
                            "version of deepface")
    return summary


def _artifact_uri(serving_dir: str, given: str | None) -> str:
    """The gs:// URI Vertex AI reads the serving export from."""
    if given is not None:
        if not given.startswith("gs://"):
            raise DeepFaceError(f"artifact_uri={given!r}: Vertex AI reads models from Cloud Storage: give a gs:// URI")
        return given.rstrip("/")
    if serving_dir.startswith("gs://"):
        return serving_dir
    mount = Path(GCS_MOUNT)
    local = Path(serving_dir).absolute()
    if local.is_relative_to(mount) and len(local.relative_to(mount).parts) > 1:
        return "gs://" + local.relative_to(mount).as_posix()
    raise DeepFaceError(f"out_dir {Path(serving_dir).parent}: Vertex AI reads models from Cloud Storage: write "
                        f"under {GCS_MOUNT}/BUCKET/ or gs://BUCKET/, or give artifact_uri")


# ----------------------------------------------------------------------------------------------- the registry


def _init_vertex(project: str, location: str, api_endpoint: str | None, credentials):
    """``google.cloud.aiplatform``, initialised for this project, location and endpoint."""
    from google.cloud import aiplatform

    transport = None
    if api_endpoint and api_endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        credentials, transport = AnonymousCredentials(), "rest"
    aiplatform.init(project=project, location=location, credentials=credentials, api_endpoint=api_endpoint,
                    api_transport=transport)
    return aiplatform


def _champion(aiplatform, model_name: str, project: str, location: str) -> dict | None:
    """``{"model", "version", "accuracy" (millionths or None)}`` of the default version of the one registry
    model named ``model_name``, or None when there is none."""
    found = aiplatform.Model.list(filter=f'display_name="{model_name}"', project=project, location=location)
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(sorted(model.resource_name for model in found))
        raise DeepFaceError(f"model_name {model_name!r}: {len(found)} registry models have this name ({names}); "
                            "give model_name a name of its own, or delete the extra models")
    default = aiplatform.Model(model_name=found[0].resource_name, version=DEFAULT_ALIAS, project=project,
                               location=location)
    value = (default.labels or {}).get(ACCURACY_LABEL)
    return {"model": found[0].resource_name, "version": str(default.version_id), "accuracy": _parse_units(value)}


def _decide(champion: dict | None, challenger: int, margin: int) -> tuple[bool, str]:
    """(promote, why): the champion/challenger rule of the module docstring, accuracies in millionths."""
    if champion is None:
        return True, "the first version of this model: default"
    if champion["accuracy"] is None:
        return False, (f"default version {champion['version']} has no {ACCURACY_LABEL} label, so nothing shows "
                       "this one verifies better: default not moved (move it by hand if it should)")
    needed = champion["accuracy"] + margin
    if challenger > needed:
        return True, (f"accuracy {_text(challenger)} beats default version {champion['version']}'s "
                      f"{_text(champion['accuracy'])}" + (f" by more than {_text(margin)}" if margin else "")
                      + ": promoted to default")
    return False, (f"accuracy {_text(challenger)} does not beat default version {champion['version']}'s "
                   f"{_text(champion['accuracy'])}" + (f" by more than {_text(margin)}" if margin else "")
                   + ": default stays")


def _champion_text(champion: dict | None) -> str:
    if champion is None:
        return "none (a new model)"
    return f"version {champion['version']} accuracy {_text(champion['accuracy'])}"


# ----------------------------------------------------------------------------------------------- numbers


def _units(value: float) -> int:
    """``value`` in millionths (`ACCURACY_DIGITS`), rounded."""
    return round(Decimal(repr(float(value))) * 10 ** ACCURACY_DIGITS)


def _number(units: int | None) -> float | None:
    return None if units is None else units / 10 ** ACCURACY_DIGITS


def _text(units: int | None) -> str:
    return "unknown" if units is None else f"{units / 10 ** ACCURACY_DIGITS:.{ACCURACY_DIGITS}f}"


def _label_number(value: float) -> str:
    """A label value for a metric in [0, 1]: ``0.973417`` -> ``0_973417``."""
    return f"{_units(value) / 10 ** ACCURACY_DIGITS:.{ACCURACY_DIGITS}f}".replace(".", "_")


def _parse_units(value: str | None) -> int | None:
    """A metric label's value (``0_973417``) in millionths; None when absent or not a number."""
    match = _LABEL_NUMBER.fullmatch(value or "")
    if not match:
        return None
    return round(Decimal(f"{match.group(1)}.{match.group(2) or 0}") * 10 ** ACCURACY_DIGITS)
