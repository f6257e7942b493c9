"""The model, the loss, the learning rates and the batches of a training run, and the loop that fits them.

- `compile_classifier`: the classifier compiled (SGD with momentum, the paper's, as `MomentumSGD`, or Adam;
  mixed precision as asked) in the current distribution scope, its optimizer built so that a checkpoint can be restored;
- `learning_rates`: the initial rate and its floor (SGD's scaled linearly with the global batch);
- `epoch_batches_fn`, `validation_batches`: the input pipelines (each epoch its own deterministic
  pipeline, seeded by `epoch_seed`);
- `fit_remaining`: ``fit`` from a `TrainingState`'s epoch and step to the last epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from deepface.data import make_dataset
from deepface.model import ModelConfig, build_classifier
from deepface.train.callbacks import TrainingState
from deepface.train.inputs import TrainingData
from deepface.train.momentum import MomentumSGD
from deepface.train.multi_worker import keras_fit_under

# Keras dtype policy of each precision.
DTYPE_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
# The paper's learning rates are for this batch size; other batch sizes scale them linearly.
REFERENCE_BATCH_SIZE = 128


def scaled_learning_rate(learning_rate: float, global_batch_size: int) -> float:
    """Linear scaling: ``learning_rate`` is for a batch of 128 (the paper's)."""
    return learning_rate * global_batch_size / REFERENCE_BATCH_SIZE


def learning_rates(
    optimizer: str, learning_rate: float, min_learning_rate: float, global_batch_size: int
) -> tuple[float, float, str]:
    """The initial learning rate and its floor for ``optimizer``, and how they were found (for the log).

    SGD's rates are for a batch of 128 and scale linearly to ``global_batch_size``; Adam's are used as given.

    Returns:
        ``(initial, floor, how)``.
    """
    if optimizer == "sgd":
        initial = scaled_learning_rate(learning_rate, global_batch_size)
        floor = scaled_learning_rate(min_learning_rate, global_batch_size)
        return initial, floor, f"{learning_rate:g} x {global_batch_size}/{REFERENCE_BATCH_SIZE} (linear scaling)"
    return learning_rate, min_learning_rate, "as given (Adam: no scaling)"


def epoch_seed(seed: int, epoch: int) -> int:
    """The input pipeline's seed for one epoch (each epoch is its own deterministic pipeline, so a
    resumed run reaches any step by skipping at most one epoch of batches)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % (2**31 - 3))


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing, of integer labels ``(batch,)`` and softmax probabilities
    ``(batch, classes)``: the one-hot labels are made inside the loss, so batches keep int32 labels."""

    def __init__(self, label_smoothing: float, name: str = "crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, labels, probabilities):
        labels = keras.ops.cast(keras.ops.reshape(labels, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(probabilities)[-1])
        return keras.losses.categorical_crossentropy(one_hot, probabilities, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def sparse_crossentropy(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The training loss: sparse categorical cross-entropy, with label smoothing when asked."""
    if label_smoothing:
        return SmoothedSparseCrossentropy(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(name="crossentropy")


def compile_classifier(
    config: ModelConfig,
    num_classes: int,
    *,
    precision: str,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    label_smoothing: float,
    jit_compile: bool,
    optimizer: str = "sgd",
    steps_per_execution: int,
    seed: int,
) -> keras.Model:
    """The classifier compiled with SGD (momentum; the paper) or Adam in the current distribution scope.

    The optimizer is built, so that its variables exist before a checkpoint is restored into them.
    float16 gets dynamic loss scaling; float32 weights are kept under every precision.
    """
    model = build_classifier(config, num_classes, seed=seed, dtype_policy=DTYPE_POLICIES[precision])
    if optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=weight_decay or None)
    else:
        optimizer = MomentumSGD(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay or None)
    if precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=sparse_crossentropy(label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    optimizer.build(model.trainable_variables)
    build_compiled_state(model, config.image_size)
    return model


def build_compiled_state(model: keras.Model, image_size: int) -> None:
    """Create the compiled metrics' and loss trackers' variables now, in the caller's distribution scope,
    from symbolic inputs (no data read), as Keras' ``fit`` would on its first batch.

    Every variable a checkpoint restores then exists before the first ``fit``, and ``fit`` has nothing
    left to build: `fit_remaining` relies on it under several workers
    (`deepface.train.multi_worker.keras_fit_under`).
    """
    images = keras.KerasTensor((None, image_size, image_size, 3), "float32")
    labels = keras.KerasTensor((None,), "int32")
    model._symbolic_build(data_batch=(images, labels))  # noqa: SLF001  (Keras' own first-batch build)


def epoch_batches_fn(
    data: TrainingData,
    epoch: int,
    *,
    global_batch_size: int,
    steps_per_epoch: int,
    seed: int,
    shuffle_buffer: int,
    augment: bool,
    skip_steps: int = 0,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A ``dataset_fn`` for ``strategy.distribute_datasets_from_function``: the training batches of one
    epoch, ``steps_per_epoch`` of them, less the first ``skip_steps``.

    Every epoch is its own deterministic pipeline (seed `epoch_seed`), so the batches of (epoch, step)
    are the same in a resumed run as in an uninterrupted one, and resuming mid-epoch reads through at
    most one epoch's records. The pipeline is built inside ``flat_map``, hence afresh for every
    iterator: a seeded shuffle otherwise reshuffles for each new iterator, and Keras opens one extra
    iterator to build the model under a distribution strategy.
    """

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        # Each step takes one per-replica batch for every replica this input pipeline feeds.
        batches_per_step = context.num_replicas_in_sync // context.num_input_pipelines

        def pipeline(_):
            return make_dataset(
                data.train_shards, batch_size=context.get_per_replica_batch_size(global_batch_size),
                image_size=data.image_size, training=True, shuffle_buffer=shuffle_buffer, augment=augment,
                seed=epoch_seed(seed, epoch), deterministic=True, repeat=True,
                num_input_pipelines=context.num_input_pipelines, input_pipeline_id=context.input_pipeline_id,
            ).take(steps_per_epoch * batches_per_step).skip(skip_steps * batches_per_step)

        return tf.data.Dataset.from_tensors(0).flat_map(pipeline).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def validation_batches(data: TrainingData, batch_size: int, *, static_shapes: bool) -> tf.data.Dataset | None:
    """The validation records in order, in batches of at most ``batch_size`` (None without validation).

    ``static_shapes`` (TPU) drops the last partial batch. The dataset's length is declared, so that
    Keras stops at the last batch instead of running into the end of the data at every evaluation.
    """
    if not data.validation_records:
        return None
    batch = min(batch_size, data.validation_records)
    batches = data.validation_records // batch if static_shapes else -(-data.validation_records // batch)
    dataset = make_dataset(data.validation_shards, batch_size=batch, image_size=data.image_size, training=False,
                           drop_remainder=static_shapes)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def fit_remaining(
    model: keras.Model,
    distribution: tf.distribute.Strategy,
    state: TrainingState,
    epoch_batches: Callable[..., Callable],
    *,
    epochs: int,
    steps_per_epoch: int,
    **fit_args,
) -> None:
    """Train from the state's position (epoch, step) to the end of ``epochs``, one ``fit`` per epoch.

    ``fit`` knows no step inside an epoch, so a resumed epoch is a ``fit`` of its remaining steps.

    Args:
        epoch_batches: ``(epoch, skip_steps=...) -> dataset_fn``, e.g. a partial `epoch_batches_fn`.
        fit_args: passed to ``model.fit`` (callbacks, validation data, verbosity).
    """
    with keras_fit_under(distribution, model):
        while state.epoch < epochs:
            skip = state.step
            state.begin_fit()
            batches = distribution.distribute_datasets_from_function(epoch_batches(state.epoch, skip_steps=skip))
            model.fit(batches, initial_epoch=state.epoch, epochs=state.epoch + 1,
                      steps_per_epoch=steps_per_epoch - skip, shuffle=False, **fit_args)
