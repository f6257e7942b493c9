"""Component: the evaluated model as a new version in the Vertex AI Model Registry, promoted only if better."""

from kfp.dsl import Dataset, Input, Model, Output

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import RegisterSettings


@stage_component
@takes_settings(RegisterSettings)
def register_model(
    model: Input[Model],
    evaluation: Input[Dataset],
    registered: Output[Model],
    serving_image: str,
    model_name: str,
    promote_margin: float,
    project: str = "",
    location: str = "",
    labels: dict = {},  # noqa: B006 - a KFP default, never mutated
):
    """Upload the model as a new version of the registry model model_name, served by serving_image
    (`deepface serve`); its 'default' alias moves to it only if its verification accuracy beats the default
    version's by more than promote_margin (`deepface.registry.register_model`). The parameters model_name
    and promote_margin are those of `deepface.settings.RegisterSettings`.

    Args:
        model: the trained model directory.
        evaluation: the evaluation of that model (metrics.json, threshold.json).
        serving_image: the serving container image: the project image (CPU flavour), with an immutable tag.
        project: Google Cloud project of the Model Registry; the pipeline passes the run's own.
        location: Vertex AI region of the Model Registry; the pipeline passes the run's own.
        labels: labels of the new model version (the pipeline passes the image's provenance).

    Returns:
        registered: folder with serving/ (the SavedModel export that the registry version serves from) and
            registration.json (the decision record); its metadata names the version (resourceName,
            version, model) and the decision (promoted, champion_accuracy, challenger_accuracy,
            default_version, reason).
    """
    from deepface.registry import SERVING_FOLDER, register_model

    uri = registered.uri.rstrip("/")
    record = register_model(
        model.path, evaluation.path, registered.path, serving_image=serving_image, project=project,
        location=location, labels=labels,
        artifact_uri=f"{uri}/{SERVING_FOLDER}" if uri.startswith("gs://") else None,
        model_name=model_name, promote_margin=promote_margin,
    )
    registered.metadata.update({
        "resourceName": record["version_name"], "model": record["model"], "version": record["version"],
        "model_name": record["model_name"], "promoted": record["promoted"], "reason": record["reason"],
        "challenger_accuracy": record["challenger_accuracy"],
        **{key: record[key] for key in ("champion_accuracy", "default_version") if record[key] is not None},
    })
    print(f"register: {record['version_name']}: {record['reason']}", flush=True)
