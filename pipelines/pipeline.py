"""The DeepFace pipeline: synth -> fetch -> labels -> tfrecords -> train -> evaluate [-> register].

Runtime parameters (the Vertex AI console's run form) are the arguments of the pipeline function; their
defaults are the embedded demo: synthetic data, the ``tiny`` preset, a few epochs, so that a run with no
arguments finishes anywhere. For VGGFace2 + LFW set ``data_uri`` to the folder holding the release files
and e.g. ``preset=paper`` (which brings the paper's recipe: SGD, batch 128, learning rate 0.01).

Hardware is fixed when compiling (`CompileOptions`): KFP needs constant resource requests, accelerator
types and custom-job settings in the compiled template. Training runs either as an ordinary pipeline
task (CPU, or GPUs through ``set_accelerator_type``), or as a Vertex AI custom training job
(``create_custom_training_job_from_component``) for TPUs and multi-worker clusters; the latter runs only
on Vertex AI, not under kfp.local.

Caching is on for every task but one: a task reruns only when its parameters, its input artifacts, its
component code or the image change, so train and evaluate rerun exactly when their inputs (or their own
parameters) change. A cache key does not see the bytes behind ``data_uri``, so the fingerprint step
(`components.fingerprint`, never cached) fingerprints the data folder from its listing and checksums and
hands the result to fetch as a parameter: fetch and everything after it rerun when the data changed and
stay cached when it did not.

The image: the components name a placeholder (`components.image.PLACEHOLDER`); `make_pipeline` computes
the project image's reference (`components.image.image_reference`) and sets it on every task, so that
importing the components runs no git and every template and local run names the real, immutable image.
Training gets the flavour its accelerator needs (`components.image.flavour_for`: the ``-gpu`` image for
``NVIDIA_*``, ``-tpu`` for ``TPU_*``); every other task runs the CPU image.

The Model Registry (`REGISTER_STAGE`): after evaluate, when the ``register`` parameter is true (the default), the
model becomes a new version of the registry model ``model_name`` in the run's own project and region (Vertex
AI's run placeholders `RUN_PROJECT` and `RUN_LOCATION`, resolved when the task starts), served by the project
image (CPU flavour, ``deepface serve``); its ``default`` alias moves to it only if it verifies better than the
default version (`deepface.registry`). The task sits in a ``dsl.If(register == True)`` group, so it is no
pipeline output; local runs set ``register`` false (`pipelines.local`), as the registry is reached from
Vertex AI runs only.

Each component has the name of the ``deepface`` function it calls (``components.train.train`` calls
``deepface.train.train``); its task keeps the stage's display name (`STAGES`).
"""

import copy
import dataclasses
import re
from typing import NamedTuple

from kfp import compiler, dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Metrics, Model

import components.evaluate
import components.fetch
import components.fingerprint
import components.labels
import components.register
import components.synth
import components.tfrecords
import components.train
from components.image import flavour_for, image_reference
from components.parameters import takes_settings
from deepface.errors import DeepFaceError
from deepface.settings import RegisterSettings
from pipelines.params import PIPELINE_RENAMED, PIPELINE_SETTINGS, provenance_labels

