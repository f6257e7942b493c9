"""What training needs under several workers (`tf.distribute.MultiWorkerMirroredStrategy`).

- `keras_fit_under`: Keras 3's ``fit`` made to work under that strategy (up to at least Keras 3.15 it
  fails there: keras-team/keras#20585);
- `check_shards_per_worker`: each worker reads whole shards, so there must be at least one per worker;
- `worker_checkpoint_dir`: where a worker writes its checkpoints (TensorFlow's multi-worker rule: every
  worker saves, the chief into the real directory, the others into throw-away ones, and every worker
  restores from the chief's).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

import keras
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from deepface.errors import DeepFaceError


def is_multi_worker(distribution: tf.distribute.Strategy) -> bool:
    """Whether ``distribution`` spans several workers (processes that all-reduce over the network)."""
    return (isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy)
            and distribution.extended._in_multi_worker_mode())  # noqa: SLF001


def _mean_over_workers(original):
    """Keras' ``reduce_per_replica`` with its multi-worker ``mean`` fixed: Keras averages each metric
    with ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar metrics ("Invalid
    reduction dimension 0 for input with 0 dimensions"); the mean over the replicas is ``axis=None``."""

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return keras.tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    return reduce_per_replica


@contextlib.contextmanager
def keras_fit_under(distribution: tf.distribute.Strategy, model: keras.Model) -> Iterator[None]:
    """Within the block, ``model.fit`` works under ``distribution``, several workers included.

    Under one worker nothing changes. Under several, two Keras 3 faults (keras-team/keras#20585) are
    worked around for the block's duration:

    - ``fit`` first pulls a batch and averages the (images, labels) pair over the workers with
      ``strategy.reduce``, which the strategy refuses ("Attempt to convert a value (PerReplica...)"), to
      build what the model has not built yet: the model must be fully built before
      (`deepface.train.fit.build_compiled_state`), and that step is skipped;
    - the per-step metrics are averaged with a reduction the scalars cannot take (`_mean_over_workers`).

    The train step itself (forward, loss, all-reduced gradients, update) is Keras' own.
    """
    if not is_multi_worker(distribution):
        yield
        return
    original = keras_tf_trainer.reduce_per_replica
    keras_tf_trainer.reduce_per_replica = _mean_over_workers(original)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # noqa: SLF001
    try:
        yield
    finally:
        del model._maybe_symbolic_build  # noqa: SLF001  (the class's method again)
        keras_tf_trainer.reduce_per_replica = original


def check_shards_per_worker(shards: list[str], workers: int) -> None:
    """Each worker reads whole shards (shard ``i`` by worker ``i % workers``): refuse fewer shards than
    workers before any training, naming the fix."""
    if workers > 1 and len(shards) < workers:
        raise DeepFaceError(
            f"{len(shards)} training shard(s) cannot feed {workers} workers (each reads whole shards): write "
            f"at least {workers} shards (a smaller shard_mb in `deepface tfrecords`) or use fewer replicas."
        )


def worker_checkpoint_dir(checkpoint_dir: str, is_chief: bool) -> str:
    """Where this worker writes its checkpoints: the chief into ``checkpoint_dir``, any other worker into
    a new temporary directory (removed by the caller when training ends). Every worker must save, as
    saving may take part in collective operations, but only the chief's checkpoints are kept; every
    worker restores from ``checkpoint_dir``."""
    return checkpoint_dir if is_chief else tempfile.mkdtemp(prefix="deepface-worker-checkpoints-")
