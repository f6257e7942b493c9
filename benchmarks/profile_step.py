"""Where the time of one DeepFace train step goes: each layer's forward and backward, the optimizer and the
input pipeline, next to the whole step and the machine's matmul peak, all timed in one run.

Every item is its own ``tf.function`` and is timed once per round, the items interleaved round after
round (a shared machine's load then weighs on all of them alike); the table shows medians:

- ``matmul f32`` / ``matmul bf16``: ``tf.linalg.matmul`` of two 4096x4096 matrices, the machine's peak;
- each layer (C1 ... F8): its forward alone, and forward + backward with a ``GradientTape`` (the gradients
  of its weights and, except for C1 whose input is the image, of its input), on the activations a batch
  really gives it; backward = the difference. F8 includes the loss;
- ``optimizer``: the compiled model's optimizer (the product's SGD with momentum, `MomentumSGD`) applying one step of
  gradients to every weight;
- ``full step``: ``model.train_on_batch`` of the compiled model (what ``fit`` runs, Keras included);
- ``input``: batches from TFRecords through `deepface.data.make_dataset` (the training pipeline), made
  here from a small synthetic dataset, from a fresh iterator each round (nothing runs in the background
  while the other items are timed).

GFLOP counts the multiply-adds of the convolutions, the locally connected and the dense layers (two
flops each) of the forward pass, the weight gradients and the input gradients.

    python benchmarks/profile_step.py [--batch 32] [--precision float32|bfloat16] [--rounds 5] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import parse_args  # noqa: E402

# --smoke: every code path at tiny sizes (seconds); the matmul peak at 256 (see main).
SMOKE = {"preset": "tiny", "num_classes": 10, "batch": 4, "rounds": 2, "input_steps": 1}
PEAK_SIZE = 4096


def layer_macs(layer, output_shape) -> int:
    """Multiply-adds of one image's forward pass through ``layer`` (0 for layers without a kernel)."""
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return 0
    size = int(np.prod(kernel.shape))
    if isinstance(layer, keras.layers.Conv2D):
        return size * int(output_shape[1]) * int(output_shape[2])
    return size  # Dense, LocallyConnected2D: one multiply-add per kernel element


def finish(value) -> None:
    """Wait for a result (TensorFlow runs eagerly, but an op's output is read to be sure)."""
    for tensor in tf.nest.flatten(value):
        if isinstance(tensor, tf.Tensor):
            tf.reshape(tensor, [-1])[:1].numpy()


def layer_items(model, images, labels, loss_fn, seed: int = 0) -> tuple[list[dict], dict]:
    """One forward and one forward + backward ``tf.function`` per layer, on the activations ``images``
    give each layer; returns the items and each layer's forward GFLOP per batch."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    probe = keras.Model(model.input, [layer.input for layer in layers])
    inputs = [tf.convert_to_tensor(x) for x in probe(images, training=True)]
    rng = np.random.default_rng(seed)
    items, flops = [], {}
    for layer, x in zip(layers, inputs):
        y = layer(x, training=True)
        flops[layer.name] = 2 * layer_macs(layer, y.shape) * int(x.shape[0]) / 1e9
        last = layer is layers[-1]
        upstream = tf.cast(tf.constant(rng.standard_normal(y.shape) * 1e-3, tf.float32), y.dtype)
        watch_input = layer is not layers[0]

        def forward(x, layer=layer, last=last):
            y = layer(x, training=True)
            return loss_fn(labels, y) if last else y

        def forward_backward(x, layer=layer, last=last, upstream=upstream, watch_input=watch_input):
            with tf.GradientTape() as tape:
                if watch_input:
                    tape.watch(x)
                y = forward(x, layer, last)
            sources = ([x] if watch_input else []) + [w.value for w in layer.trainable_weights]
            return tape.gradient(y, sources, output_gradients=None if last else upstream)

        forward_fn, backward_fn = tf.function(forward), tf.function(forward_backward)
        items.append({"name": f"{layer.name} fwd", "layer": layer.name, "fn": lambda f=forward_fn, x=x: f(x)})
        items.append({"name": f"{layer.name} fwd+bwd", "layer": layer.name,
                      "fn": lambda f=backward_fn, x=x: f(x), "input_grad": watch_input})
    return items, flops


def optimizer_item(model) -> dict:
    """One optimizer step on every trainable weight, with fixed small gradients."""
    variables = model.trainable_variables
    grads = [tf.fill(v.shape, tf.constant(1e-6, v.dtype)) for v in variables]

    @tf.function
    def apply():
        model.optimizer.apply(grads, variables)
        return variables[0].value

    return {"name": "optimizer", "fn": apply}


def input_item(root: Path, image_size: int, batch: int, steps: int, smoke: bool) -> dict:
    """Batches from TFRecords (the training pipeline) from a fresh iterator: time per batch after the first."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train import make_tfrecords

    from deepface.data import make_dataset

    tfrecords, _ = make_tfrecords(root, image_size, identities=4 if smoke else 16,
                                  images_per_identity=4 if smoke else 12)
    dataset = make_dataset(tfrecords, batch_size=batch, image_size=image_size, training=True, repeat=True,
                           seed=0, augment=True)

    def pull():
        iterator = iter(dataset)
        next(iterator)  # fills the shuffle buffer, starts the threads
        start = time.perf_counter()
        for _ in range(steps):
            images, _ = next(iterator)
        elapsed = (time.perf_counter() - start) / steps
        del iterator
        return elapsed

    return {"name": "input", "timer": pull}


