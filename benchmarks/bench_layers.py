"""Locally connected layers and the full DeepFace train step on CPU, side by side in one run.

Measures forward + backward (gradients for the input and the kernel) throughput of the L4, L5 and L6
shapes of the paper at batch 32 for:

- seed:        tf_keras LocallyConnected2D(implementation=1), the seed project's layer;
- ours:        deepface.layers.LocallyConnected2D (strided slices stacked position-major + batched matmul);
- ours+xla:    the same under tf.function(jit_compile=True);
- patches+einsum:  tf.image.extract_patches + einsum (the obvious port; an alternative we rejected);
- per-offset:  accumulate one einsum per kernel offset (no patch tensor; another rejected alternative).

Then a full `paper` train step (SGD, batch 32) of our model in a subprocess, reporting img/s and peak
RSS. (The seed's full model is not run: at batch 32 it ran out of memory on the CPU machines tried.)

Every variant is checked against deepface.layers at batch 2 before it is timed (the tests check our
layer against the seed). Each variant runs in its own process with a capped heap; medians and
ratios to the seed are printed.

    python benchmarks/bench_layers.py [--batch 32] [--rounds 5] [--skip-model] [--shapes L4,L5,L6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

SHAPES = {  # input (rows, cols, channels), filters, kernel, stride
    "L4": ((63, 63, 16), 16, 9, 1),
    "L5": ((55, 55, 16), 16, 7, 2),
    "L6": ((25, 25, 16), 16, 5, 1),
}


def _out(size, kernel, stride):
    return (size - kernel) // stride + 1


def patches_einsum(x, kernel, k, s, out_rows, out_cols):
    patches = tf.image.extract_patches(x, [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1], "VALID")
    patches = tf.reshape(patches, (tf.shape(x)[0], out_rows * out_cols, -1))
    y = tf.einsum("bpk,pkf->bpf", patches, kernel)
    return tf.reshape(y, (tf.shape(x)[0], out_rows, out_cols, -1))


def per_offset(x, kernel, k, s, out_rows, out_cols):
    channels = x.shape[-1]
    kernel = tf.reshape(kernel, (out_rows, out_cols, k, k, channels, -1))
    y = 0.0
    for i in range(k):
        for j in range(k):
            window = x[:, i : i + (out_rows - 1) * s + 1 : s, j : j + (out_cols - 1) * s + 1 : s, :]
            y += tf.einsum("brcz,rczf->brcf", window, kernel[:, :, i, j])
    return y


def make_variant(name, variant, grads):
    """The gradient function of one variant for one shape: x -> [dx, dkernel] (or [dkernel])."""
    (rows, cols, channels), filters, k, s = SHAPES[name]
    out_rows, out_cols = _out(rows, k, s), _out(cols, k, s)
    kernel_init = tf.random.stateless_normal((out_rows * out_cols, k * k * channels, filters), (1, 2), stddev=0.05)
    if variant == "seed":
        import tf_keras

        layer = tf_keras.layers.LocallyConnected2D(filters, k, strides=s, implementation=1)
        layer.build((None, rows, cols, channels))
        layer.kernel.assign(kernel_init)
        forward, variable = layer, layer.kernel
    elif variant.startswith("ours"):
        from deepface.layers import LocallyConnected2D

        layer = LocallyConnected2D(filters, k, strides=s)
        layer.build((None, rows, cols, channels))
        layer.kernel.assign(kernel_init)
        forward, variable = layer, layer.kernel.value
    else:
        variable = tf.Variable(kernel_init)
        fn = {"patches+einsum": patches_einsum, "per-offset": per_offset}[variant]
        forward = lambda x: fn(x, variable, k, s, out_rows, out_cols)  # noqa: E731

    @tf.function(jit_compile=variant.endswith("+xla"))
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(forward(x)))
        return tape.gradient(loss, [x, variable] if grads == "both" else [variable])

    return step


def layer_child(name, variant, batch, grads, rounds, steps):
    """Runs in a subprocess: times one variant; checks it against our layer first; prints JSON."""
    (rows, cols, channels), *_ = SHAPES[name]
    step = make_variant(name, variant, grads)
    small = tf.constant(np.random.default_rng(0).standard_normal((2, rows, cols, channels)), tf.float32)
    if variant != "ours":
        for expected, actual in zip(make_variant(name, "ours", grads)(small), step(small)):
            error = float(tf.reduce_max(tf.abs(expected - actual)) / tf.reduce_max(tf.abs(expected)))
            assert error < 1e-5, f"{name} {variant}: relative error {error} against deepface.layers"
    x = tf.constant(np.random.default_rng(0).standard_normal((batch, rows, cols, channels)), tf.float32)
    start = time.perf_counter()
    step(x)
    first = time.perf_counter() - start
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            step(x)
        rates.append(steps * batch / (time.perf_counter() - start))
    print(json.dumps({"img_s": float(np.median(rates)), "first_call_s": first, "peak_rss_gb": _peak_rss_gb()}))


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(args, memory_limit_gb):
    """Run this script in a child process whose heap is capped, so that a variant that needs more memory
    than the machine has fails alone instead of waking the kernel's OOM killer."""

    def cap():
        limit = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, preexec_fn=cap)
    if result.returncode != 0:
        return {"error": f"failed (exit {result.returncode}): needs more than the {memory_limit_gb:g} GB cap"
                if "alloc" in result.stderr.lower() or result.returncode < 0
                else result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def model_step_child(preset, batch, steps, jit):
    """Runs in a subprocess: train steps of our model; prints JSON with img/s and peak RSS."""
    import keras

    from deepface.model import build_classifier

    model = build_classifier(preset, 8631 if preset == "paper" else 100, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="sparse_categorical_crossentropy",
                  jit_compile=jit)
    size = model.input_shape[1]
    x = np.random.default_rng(0).random((batch, size, size, 3)).astype("float32")
    y = np.arange(batch) % 100
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"img_s": batch / float(np.median(times)), "first_step_s": first,
                      "peak_rss_gb": _peak_rss_gb()}))