PIPELINE_NAME = "deepface-pipeline"
TRAINING_BACKENDS = ("pipeline", "custom-job")
# Display names of the tasks. fingerprint and synth take no other task's output; fetch takes both;
# from there the DAG is a chain, in this order.
STAGES = ("fingerprint", "synth", "fetch", "labels", "tfrecords", "train", "evaluate")
# The Model Registry step after evaluate: only when the `register` parameter is true (not among STAGES, which
# every run runs; no pipeline output, being conditional). Its condition group's name:
REGISTER_STAGE = "register"
REGISTER_CONDITION = "register-enabled"
# Vertex AI's placeholders for the run's own project and region (resolved when the task starts).
RUN_PROJECT = "{{$.pipeline_google_cloud_project_id}}"
RUN_LOCATION = "{{$.pipeline_google_cloud_location}}"
# CPU and memory of the steps other than training (training is a compile option).
STAGE_RESOURCES = {
    "fingerprint": ("1", "2G"),
    "synth": ("4", "8G"),
    "fetch": ("2", "8G"),
    "labels": ("1", "4G"),
    "tfrecords": ("8", "32G"),
    "evaluate": ("8", "32G"),
    "register": ("4", "16G"),
}
_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """Hardware of the training step, fixed in the compiled template.

    Attributes:
        training: ``pipeline`` (an ordinary task: CPU or GPUs) or ``custom-job`` (a Vertex AI custom
            training job: TPUs, several workers; Vertex AI only).
        train_cpu, train_memory: CPU and memory limits of the training task (``pipeline``).
        accelerator: accelerator type, e.g. ``NVIDIA_L4``, ``NVIDIA_TESLA_T4`` or, with ``custom-job``,
            ``TPU_V5_LITEPOD`` (TPU v5e); empty: none. With ``custom-job`` it must be one of Vertex AI's
            types (`google.cloud.aiplatform_v1.types.AcceleratorType`). GPUs need the GPU flavour of the
            image.
        accelerator_count: accelerators per machine.
        machine_type: machine of each training replica (``custom-job``), e.g. ``ct5lp-hightpu-4t``.
        replicas: training machines (``custom-job``); more than one trains with MultiWorkerMirroredStrategy.
        boot_disk_gb: boot disk of each training replica (``custom-job``).
        train_retries: retries of the training step, for preemptions (it resumes from its last
            checkpoint); 0 for local runs, where a retry would only repeat an error.
        tensorboard: a Vertex AI TensorBoard instance, ``projects/P/locations/REGION/tensorboards/ID``, that
            the custom training job uploads its logs to (``custom-job``); empty: none. It must be in the
            run's region. The job then gets a base output directory under the run's pipeline root
            (``PIPELINE_ROOT/JOB_UUID/train``), so that Vertex AI sets ``AIP_TENSORBOARD_LOG_DIR`` (and
            ``AIP_CHECKPOINT_DIR``), which training writes to.
        labels: ``(key, value)`` labels of the custom training job (``custom-job``), after the image's
            provenance labels (`pipelines.params.provenance_labels`); ``submit`` and ``schedule`` put the
            run's ``--label`` values here when they compile. They are part of the training step's inputs,
            hence of its cache key.

    The custom training job also takes the run's own service account, VPC network and encryption key
    (Vertex AI's run placeholders, resolved when the job starts): it needs no option for them.
    """

    training: str = "pipeline"
    train_cpu: str = "8"
    train_memory: str = "32G"
    accelerator: str = ""
    accelerator_count: int = 1
    machine_type: str = "n1-standard-8"
    replicas: int = 1
    boot_disk_gb: int = 100
    train_retries: int = 2
    tensorboard: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def check(self):
        """Raise DeepFaceError naming the option and the fix if the combination is invalid."""
        if self.training not in TRAINING_BACKENDS:
            raise DeepFaceError(f"--training {self.training!r}: choose one of {', '.join(TRAINING_BACKENDS)}")
        if not _CPU.match(self.train_cpu):
            raise DeepFaceError(f"--train-cpu {self.train_cpu!r}: give a number of CPUs such as 8 or 500m")
        if not _MEMORY.match(self.train_memory):
            raise DeepFaceError(f"--train-memory {self.train_memory!r}: give a size such as 32G or 64Gi")
        if self.accelerator and not re.fullmatch(r"[A-Z0-9_]+", self.accelerator):
            raise DeepFaceError(
                f"--accelerator {self.accelerator!r}: use a Vertex AI accelerator type such as NVIDIA_L4, "
                "NVIDIA_TESLA_T4 or TPU_V5_LITEPOD"
            )
        if self.accelerator_count < 1:
            raise DeepFaceError(f"--accelerator-count {self.accelerator_count}: must be at least 1")
        if self.replicas < 1:
            raise DeepFaceError(f"--replicas {self.replicas}: must be at least 1")
        if self.training == "pipeline":
            if self.accelerator.startswith("TPU"):
                raise DeepFaceError(
                    f"--accelerator {self.accelerator} needs --training custom-job (TPUs run as a Vertex AI "
                    "custom training job), with a TPU --machine-type such as ct5lp-hightpu-4t"
                )
            if self.replicas > 1:
                raise DeepFaceError(f"--replicas {self.replicas} needs --training custom-job (multi-worker training)")
            if self.tensorboard:
                raise DeepFaceError(
                    "--tensorboard needs --training custom-job (Vertex AI uploads the logs of custom training "
                    "jobs); a plain training task keeps them in the model's logs/ folder"
                )
        if self.training == "custom-job" and self.accelerator:
            from google.cloud.aiplatform_v1.types import AcceleratorType

            known = [kind.name for kind in AcceleratorType if kind.value]
            if self.accelerator not in known:
                raise DeepFaceError(
                    f"--accelerator {self.accelerator}: not a Vertex AI accelerator type; custom jobs take one of "
                    f"{', '.join(known)} (TPU v5e is TPU_V5_LITEPOD)"
                )
        if self.tensorboard and not re.fullmatch(
                r"projects/[a-z0-9][a-z0-9.:-]*/locations/[a-z0-9-]+/tensorboards/[0-9]+", self.tensorboard):
            raise DeepFaceError(
                f"--tensorboard {self.tensorboard!r}: give a Vertex AI TensorBoard instance, "
                "projects/PROJECT/locations/REGION/tensorboards/ID (gcloud ai tensorboards list)"
            )
        from pipelines.params import check_labels

        check_labels(dict(self.labels))
        return self