def matmul_items() -> list[dict]:
    items = []
    for dtype in ("float32", "bfloat16"):
        a = tf.cast(tf.random.stateless_uniform((PEAK_SIZE, PEAK_SIZE), (1, 2), -1, 1), dtype)
        fn = tf.function(lambda a=a: tf.linalg.matmul(a, a))
        items.append({"name": f"matmul {'f32' if dtype == 'float32' else 'bf16'}", "fn": fn,
                      "gflop": 2 * PEAK_SIZE**3 / 1e9})
    return items


def time_item(item) -> float:
    if "timer" in item:
        return item["timer"]()
    start = time.perf_counter()
    finish(item["fn"]())
    return time.perf_counter() - start


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--num-classes", type=int, default=8631)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--input-steps", type=int, default=4, help="batches timed per round for the input")
    parser.add_argument("--jit", action="store_true", help="compile the full step with XLA")
    parser.add_argument("--skip-input", action="store_true")
    args = parse_args(parser, SMOKE)
    if args.smoke:
        global PEAK_SIZE
        PEAK_SIZE = 256

    from deepface.model import build_classifier, get_config
    from deepface.train.momentum import MomentumSGD

    config = get_config(args.preset)
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16"}[args.precision]
    model = build_classifier(config, args.num_classes, seed=0, dtype_policy=policy)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=MomentumSGD(0.01, momentum=0.9), loss=loss_fn, jit_compile=args.jit)
    rng = np.random.default_rng(0)
    size = config.image_size
    images = tf.constant(rng.random((args.batch, size, size, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, args.num_classes, args.batch), tf.int32)
    model.optimizer.build(model.trainable_variables)

    print(f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}; TensorFlow {tf.__version__}, Keras "
          f"{keras.__version__}; preset {config.name}, {args.num_classes} classes, batch {args.batch}, "
          f"{args.precision}; median of {args.rounds} interleaved rounds.", flush=True)
    items, flops = layer_items(model, images, labels, loss_fn)
    items += [optimizer_item(model),
              {"name": "full step", "fn": lambda: model.train_on_batch(images, labels, return_dict=True)["loss"]}]
    items += matmul_items()
    with tempfile.TemporaryDirectory(prefix="profile_step_") as tmp:
        if not args.skip_input:
            items.append(input_item(Path(tmp), size, args.batch, args.input_steps, args.smoke))
        for item in items:  # tracing and the first call (compiling) are not timed
            item["first_s"] = time_item(item)
        for item in items:
            item["times"] = []
        for _ in range(args.rounds):
            for item in items:
                item["times"].append(time_item(item))
    seconds = {item["name"]: statistics.median(item["times"]) for item in items}
    step = seconds["full step"]
    peak = {name: 2 * PEAK_SIZE**3 / 1e9 / seconds[f"matmul {name}"] for name in ("f32", "bf16")}

    print(f"\n{'item':<10}{'fwd ms':>9}{'bwd ms':>9}{'total ms':>10}{'of step':>9}{'GFLOP':>8}{'GFLOP/s':>9}"
          f"{'of f32 peak':>12}")
    total_gflop, parts = 0.0, 0.0
    for name in dict.fromkeys(item["layer"] for item in items if "layer" in item):
        forward, both = seconds[f"{name} fwd"], seconds[f"{name} fwd+bwd"]
        input_grad = next(item["input_grad"] for item in items if item["name"] == f"{name} fwd+bwd")
        gflop = flops[name] * (3 if input_grad else 2)
        total_gflop += gflop
        parts += both
        rate = f"{gflop / both:9.1f}{gflop / both / peak['f32']:12.1%}" if gflop else ""
        print(f"{name:<10}{forward * 1e3:9.1f}{(both - forward) * 1e3:9.1f}{both * 1e3:10.1f}{both / step:9.1%}"
              f"{gflop:8.2f}{rate}")
    for name in ("optimizer", "input"):
        if name in seconds:
            parts += seconds[name] if name == "optimizer" else 0.0
            print(f"{name:<10}{'':>9}{'':>9}{seconds[name] * 1e3:10.1f}{seconds[name] / step:9.1%}")
    print(f"{'sum':<10}{'':>9}{'':>9}{parts * 1e3:10.1f}{parts / step:9.1%}{total_gflop:8.2f}   "
          "(layers + optimizer; the input runs alongside the step in training)")
    print(f"{'full step':<10}{'':>9}{'':>9}{step * 1e3:10.1f}{1:9.0%}{total_gflop:8.2f}{total_gflop / step:9.1f}"
          f"{total_gflop / step / peak['f32']:12.1%}")
    print(f"\nfull step: {args.batch / step:.1f} img/s ({total_gflop / args.batch:.2f} GFLOP per image); "
          f"matmul {PEAK_SIZE}^2 peak: float32 {peak['f32']:.0f} GFLOP/s, bfloat16 {peak['bf16']:.0f} GFLOP/s; "
          f"the step runs at {total_gflop / step / peak['f32']:.1%} of the float32 peak, "
          f"{total_gflop / step / peak['bf16']:.1%} of the bfloat16 peak.")
    if "input" in seconds:
        print(f"input pipeline alone: {args.batch / seconds['input']:.0f} img/s "
              f"({seconds['input'] / step:.1%} of a step's time on the same cores)")
    print(f"first call of the full step {next(i['first_s'] for i in items if i['name'] == 'full step'):.1f} s; "
          f"peak RSS {peak_rss_gb():.2f} GB; load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
