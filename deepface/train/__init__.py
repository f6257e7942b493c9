"""Stage 7, train: fit the DeepFace classifier on TFRecord shards and write the model directory.

The paper's recipe is the default: SGD with momentum 0.9, learning rate 0.01 for a batch of 128
(scaled linearly with the global batch size), divided by 10 when the monitored loss stops improving,
down to 1e-4 (scaled alike), about 15 epochs, dropout on F7 (in the model).

The distribution follows the hardware unless ``strategy`` says otherwise: TPU (`TPUStrategy`, the local
TPU of a Vertex AI TPU VM), one GPU (`OneDeviceStrategy`), several GPUs (`MirroredStrategy`), several
workers (`MultiWorkerMirroredStrategy`, cluster from ``TF_CONFIG`` or Vertex's ``CLUSTER_SPEC``), or the
CPU. `choose_strategy` makes that choice as a pure function of the environment and the devices.

A run is resumable: `TrainingState` checkpoints the weights, the optimizer (momentum, iteration count,
learning rate), the ReduceLROnPlateau counters, the metric sums of the unfinished epoch and the history
every ``checkpoint_steps`` steps and at the end of every epoch. A restarted run continues from the last
checkpoint at the same epoch and step, reading the same batches it would have read, so the steps of all
attempts add up to those of one uninterrupted run.

SIGTERM (Kubernetes' and Vertex AI's notice before SIGKILL, on preemption) while fitting stops the run at
the next step boundary: a checkpoint is saved there, one line is logged and `TrainingInterrupted` (a
``SystemExit`` with status 143) is raised; the model directory stays incomplete (no manifest) and a rerun
resumes from that checkpoint.

A rerun is idempotent: when the model directory is already complete and was made from the same settings
and data (`deepface.train.export.complete_model`), `train` logs so and returns its manifest without
building a model or a strategy; a complete model of other settings or data is an error naming each
difference (``overwrite`` trains again from scratch; it removes the old manifest before anything else, so
a killed overwrite leaves a directory that evaluate and verify refuse).

One run per model directory: once its inputs are checked, the chief holds the directory's lock
(`deepface.outputs.output_lock`) until it returns; a second run into it is refused with one line naming
the holder, and the lock dies with a killed run. The inputs must be finished outputs: the TFRecords'
and the labels' manifests must exist and agree with their files (`deepface.train.inputs`).

The model directory (local or ``gs://``)::

    classifier.keras      the trained classifier, float32 (image in [0, 1] -> class probabilities)
    embedding.keras       image in [0, 1] -> L2-normalised F7 features (per-feature maxima of the
                          training data, as in the paper)
    classes.txt           the class map (line index = class id), copied from the labels stage
    metadata.json         preset, image size, classes, data hashes, versions, seed, strategy, batch, lr
    history.json          per-epoch metrics, steps per epoch, the runs (attempts) and where each started
    training_curves.png   loss, accuracy and learning rate per epoch
    logs/                 TensorBoard event files
    manifest.json         written last: the directory is complete only when it exists

Vertex AI's ``AIP_MODEL_DIR`` (used when no output directory is given), ``AIP_CHECKPOINT_DIR`` and
``AIP_TENSORBOARD_LOG_DIR`` are honoured when set.

`train` runs the stage; its parts are in the modules of this package: `deepface.train.strategy` (the
distribution strategy), `deepface.train.inputs` (the checked shards and class map),
`deepface.train.callbacks` (checkpoints, learning-rate schedule, reporting), `deepface.train.fit` (model,
loss, batches, the fit loop) and `deepface.train.export` (the model directory).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import signal
import sys
from collections.abc import Mapping

import keras
import tensorflow as tf

from deepface.config import training_recipe
from deepface.contracts import MANIFEST_FILE, write_manifest
from deepface.model import ModelConfig, get_config
from deepface.outputs import output_lock
from deepface.settings import TrainSettings
from deepface.train.callbacks import (
    EpochLogger,
    ResumableReduceLROnPlateau,
    RunProgbar,
    ScalarSummaries,
    StopOnSignal,
    TrainingInterrupted,
    TrainingState,
    check_run_config,
)
from deepface.train.export import (
    LOGS_SUBDIR,
    OutputDirs,
    complete_model,
    export_models,
    model_manifest,
    model_metadata,
    resolve_output_dirs,
    start_clean,
    training_history,
    write_model_files,
)
from deepface.train.fit import compile_classifier, epoch_batches_fn, fit_remaining, learning_rates, validation_batches
from deepface.train.inputs import TrainingData, check_batch_size, naming_corrupt_shards, prepare_data
from deepface.train.multi_worker import check_shards_per_worker, worker_checkpoint_dir
from deepface.train.strategy import StrategyPlan, choose_precision, resolve_strategy, training_workers

logger = logging.getLogger(__name__)

__all__ = ["TrainingInterrupted", "train"]


def train(
    tfrecords_dir: str | os.PathLike,
    labels_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    validation_tfrecords: str | os.PathLike | None = None,
    distribution: tf.distribute.Strategy | None = None,
    env: Mapping[str, str] | None = None,
    **settings,
) -> dict:
    """Train the DeepFace classifier on TFRecords and write the model directory (see the module doc).

    Args:
        tfrecords_dir: output directory of `deepface tfrecords` (local or gs://).
        labels_dir: output directory of `deepface labels` (its classes.txt).
        out_dir: the model directory (local or gs://); None uses ``AIP_MODEL_DIR``.
        validation_tfrecords: a separate validation TFRecord directory (instead of validation_fraction).
        distribution: a ``tf.distribute.Strategy`` built by the caller, used instead of the strategy setting.
        env: environment variables (default ``os.environ``): TF_CONFIG, CLUSTER_SPEC, AIP_*.
        **settings: fields of `deepface.settings.TrainSettings` (their help says what each does). Where
            they need more words: preset's input size must be the records'; batch_size is global and must
            divide over the replicas; batch_size, learning_rate and optimizer left None take the preset's
            recipe (`deepface.config.training_recipe`), a value given always wins; sgd learning rates
            (and min_learning_rate) are for a batch of 128 and scale linearly with batch_size, adam's are
            used as given; validation_fraction holds out whole shards chosen by name, and as
            `deepface tfrecords` writes records grouped by identity, their loss watches over-fitting, not
            closed-set accuracy; precision float16 and bfloat16 are mixed (float32 weights and softmax).

    Returns:
        The manifest written last to ``<model dir>/manifest.json`` (an empty dict on non-chief workers);
        when the model directory already holds the model of these settings and data (a rerun), its
        manifest, on every worker, without training.

    Raises:
        SettingError: a setting unknown or out of its range, named.
        DeepFaceError: bad input found before any training: missing or empty shards, a class map or an
            image size that disagrees with the records, an impossible batch size, a labels directory
            without its manifest, a class map too large for F8 (`deepface.train.inputs.MAX_F8_BYTES`); a
            model directory that holds a complete model of other settings or data (without overwrite), or
            that another run is writing (its lock).
        TrainingInterrupted: SIGTERM while fitting; a checkpoint of the last step was saved first.

    Example: ``train("tfrecords", "labels", "model", preset="tiny", epochs=3)``.
    """
    # The settings: the preset's recipe where none is given, every range checked.
    chosen = TrainSettings.of(settings)
    env = dict(os.environ if env is None else env)
    recipe = training_recipe(
        chosen.preset, optimizer=chosen.optimizer, batch_size=chosen.batch_size, learning_rate=chosen.learning_rate
    )
    optimizer, batch_size, learning_rate = recipe.optimizer, recipe.batch_size, recipe.learning_rate

    # A rerun of a finished run (e.g. a retried pipeline step) returns its model as it is.
    dirs = resolve_output_dirs(out_dir, env)
    if not chosen.overwrite:
        existing = complete_model(dirs, chosen, tfrecords_dir=tfrecords_dir, labels_dir=labels_dir,
                                  validation_tfrecords=validation_tfrecords)
        if existing is not None:
            logger.info("%s already holds the model of these settings and data (its %s): nothing to train",
                        dirs.model_dir, MANIFEST_FILE)
            return existing

    # The inputs and the hardware, checked against each other before any training.
    config = get_config(chosen.preset)
    data = prepare_data(
        tfrecords_dir,
        labels_dir,
        config,
        validation_fraction=chosen.validation_fraction,
        validation_tfrecords=validation_tfrecords,
    )
    plan, distribution = resolve_strategy(distribution or chosen.strategy, env)
    precision = choose_precision(chosen.precision, plan.kind)
    replicas = distribution.num_replicas_in_sync
    check_batch_size(batch_size, replicas, data.train_records)
    check_shards_per_worker(data.train_shards, training_workers(plan.tf_config))

    # One writer per model directory: the chief holds its lock from here until the manifest is written
    # (a second run into it is refused; the lock dies with a killed run). Other workers write elsewhere.
    with output_lock(dirs.model_dir, "train") if plan.is_chief else contextlib.nullcontext():
        if plan.is_chief:
            start_clean(dirs, chosen.overwrite)
        return _fit_and_export(chosen, dirs, config, data, plan, distribution, precision,
                               optimizer=optimizer, batch_size=batch_size, learning_rate=learning_rate)


def _fit_and_export(chosen: TrainSettings, dirs: OutputDirs, config: ModelConfig, data: TrainingData,
                    plan: StrategyPlan, distribution: tf.distribute.Strategy, precision: str, *, optimizer: str,
                    batch_size: int, learning_rate: float | None) -> dict:
    """The run once its inputs are checked and its model directory is clean: fit from the last checkpoint,
    then (chief) write the model directory, its manifest last. Returns the manifest (``{}`` off the chief)."""
    replicas = distribution.num_replicas_in_sync
    steps = chosen.steps_per_epoch or data.train_records // batch_size
    initial_lr, min_lr, scaling = learning_rates(optimizer, learning_rate, chosen.min_learning_rate, batch_size)
    logger.info(
        "Strategy %s (%s): %d replica(s); global batch %d = %d per replica; %s learning rate %g = %s, "
        "floor %g; precision %s; XLA %s",
        plan.kind,
        plan.reason,
        replicas,
        batch_size,
        batch_size // replicas,
        optimizer,
        initial_lr,
        scaling,
        min_lr,
        precision,
        "on" if chosen.jit_compile else "off",
    )
    logger.info(
        "Training %s on %d records in %d shard(s): %d epochs of %d steps; validating on %d records",
        config.name,
        data.train_records,
        len(data.train_shards),
        chosen.epochs,
        steps,
        data.validation_records,
    )

    # Resume only a run of the same settings. Every worker restores from the chief's checkpoints; the
    # others write theirs (and their summaries) into a throw-away directory, removed when they return.
    check_run_config(
        dirs.checkpoint_dir,
        {
            "preset": config.to_dict(),
            "num_classes": len(data.classes),
            "batch_size": batch_size,
            "steps_per_epoch": steps,
            "seed": chosen.seed,
            "optimizer": optimizer,
            "learning_rate": learning_rate,
            "min_learning_rate": chosen.min_learning_rate,
            "momentum": chosen.momentum,
            "lr_factor": chosen.lr_factor,
            "lr_patience": chosen.lr_patience,
            "weight_decay": chosen.weight_decay,
            "label_smoothing": chosen.label_smoothing,
            "precision": precision,
            "augment": chosen.augment,
            "shuffle_buffer": chosen.shuffle_buffer,
            "train_shards": [posixpath.basename(shard) for shard in data.train_shards],
            "tfrecords_manifest_sha256": data.manifest_sha256,
        },
        plan.is_chief,
    )
    checkpoint_dir = worker_checkpoint_dir(dirs.checkpoint_dir, plan.is_chief)
    try:
        return _fit_from_checkpoint(chosen, dirs, checkpoint_dir, config, data, plan, distribution, precision,
                                    optimizer=optimizer, batch_size=batch_size, initial_lr=initial_lr, min_lr=min_lr,
                                    learning_rate=learning_rate, steps=steps)
    finally:
        if checkpoint_dir != dirs.checkpoint_dir and tf.io.gfile.exists(checkpoint_dir):
            tf.io.gfile.rmtree(checkpoint_dir)


def _fit_from_checkpoint(chosen: TrainSettings, dirs: OutputDirs, checkpoint_dir: str, config: ModelConfig,
                         data: TrainingData, plan: StrategyPlan, distribution: tf.distribute.Strategy, precision: str,
                         *, optimizer: str, batch_size: int, initial_lr: float, min_lr: float,
                         learning_rate: float | None, steps: int) -> dict:
    """Fit from the last checkpoint in ``dirs.checkpoint_dir`` (writing this worker's checkpoints into
    ``checkpoint_dir``), then (chief) write the model directory, its manifest last."""
    replicas = distribution.num_replicas_in_sync
    summaries_dir = dirs.tensorboard_dir if plan.is_chief else posixpath.join(checkpoint_dir, LOGS_SUBDIR)

    # The model and its callbacks; a restarted run continues from its last checkpoint.
    keras.utils.set_random_seed(chosen.seed)
    with distribution.scope():
        model = compile_classifier(
            config,
            len(data.classes),
            precision=precision,
            optimizer=optimizer,
            learning_rate=initial_lr,
            momentum=chosen.momentum,
            weight_decay=chosen.weight_decay,
            label_smoothing=chosen.label_smoothing,
            jit_compile=chosen.jit_compile,
            steps_per_execution=chosen.steps_per_execution,
            seed=chosen.seed,
        )
    monitor = "val_loss" if data.validation_records else "loss"
    plateau = ResumableReduceLROnPlateau(
        monitor=monitor, factor=chosen.lr_factor, patience=chosen.lr_patience, min_lr=min_lr, verbose=1
    )
    stop = StopOnSignal(signal.SIGTERM)  # installed while fitting: a preemption's notice
    state = TrainingState(
        model, checkpoint_dir, steps_per_epoch=steps, save_steps=chosen.checkpoint_steps, plateau=plateau,
        stop=stop, restore_from=dirs.checkpoint_dir,
    )
    state.restore()
    summaries = ScalarSummaries(summaries_dir)
    callbacks = [plateau, state, EpochLogger(chosen.epochs, batch_size), summaries, RunProgbar(chosen.epochs)]

    # Training, one ``fit`` per epoch from where the state stands.
    validation_data = validation_batches(data, batch_size, static_shapes=plan.kind == "tpu")
    epoch_batches = functools.partial(
        epoch_batches_fn,
        data,
        global_batch_size=batch_size,
        steps_per_epoch=steps,
        seed=chosen.seed,
        shuffle_buffer=chosen.shuffle_buffer,
        augment=chosen.augment,
    )
    all_shards = [*data.train_shards, *data.validation_shards]
    try:
        with naming_corrupt_shards(all_shards), stop:
            fit_remaining(
                model,
                distribution,
                state,
                epoch_batches,
                epochs=chosen.epochs,
                steps_per_epoch=steps,
                validation_data=validation_data,
                callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 0,
            )
        state.stop_if_requested()  # a SIGTERM after the last step's checks; later ones end the process
    finally:
        summaries.close()
    run = state.runs[-1]
    logger.info(
        "Training done: %d epochs of %d steps; this run trained %d steps from epoch %d, step %d",
        state.epoch,
        steps,
        run["steps"],
        run["start_epoch"],
        run["start_step"],
    )
    if not plan.is_chief:
        return {}

    # The model directory (chief only), its manifest last.
    with naming_corrupt_shards(all_shards):
        classifier, embedding = export_models(
            model, config, data, batch_size=batch_size // replicas, feature_max_batches=chosen.feature_max_batches
        )
    history = training_history(
        state, model.optimizer, epochs=chosen.epochs, steps_per_epoch=steps, global_batch_size=batch_size
    )
    metadata = model_metadata(
        config,
        data,
        chosen,
        strategy_kind=plan.kind,
        replicas=replicas,
        precision=precision,
        global_batch_size=batch_size,
        optimizer=optimizer,
        learning_rate=learning_rate,
        initial_lr=initial_lr,
        final_lr=float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
        min_lr=min_lr,
        monitor=monitor,
        steps_per_epoch=steps,
        loss_scale=(float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))
                    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) else None),
    )
    files = write_model_files(
        dirs,
        classifier=classifier,
        embedding=embedding,
        classes_bytes=data.classes_bytes,
        metadata=metadata,
        history=history,
        title=f"DeepFace {config.name}",
    )
    manifest = model_manifest(config, data, files, epochs=chosen.epochs, history=state.history)
    write_manifest(dirs.model_dir, manifest)  # last: the model directory is complete
    logger.info("Wrote the model directory %s", dirs.model_dir)
    if not chosen.keep_checkpoints and tf.io.gfile.exists(dirs.checkpoint_dir):
        tf.io.gfile.rmtree(dirs.checkpoint_dir)  # only now: a kill before the manifest can still resume
    return manifest