def _with_image(component, image: str):
    """A copy of ``component`` whose container runs ``image`` (the components name a placeholder)."""
    bound = copy.deepcopy(component)
    bound.component_spec.implementation.container.image = image
    return bound


def _train_component(options: CompileOptions, image: str):
    """The training component: the plain one (its task gets the image), or wrapped as a Vertex AI custom
    training job, whose task runs Google's launcher and whose worker pool runs ``image``.

    The custom job runs as the pipeline run's service account, in its VPC network, under its encryption
    key (Vertex AI's run placeholders: empty when the run has none), with the image's provenance labels
    and ``options.labels``, and uploads to ``options.tensorboard`` when given (see `CompileOptions`).

    Two kinds of value are written into the launcher's request itself rather than taken from the
    custom-job component's parameters: those of names the training component has too (``labels``, our
    class map artifact; ``strategy``, our distribution strategy: the training input keeps the name, and
    the request must not read it), and the base output directory, whose per-run placeholders are then
    resolved like any argument and stay out of the step's parameter values (its cache key).
    """
    if options.training == "pipeline":
        return components.train.train
    import inspect
    import json

    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

    from pipelines.params import provenance_labels

    job_settings = dict(
        display_name="deepface-train",
        machine_type=options.machine_type,
        accelerator_type=options.accelerator,
        accelerator_count=options.accelerator_count,
        replica_count=options.replicas,
        boot_disk_size_gb=options.boot_disk_gb,
        # The run's own settings, resolved by Vertex AI when the task starts (google_cloud_pipeline_components
        # ._placeholders); network and key are empty when the run has none.
        service_account="{{$.pipeline_service_account}}",
        network="{{$.pipeline_network}}",
        encryption_spec_key_name="{{$.pipeline_encryption_key_name}}",
        tensorboard=options.tensorboard,
        labels={**provenance_labels(image), **dict(options.labels)},
        strategy="STANDARD",  # Vertex AI's scheduling strategy (on-demand machines)
    )
    training = _with_image(components.train.train, image)
    job = create_custom_training_job_from_component(training, **job_settings)
    defaults = {name: parameter.default for name, parameter in
                inspect.signature(create_custom_training_job_from_component).parameters.items()}
    in_request = {name: job_settings.get(name, defaults[name])
                  for name in sorted(set(training.component_spec.inputs) & set(defaults))}
    if options.tensorboard:
        # Vertex AI sets AIP_TENSORBOARD_LOG_DIR (and AIP_CHECKPOINT_DIR) only under a base output
        # directory; one per run, so that no run resumes from another run's checkpoints.
        in_request["base_output_directory"] = f"{dsl.PIPELINE_ROOT_PLACEHOLDER}/{dsl.PIPELINE_JOB_ID_PLACEHOLDER}/train"
    container = job.component_spec.implementation.container
    at = container.args.index("--payload") + 1
    payload = container.args[at]
    for name, value in in_request.items():
        placeholder = f"{{{{$.inputs.parameters['{name}']}}}}"
        literal = json.dumps(value, sort_keys=True)
        payload = payload.replace(f'"{placeholder}"', literal).replace(placeholder, literal)
    container.args[at] = payload
    parameters = {name for name, spec in job.component_spec.inputs.items() if not spec.type.startswith("system.")}
    unknown = sorted(set(re.findall(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}", " ".join(container.args)))
                     - parameters)
    if unknown:  # a google-cloud-pipeline-components whose request reads inputs this wrapping does not know
        raise DeepFaceError(
            f"the custom training job's request reads {', '.join(unknown)}, which are not its parameters: "
            "use the google-cloud-pipeline-components version of constraints.txt"
        )
    return job


def _configure(task: dsl.PipelineTask, stage: str, image: str) -> dsl.PipelineTask:
    """The stage's display name, resources (`STAGE_RESOURCES`) and the project image."""
    cpu, memory = STAGE_RESOURCES[stage]
    return task.set_display_name(stage).set_cpu_limit(cpu).set_memory_limit(memory).set_container_image(image)


class Outputs(NamedTuple):
    """What the pipeline returns (every artifact, so that local runs can say where each landed, and the
    data's fingerprint)."""

    fingerprint: str
    synthetic: Dataset
    data: Dataset
    labels: Dataset
    tfrecords: Dataset
    model: Model
    evaluation: Dataset
    metrics: Metrics
    roc: ClassificationMetrics
    report: HTML


def make_pipeline(options: CompileOptions = CompileOptions()):
    """The pipeline function for these compile options (see the module docstring)."""
    options.check()
    image = image_reference()
    train_image = image_reference(flavour_for(options.accelerator))
    train_component = _train_component(options, train_image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train DeepFace (Taigman et al., 2014) and evaluate it on LFW-style face verification.",
    )
    @takes_settings(*PIPELINE_SETTINGS, RegisterSettings, renamed=PIPELINE_RENAMED)
    def deepface_pipeline(
        data_uri: str,
        training_images: str,
        landmarks: str,
        verification_images: str,
        verification_pairs: str,
        verification_landmarks: str,
        synthetic_identities: int,
        synthetic_images_per_identity: int,
        data_seed: int,
        preset: str,
        epochs: int,
        batch_size: int,
        learning_rate: float,
        optimizer: str,
        validation_fraction: float,
        augment: bool,
        train_seed: int,
        align: bool,
        flip: bool,
        auth_secret: str,
        copy_gs: bool,
        register: bool,
        model_name: str,
        promote_margin: float,
    ) -> Outputs:
        """DeepFace: fetch data, build labels and TFRecords, train, evaluate face verification, register.

        The parameters (the run form) are settings of `deepface.settings`: the pipeline's own
        (`PipelineSettings`, `RegisterSettings`) and the stages' (train_seed is `TrainSettings.seed`, data_seed
        seeds the synthetic data and generated verification pairs); their defaults and descriptions come from
        there.
        align applies to training and evaluation alike.
        """
        # Never cached: it reads the data folder's listing on every run (see the module docstring).
        fingerprint = _configure(components.fingerprint.fingerprint_data(data_uri=data_uri, auth_secret=auth_secret),
                                 "fingerprint", image)
        fingerprint.set_caching_options(False)
        synth = _configure(components.synth.make_synthetic_dataset(
            data_uri=data_uri, train_identities=synthetic_identities,
            test_identities=synthetic_identities, lfw_identities=synthetic_identities,
            images_per_identity=synthetic_images_per_identity, seed=data_seed,
        ), "synth", image)
        # No task retry: fetch itself resumes interrupted transfers, and a retry would not fix bad input.
        fetch = _configure(components.fetch.fetch(
            synthetic=synth.outputs["data"], data_uri=data_uri, fingerprint=fingerprint.output,
            auth_secret=auth_secret, copy_gs=copy_gs,
        ), "fetch", image)
        labels = _configure(components.labels.build_labels(data=fetch.outputs["data"]), "labels", image)
        tfrecords = _configure(components.tfrecords.build_tfrecords(
            data=fetch.outputs["data"], labels=labels.outputs["labels"], preset=preset, source=training_images,
            align=align, landmarks=landmarks,
        ), "tfrecords", image)
        train = train_component(
            tfrecords=tfrecords.outputs["tfrecords"], labels=labels.outputs["labels"], preset=preset,
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
            validation_fraction=validation_fraction, augment=augment, seed=train_seed,
        ).set_display_name("train")
        if options.train_retries:
            train.set_retry(num_retries=options.train_retries, backoff_duration="60s")
        if options.training == "pipeline":
            train.set_cpu_limit(options.train_cpu).set_memory_limit(options.train_memory).set_container_image(train_image)
            if options.accelerator:
                train.set_accelerator_type(options.accelerator).set_accelerator_limit(options.accelerator_count)
        evaluate = _configure(components.evaluate.evaluate(
            model=train.outputs["model"], data=fetch.outputs["data"], images=verification_images,
            pairs=verification_pairs, flip=flip, pairs_seed=data_seed, align=align,
            landmarks=verification_landmarks,
        ), "evaluate", image)
        with dsl.If(register == True, name=REGISTER_CONDITION):  # noqa: E712 - a KFP condition, not a Python test
            _configure(components.register.register_model(
                model=train.outputs["model"], evaluation=evaluate.outputs["evaluation"], serving_image=image,
                model_name=model_name, promote_margin=promote_margin, project=RUN_PROJECT, location=RUN_LOCATION,
                labels=provenance_labels(image),
            ), REGISTER_STAGE, image)
        return Outputs(
            fingerprint=fingerprint.output, synthetic=synth.outputs["data"], data=fetch.outputs["data"],
            labels=labels.outputs["labels"], tfrecords=tfrecords.outputs["tfrecords"], model=train.outputs["model"],
            evaluation=evaluate.outputs["evaluation"], metrics=evaluate.outputs["metrics"],
            roc=evaluate.outputs["roc"], report=evaluate.outputs["report"],
        )

    return deepface_pipeline


def compile_pipeline(path: str, options: CompileOptions = CompileOptions()) -> str:
    """Write the pipeline template (YAML) to ``path``; the same code and options give the same bytes."""
    compiler.Compiler().compile(make_pipeline(options), package_path=str(path))
    return str(path)