VARIANTS = [  # (variant, batch, gradients)
    ("seed", None, "both"),
    ("seed", 8, "both"),
    ("seed", None, "kernel"),
    ("ours", None, "both"),
    ("ours+xla", None, "both"),
    ("patches+einsum", None, "both"),
    ("per-offset", None, "both"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--shapes", default="L4,L5,L6")
    parser.add_argument("--memory-limit-gb", type=float, default=10.0, help="heap cap of each child process")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--child-layer", nargs=3, metavar=("SHAPE", "VARIANT", "GRADS"))
    parser.add_argument("--child-model")
    parser.add_argument("--jit", action="store_true")
    args = parser.parse_args()
    if args.child_layer:
        return layer_child(*args.child_layer[:2], args.batch, args.child_layer[2], args.rounds, args.steps)
    if args.child_model:
        return model_step_child(args.child_model, args.batch, args.steps, args.jit)

    print(f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; forward + backward; "
          f"median of {args.rounds} rounds x {args.steps} steps; each variant in its own process "
          f"(heap capped at {args.memory_limit_gb:g} GB)")
    for name in args.shapes.split(","):
        print(f"\n{name}: input {SHAPES[name][0]}, {SHAPES[name][1]} filters, {SHAPES[name][2]}x{SHAPES[name][2]}"
              f" kernel, stride {SHAPES[name][3]}")
        print(f"  {'variant':<16}{'batch':>6}{'grads':>8}{'img/s':>9}{'x seed':>8}{'first s':>9}{'peak GB':>9}")
        seed_rate = None
        for variant, batch, grads in VARIANTS:
            batch = batch or args.batch
            r = run_child(["--child-layer", name, variant, grads, "--batch", str(batch), "--rounds",
                           str(args.rounds), "--steps", str(args.steps)], args.memory_limit_gb)
            if "error" in r:
                print(f"  {variant:<16}{batch:>6}{grads:>8}  {r['error']}")
                continue
            if variant == "seed" and grads == "both" and seed_rate is None:
                seed_rate = r["img_s"]
            ratio = f"{r['img_s'] / seed_rate:.2f}" if seed_rate else "-"
            print(f"  {variant:<16}{batch:>6}{grads:>8}{r['img_s']:>9.1f}{ratio:>8}{r['first_call_s']:>9.1f}"
                  f"{r['peak_rss_gb']:>9.2f}", flush=True)
    if not args.skip_model:
        print(f"\nFull `paper` train step (8631 classes, SGD momentum), batch {args.batch}, our model:")
        for jit in (False, True):
            child = ["--child-model", "paper", "--batch", str(args.batch), "--steps", "3"] + (["--jit"] if jit else [])
            r = run_child(child, args.memory_limit_gb)
            label = "xla" if jit else "no xla"
            if "error" in r:
                print(f"  {label:<8} {r['error']}")
            else:
                print(f"  {label:<8} {r['img_s']:.2f} img/s, first step {r['first_step_s']:.1f} s, "
                      f"peak RSS {r['peak_rss_gb']:.2f} GB", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
