"""The DeepFace pipeline: synth -> fetch -> labels -> tfrecords -> train -> evaluate.

Runtime parameters (the Vertex AI console's run form) are the arguments of the pipeline function; their
defaults are the embedded demo: synthetic data, the ``tiny`` preset, a few epochs, so that a run with no
arguments finishes anywhere. For VGGFace2 + LFW set ``data_uri`` to the folder holding the release files
and e.g. ``preset=paper`` (which brings the paper's recipe: SGD, batch 128, learning rate 0.01).

Hardware is fixed when compiling (`CompileOptions`): KFP needs constant resource requests, accelerator
types and custom-job settings in the compiled template. Training runs either as an ordinary pipeline
task (CPU, or GPUs through ``set_accelerator_type``), or as a Vertex AI custom training job
(``create_custom_training_job_from_component``) for TPUs and multi-worker clusters; the latter runs only
on Vertex AI, not under kfp.local.

Caching is on for every task: a task reruns only when its parameters, its input artifacts, its component
code or the image change, so train and evaluate rerun exactly when their inputs (or their own
parameters) change.

The image: the components name a placeholder (`components.image.PLACEHOLDER`); `make_pipeline` computes
the project image's reference (`components.image.image_reference`) and sets it on every task, so that
importing the components runs no git and every template and local run names the real, immutable image.

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
import components.labels
import components.synth
import components.tfrecords
import components.train
from components.image import image_reference
from components.parameters import takes_settings
from deepface.errors import DeepFaceError
from pipelines.params import PIPELINE_RENAMED, PIPELINE_SETTINGS

PIPELINE_NAME = "deepface-pipeline"
TRAINING_BACKENDS = ("pipeline", "custom-job")
# Display names of the tasks, in execution order (the DAG is a chain).
STAGES = ("synth", "fetch", "labels", "tfrecords", "train", "evaluate")
# CPU and memory of the steps other than training (training is a compile option).
STAGE_RESOURCES = {
    "synth": ("4", "8G"),
    "fetch": ("2", "8G"),
    "labels": ("1", "4G"),
    "tfrecords": ("8", "32G"),
    "evaluate": ("8", "32G"),
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
            ``TPU_V5_LITEPODSLICE``; empty: none. GPUs need the GPU flavour of the image.
        accelerator_count: accelerators per machine.
        machine_type: machine of each training replica (``custom-job``), e.g. ``ct5lp-hightpu-4t``.
        replicas: training machines (``custom-job``); more than one trains with MultiWorkerMirroredStrategy.
        boot_disk_gb: boot disk of each training replica (``custom-job``).
        train_retries: retries of the training step, for preemptions (it resumes from its last
            checkpoint); 0 for local runs, where a retry would only repeat an error.
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
                "NVIDIA_TESLA_T4 or TPU_V5_LITEPODSLICE"
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
        return self


def _with_image(component, image: str):
    """A copy of ``component`` whose container runs ``image`` (the components name a placeholder)."""
    bound = copy.deepcopy(component)
    bound.component_spec.implementation.container.image = image
    return bound


def _train_component(options: CompileOptions, image: str):
    """The training component: the plain one (its task gets the image), or wrapped as a Vertex AI custom
    training job, whose task runs Google's launcher and whose worker pool runs ``image``."""
    if options.training == "pipeline":
        return components.train.train
    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component

    return create_custom_training_job_from_component(
        _with_image(components.train.train, image),
        display_name="deepface-train",
        machine_type=options.machine_type,
        accelerator_type=options.accelerator,
        accelerator_count=options.accelerator_count,
        replica_count=options.replicas,
        boot_disk_size_gb=options.boot_disk_gb,
        service_account="{{$.pipeline_service_account}}",  # the pipeline run's own service account
    )


def _configure(task: dsl.PipelineTask, stage: str, image: str) -> dsl.PipelineTask:
    """The stage's display name, resources (`STAGE_RESOURCES`) and the project image."""
    cpu, memory = STAGE_RESOURCES[stage]
    return task.set_display_name(stage).set_cpu_limit(cpu).set_memory_limit(memory).set_container_image(image)


class Outputs(NamedTuple):
    """What the pipeline returns (every artifact, so that local runs can say where each landed)."""

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
    train_component = _train_component(options, image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train DeepFace (Taigman et al., 2014) and evaluate it on LFW-style face verification.",
    )
    @takes_settings(*PIPELINE_SETTINGS, renamed=PIPELINE_RENAMED)
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
    ) -> Outputs:
        """DeepFace: fetch data, build labels and TFRecords, train, evaluate face verification.

        The parameters (the run form) are settings of `deepface.settings`: the pipeline's own
        (`PipelineSettings`) and the stages' (train_seed is `TrainSettings.seed`, data_seed seeds the
        synthetic data and generated verification pairs); their defaults and descriptions come from there.
        align applies to training and evaluation alike.
        """
        synth = _configure(components.synth.make_synthetic_dataset(
            data_uri=data_uri, train_identities=synthetic_identities,
            test_identities=synthetic_identities, lfw_identities=synthetic_identities,
            images_per_identity=synthetic_images_per_identity, seed=data_seed,
        ), "synth", image)
        # No task retry: fetch itself resumes interrupted transfers, and a retry would not fix bad input.
        fetch = _configure(components.fetch.fetch(synthetic=synth.outputs["data"], data_uri=data_uri), "fetch", image)
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
            train.set_cpu_limit(options.train_cpu).set_memory_limit(options.train_memory).set_container_image(image)
            if options.accelerator:
                train.set_accelerator_type(options.accelerator).set_accelerator_limit(options.accelerator_count)
        evaluate = _configure(components.evaluate.evaluate(
            model=train.outputs["model"], data=fetch.outputs["data"], images=verification_images,
            pairs=verification_pairs, flip=flip, pairs_seed=data_seed, align=align,
            landmarks=verification_landmarks,
        ), "evaluate", image)
        return Outputs(
            synthetic=synth.outputs["data"], data=fetch.outputs["data"], labels=labels.outputs["labels"],
            tfrecords=tfrecords.outputs["tfrecords"], model=train.outputs["model"],
            evaluation=evaluate.outputs["evaluation"], metrics=evaluate.outputs["metrics"],
            roc=evaluate.outputs["roc"], report=evaluate.outputs["report"],
        )

    return deepface_pipeline


def compile_pipeline(path: str, options: CompileOptions = CompileOptions()) -> str:
    """Write the pipeline template (YAML) to ``path``; the same code and options give the same bytes."""
    compiler.Compiler().compile(make_pipeline(options), package_path=str(path))
    return str(path)
