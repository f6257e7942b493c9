"""Training throughput from TFRecords next to the same model fed from memory: is the input pipeline the
bottleneck?

Writes a small synthetic dataset through the real stages (synth -> labels -> tfrecords at the preset's
image size) in a temporary directory, builds and compiles the model as `deepface train` does
(`deepface.train.compile_classifier` under the strategy `choose_strategy` picks, the CPU here), then
trains it with ``model.fit`` from two sources, in interleaved rounds:

- ``tfrecords``: the training pipeline of `deepface train` itself (`epoch_batches_fn`: shard and record
  shuffling, JPEG decoding, batching), end to end;
- ``in-memory``: one batch of the same images held as a tensor and repeated (no reading, no decoding).

Each round runs ``warmup + steps`` steps per source; the step times after the warm-up are kept, and
the figures are medians over all rounds: images per wall-clock second, and per CPU second of the
process (all its threads: the input pipeline's work shows there even when other jobs take cores).
Goal: the TFRecord rate (wall clock) is at least 90% of the in-memory rate, judged on the median of
the round-by-round ratios (each round's sources run back to back, so slow drifts in the machine's load
cancel).
The paper preset trains slowly on a CPU, so the default step counts are small.
Run: ``python benchmarks/bench_train.py [--help]`` (exit status 1 when below the goal); ``--smoke`` runs
every code path at tiny sizes (its figures mean nothing; exit status 0).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import parse_args  # noqa: E402

# --smoke: every code path at tiny sizes (the tiny preset).
SMOKE = {"preset": "tiny", "num_classes": 4, "batch_size": 8, "steps": 1, "warmup": 1, "rounds": 1}
GOAL = 0.90  # TFRecord rate / in-memory rate


def make_tfrecords(
    root: Path, image_size: int, identities: int = 16, images_per_identity: int = 12
) -> tuple[Path, Path]:
    """A synthetic dataset as TFRecords of ``image_size`` pixels, through the product's stages.

    Returns:
        ``(tfrecords_dir, labels_dir)``.
    """
    from deepface.labels import build_labels
    from deepface.synth import make_synthetic_dataset
    from deepface.tfrecords import build_tfrecords

    make_synthetic_dataset(
        root / "synth", train_identities=identities, test_identities=2, lfw_identities=4,
        images_per_identity=images_per_identity, image_size=image_size, lfw_image_size=64, seed=0, workers=1,
    )
    archive = root / "synth" / "vggface2_train.tar.gz"
    build_labels(archive, root / "labels")
    # faces aligned from the landmarks the generator drew (as tests/conftest.py does): the face detector
    # finds no face in many drawn images
    build_tfrecords(archive, root / "labels", root / "tfrecords", image_size=image_size, shard_mb=200_000 / 2**20,
                    landmarks=root / "synth" / "bb_landmark.tar.gz", workers=1)
    return root / "tfrecords", root / "labels"


class StepTimer(keras.callbacks.Callback):
    """Records the wall time and the CPU time (all threads of the process, the input pipeline's too) of
    every training step; reading the loss at a step's end waits for the step to finish."""

    def __init__(self):
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def on_train_batch_begin(self, batch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def timed_fit(model, batches, steps: int) -> StepTimer:
    """Trains ``steps`` steps of ``model.fit`` on ``batches`` (a distributed dataset); returns the
    timer holding each step's wall and CPU seconds."""
    timer = StepTimer()
    model.fit(batches, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    return timer


def in_memory_batches(distribution, batch):
    """One batch (images, labels) repeated forever, distributed like the training batches."""
    return distribution.distribute_datasets_from_function(lambda context: tf.data.Dataset.from_tensors(batch).repeat())


def print_table(seconds: dict[str, dict[str, list[float]]], batch_size: int, reference: str) -> None:
    """Median step time, images per wall second and per CPU second of each source, and their ratios to
    ``reference``."""
    wall = {name: batch_size / statistics.median(times["wall"]) for name, times in seconds.items()}
    cpu = {name: batch_size / statistics.median(times["cpu"]) for name, times in seconds.items()}
    header = (f"{'source':10s} {'steps':>5s} {'s/step':>7s} {'img/s':>7s} {'vs ' + reference:>12s} "
              f"{'img/CPU-s':>9s} {'vs ' + reference:>12s}   wall s/step of each step")
    print(header)
    print("-" * len(header))
    for name, times in seconds.items():
        each = " ".join(f"{value:.2f}" for value in times["wall"])
        print(f"{name:10s} {len(times['wall']):5d} {statistics.median(times['wall']):7.3f} {wall[name]:7.2f} "
              f"{wall[name] / wall[reference]:12.1%} {cpu[name]:9.2f} {cpu[name] / cpu[reference]:12.1%}   {each}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--num-classes", type=int, default=8631, help="F8 classes (VGGFace2: 8631)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="measured steps per source and round")
    parser.add_argument("--warmup", type=int, default=1, help="steps per source and round before measuring")
    parser.add_argument("--rounds", type=int, default=6)
    args = parse_args(parser, SMOKE)

    from deepface.model import get_config
    from deepface.train.fit import compile_classifier, epoch_batches_fn
    from deepface.train.inputs import prepare_data
    from deepface.train.strategy import choose_strategy, make_strategy

    config = get_config(args.preset)
    print(f"Machine: {len(os.sched_getaffinity(0))} usable CPU(s), load average {os.getloadavg()[0]:.1f} at start "
          "(shared: compare within one run). TensorFlow", tf.__version__)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        start = time.perf_counter()
        size = dict(identities=4, images_per_identity=4) if args.smoke else {}
        tfrecords, labels = make_tfrecords(Path(tmp), config.image_size, **size)
        data = prepare_data(tfrecords, labels, config, validation_fraction=0.0)
        print(f"{data.train_records} synthetic {config.image_size}-pixel records written in "
              f"{time.perf_counter() - start:.0f} s; preset {config.name}, {args.num_classes} classes, "
              f"batch {args.batch_size}, {args.rounds} rounds of {args.warmup} + {args.steps} steps per source.\n")
        plan = choose_strategy("auto", env=os.environ, gpus=tf.config.list_physical_devices("GPU"), has_tpu=False)
        distribution = make_strategy(plan)
        with distribution.scope():
            model = compile_classifier(
                config, args.num_classes, precision="float32", learning_rate=0.01 * args.batch_size / 128,
                momentum=0.9, weight_decay=0.0, label_smoothing=0.0, jit_compile=False, steps_per_execution=1,
                seed=0,
            )
        pipeline = epoch_batches_fn(  # an epoch as long as a round (the records repeat)
            data, 0, global_batch_size=args.batch_size, steps_per_epoch=args.warmup + args.steps, seed=0,
            shuffle_buffer=10_000, augment=False,
        )
        first_batch = next(iter(pipeline(tf.distribute.InputContext())))
        sources = {
            "in-memory": lambda: in_memory_batches(distribution, first_batch),
            "tfrecords": lambda: distribution.distribute_datasets_from_function(pipeline),
        }
        seconds = {name: {"wall": [], "cpu": []} for name in sources}
        paired = []  # per round: in-memory step time / tfrecords step time (cancels drifts in load)
        for round_index in range(args.rounds):
            round_medians = {}
            for name, source in sources.items():
                timer = timed_fit(model, source(), args.warmup + args.steps)
                seconds[name]["wall"].extend(timer.wall[args.warmup:])
                seconds[name]["cpu"].extend(timer.cpu[args.warmup:])
                round_medians[name] = statistics.median(timer.wall[args.warmup:])
                print(f"round {round_index + 1} {name}: " + " ".join(f"{value:.2f}" for value in timer.wall)
                      + " s/step", flush=True)
            paired.append(round_medians["in-memory"] / round_medians["tfrecords"])
    print()
    print_table(seconds, args.batch_size, reference="in-memory")
    ratio = statistics.median(paired)
    print(f"\nRound by round, tfrecords img/s / in-memory img/s: {' '.join(f'{r:.1%}' for r in paired)}; "
          f"median {ratio:.1%}.")
    print(f"Load average at the end: {os.getloadavg()[0]:.1f}. Goal: tfrecords >= {GOAL:.0%} of in-memory "
          f"(round by round, median): {ratio:.1%} -> {'met' if ratio >= GOAL else 'NOT met'}.")
    return 0 if ratio >= GOAL or args.smoke else 1


if __name__ == "__main__":
    sys.exit(main())
