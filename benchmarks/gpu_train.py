"""Training throughput of DeepFace on an accelerator: images per second and step time in float32 and
bfloat16, XLA off and on, and whether the input pipeline keeps up.

Builds and compiles the model as `deepface train` does (`deepface.train.compile_classifier`, under the
strategy `choose_strategy` picks: one GPU here) once per configuration, trains ``warmup + steps`` steps
with ``model.fit`` and keeps the step times after the warm-up (the first step includes tracing and,
with XLA, compilation: reported separately). Configurations: each precision, XLA off and on, for each
data source:

- ``memory``: one synthetic batch (random images and labels) held as a tensor and repeated;
- ``tfrecords``: the training pipeline of `deepface train` (`epoch_batches_fn`) reading ``--tfrecords``
  (with ``--labels``), or a small synthetic dataset written here through the real stages.

Then the input pipeline alone: batches of the global batch size from the same TFRecords through
`epoch_batches_fn` (decoding, augmentation, prefetch), as fast as it delivers them, against the fastest
training step measured: the accelerator is fed when the pipeline delivers at least that rate.

On a GPU machine, the defaults measure the paper's network at batch 256 in float32 and bfloat16, XLA off
and on, and the input pipeline (about 5 minutes on one GPU):
``python benchmarks/gpu_train.py [--data both] [--json results.json]``.
On a CPU: ``python benchmarks/gpu_train.py --smoke`` (every code path at tiny sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras  # noqa: E402  (after bench_train, which quiets TF's logs)
import tensorflow as tf  # noqa: E402
from _common import parse_args  # noqa: E402
from bench_train import in_memory_batches, make_tfrecords, timed_fit

# --smoke: every code path at tiny sizes (seconds on a CPU); the input pipeline alone still reads TFRecords.
SMOKE = {"preset": "tiny", "num_classes": 4, "batch_size": 8, "steps": 2, "warmup": 1, "data": "memory",
         "input_batches": 2}


def synthetic_batch(batch_size: int, image_size: int, num_classes: int, seed: int = 0) -> tuple:
    """Random images in [0, 1] ``(batch, size, size, 3)`` and labels ``(batch,)``."""
    generator = tf.random.Generator.from_seed(seed)
    images = generator.uniform((batch_size, image_size, image_size, 3))
    labels = generator.uniform((batch_size,), maxval=num_classes, dtype=tf.int32)
    return images, labels


def measure(model, batches, warmup: int, steps: int) -> dict:
    """Step times of one configuration: the first step (tracing, compiling) and the median after warm-up."""
    start = time.perf_counter()
    seconds = timed_fit(model, batches, warmup + steps).wall
    measured = seconds[warmup:]
    median = statistics.median(measured)
    return {
        "first_step_s": seconds[0],
        "warmup_total_s": time.perf_counter() - start - sum(measured),
        "median_step_s": median,
        "min_step_s": min(measured),
        "max_step_s": max(measured),
        "steps": len(measured),
    }


def input_rate(batches, batch_size: int, count: int) -> dict:
    """Images per second the input pipeline delivers alone: ``count`` batches after the first (which
    fills the shuffle buffer and starts the threads)."""
    iterator = iter(batches)
    start = time.perf_counter()
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"img_per_s": count * batch_size / seconds, "batches": count, "first_batch_s": first}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--num-classes", type=int, default=8631, help="F8 classes (VGGFace2: 8631)")
    parser.add_argument("--batch-size", type=int, default=256, help="global batch size")
    parser.add_argument("--precision", default="float32,bfloat16",
                        help="comma-separated: float32, bfloat16, float16")
    parser.add_argument("--jit", default="both", choices=["off", "on", "both"], help="XLA compilation")
    parser.add_argument("--data", default="memory", choices=["memory", "tfrecords", "both"])
    parser.add_argument("--tfrecords", help="TFRecord directory (default: synthetic records written here)")
    parser.add_argument("--labels", help="labels directory of --tfrecords")
    parser.add_argument("--strategy", default="auto", help="as `deepface train --strategy`")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring (the first compiles)")
    parser.add_argument("--input-batches", type=int, default=30, help="batches timed for the input pipeline")
    parser.add_argument("--skip-input", action="store_true", help="do not measure the input pipeline alone")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parse_args(parser, SMOKE)
    precisions = args.precision.split(",")
    if not set(precisions) <= {"float32", "bfloat16", "float16"}:
        parser.error(f"--precision: float32, bfloat16 or float16, got {args.precision}")
    started = time.perf_counter()

    from deepface.model import get_config
    from deepface.train.fit import compile_classifier, epoch_batches_fn
    from deepface.train.inputs import prepare_data
    from deepface.train.strategy import choose_strategy, make_strategy

    config = get_config(args.preset)
    gpus = tf.config.list_physical_devices("GPU")
    plan = choose_strategy(args.strategy, env=os.environ, gpus=gpus, has_tpu=False)
    distribution = make_strategy(plan)
    devices = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    print(f"Strategy {plan.kind} ({distribution.num_replicas_in_sync} replica(s)); GPUs: {devices or 'none'}; "
          f"TensorFlow {tf.__version__}; preset {config.name}, {args.num_classes} classes, batch {args.batch_size}, "
          f"{', '.join(precisions)}; {args.warmup} + {args.steps} steps per configuration.", flush=True)

    sources = ["memory", "tfrecords"] if args.data == "both" else [args.data]
    jits = [False, True] if args.jit == "both" else [args.jit == "on"]
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_train_") as tmp:
        feeds = {}
        if "memory" in sources:
            per_replica = args.batch_size // distribution.num_replicas_in_sync
            batch = synthetic_batch(per_replica, config.image_size, args.num_classes)
            feeds["memory"] = lambda: in_memory_batches(distribution, batch)
        if "tfrecords" in sources or not args.skip_input:
            if args.tfrecords:
                tfrecords, labels = args.tfrecords, args.labels
            else:
                size = dict(identities=4, images_per_identity=4) if args.smoke else {}
                tfrecords, labels = make_tfrecords(Path(tmp), config.image_size, **size)
            data = prepare_data(tfrecords, labels, config, validation_fraction=0.0)
            pipeline = epoch_batches_fn(
                data, 0, global_batch_size=args.batch_size, steps_per_epoch=args.warmup + args.steps, seed=0,
                shuffle_buffer=10_000, augment=False,
            )
            feeds["tfrecords"] = lambda: distribution.distribute_datasets_from_function(pipeline)
        for source, precision, jit in ((s, p, j) for s in sources for p in precisions for j in jits):
            with distribution.scope():
                model = compile_classifier(
                    config, args.num_classes, precision=precision,
                    learning_rate=0.01 * args.batch_size / 128, momentum=0.9, weight_decay=0.0,
                    label_smoothing=0.0, jit_compile=jit, steps_per_execution=1, seed=0,
                )
            result = {"data": source, "precision": precision, "xla": jit,
                      **measure(model, feeds[source](), args.warmup, args.steps)}
            result["img_per_s"] = args.batch_size / result["median_step_s"]
            results.append(result)
            print(f"  {source:9s} {precision:8s} XLA {'on ' if jit else 'off'}: {result['img_per_s']:9.1f} img/s, "
                  f"{result['median_step_s'] * 1000:8.1f} ms/step (first step {result['first_step_s']:.1f} s)",
                  flush=True)
            del model
            keras.backend.clear_session()  # free the previous configuration's memory
        feeding = None
        if not args.skip_input:
            input_pipeline = epoch_batches_fn(
                data, 0, global_batch_size=args.batch_size, steps_per_epoch=args.input_batches + 1, seed=0,
                shuffle_buffer=10_000, augment=True,
            )
            feeding = input_rate(distribution.distribute_datasets_from_function(input_pipeline), args.batch_size,
                                 args.input_batches)

    print()
    header = (f"{'data':9s} {'XLA':4s} {'img/s':>9s} {'ms/step':>9s} {'min':>8s} {'max':>8s} {'first step s':>12s} "
              f"{'vs XLA off':>10s} {'precision':>9s} {'vs float32':>10s}")
    print(header)
    print("-" * len(header))
    def like(result, **changes):  # the result of the configuration of ``result`` with ``changes``
        return next((r for r in results if all(r[key] == changes.get(key, result[key])
                                               for key in ("data", "precision", "xla"))), None)

    for result in results:
        off, float32 = like(result, xla=False), like(result, precision="float32")
        print(f"{result['data']:9s} {'on' if result['xla'] else 'off':4s} {result['img_per_s']:9.1f} "
              f"{result['median_step_s'] * 1000:9.1f} {result['min_step_s'] * 1000:8.1f} "
              f"{result['max_step_s'] * 1000:8.1f} "
              f"{result['first_step_s']:12.1f} {result['img_per_s'] / off['img_per_s']:10.2f} "
              f"{result['precision']:>9s} {result['img_per_s'] / float32['img_per_s'] if float32 else 1:10.2f}")
    if feeding:
        fastest = max(results, key=lambda r: r["img_per_s"])
        fed = feeding["img_per_s"] >= fastest["img_per_s"]
        print(f"\ninput pipeline alone (TFRecords, batch {args.batch_size}, augmented): "
              f"{feeding['img_per_s']:.0f} img/s against the fastest step, {fastest['img_per_s']:.0f} img/s "
              f"({fastest['precision']}, XLA "
              f"{'on' if fastest['xla'] else 'off'}, {fastest['data']}): "
              f"{'fed' if fed else 'NOT fed: the input is the bottleneck'} "
              f"({feeding['img_per_s'] / fastest['img_per_s']:.2f}x)")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "devices": devices, "results": results,
                                               "input": feeding}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
