"""Locally connected layers and the full DeepFace train step on CPU: the product and its alternatives side
by side in one run.

Layers: forward + backward (gradients for the input and the kernel) throughput of the L4, L5 and L6
shapes of the paper at batch 32, each variant in its own process (heap capped) and checked against
deepface.layers at batch 2 before it is timed (the tests check our layer against the seed):

- seed:           tf_keras LocallyConnected2D(implementation=1), the seed project's layer;
- ours:           deepface.layers.LocallyConnected2D (patch gather + batched matmul with positions as the
                  batch, one output row at a time forward and backward; the patches' gradient added back
                  by col2im over kernel columns under XLA and an in-place add of the rows it covers);
- ours+xla:       the same, the whole forward + backward under tf.function(jit_compile=True);
- call-xla:       only the layer's call under XLA (its gradient compiled with it);
- bf16:           ours under the mixed_bfloat16 policy (checked to bfloat16 tolerance);
- col2im:         every patch at once (one 500 MB patch tensor for L4 at batch 32), the gather's gradient
                  as col2im over every kernel offset under XLA (our previous version);
- segment-sum:    every patch at once, the gather's own gradient (TensorFlow's UnsortedSegmentSum; the
                  version before);
- col2im-no-xla:  col2im without XLA;
- scatter-nd:     the gradient as tf.scatter_nd (adds duplicates);
- sorted-segsum:  the gradient as a permutation gather + sorted segment_sum;
- 0/1-matmul:     the gradient as two matmuls (einsum) against fixed 0/1 row and column selection matrices;
- patches+einsum: tf.image.extract_patches + einsum (the obvious port);
- per-offset:     accumulate one einsum per kernel offset (no patch tensor).

Train step of the `paper` model (SGD momentum, batch 32), in child processes whose variants run
interleaved (one step of each per round, medians and the median of the per-round ratios to the first
variant), next to tf.linalg.matmul 4096x4096 in float32 and bfloat16 (the machine's peak):

- gradient: ours, col2im, segment-sum, ours with the whole step under XLA (jit_compile);
- layout: ours (blocks of output rows) against col2im (every position at once), alone (try --batch 128);
- precision: float32, mixed_bfloat16, mixed_bfloat16 with L4-L6 computing in float32;
- batch: 32, 64, 128 (images per second);
- optimizer: the product's SGD with momentum (deepface.train.momentum.MomentumSGD: one fused op per
  weight) against Keras' SGD (the same arithmetic in five elementwise passes);
- threads: TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, one process per setting, alternated.

    python benchmarks/bench_layers.py [--batch 32] [--rounds 5] [--skip-model] [--shapes L4,L5,L6]
        [--groups gradient,precision,batch,optimizer,threads] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
SMOKE_SHAPES = {"L4": ((19, 19, 4), 4, 9, 1), "L5": ((11, 11, 4), 4, 7, 2), "L6": ((7, 7, 4), 4, 5, 1)}
PEAK_SIZE = 4096


def _out(size, kernel, stride):
    return (size - kernel) // stride + 1


# ------------------------------------------------------------------------------------------------------
# Layer alternatives
# ------------------------------------------------------------------------------------------------------


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


def gather_gradient_layer(kind: str):
    """deepface.layers.LocallyConnected2D gathering every patch at once, with ``kind`` as the gather's gradient."""
    from deepface.layers import LocallyConnected2D, col2im

    class Variant(LocallyConnected2D):
        def apply_kernels(self, inputs):
            return tf.linalg.matmul(self.kernel.value, self.extract_patches(inputs), transpose_a=True)

        def extract_patches(self, inputs):
            _, rows, cols, channels = inputs.shape
            size, indices = rows * cols * channels, self._patch_indices(rows, cols, channels)
            flat = tf.reshape(tf.transpose(inputs, (1, 2, 3, 0)), (size, -1))
            shape = (self.out_rows * self.out_cols, self.kernel.shape[1], -1)
            if kind == "segment-sum":  # tf.gather's own gradient
                return tf.reshape(tf.gather(flat, indices), shape)
            if kind in ("col2im", "col2im-no-xla"):
                shape_in = (self.out_rows, self.out_cols, -1, tf.shape(flat)[1])

                @tf.function(jit_compile=kind == "col2im")
                def scatter(grad):
                    return tf.reshape(col2im(tf.reshape(grad, shape_in), kernel=self.kernel_size, strides=self.strides,
                                             rows=rows, cols=cols, channels=channels), (size, -1))
            elif kind == "scatter-nd":
                def scatter(grad):
                    return tf.scatter_nd(indices[:, None], grad, (size, tf.shape(grad)[1]))
            elif kind == "sorted-segsum":
                order = np.argsort(indices, kind="stable").astype("int32")

                def scatter(grad):
                    return tf.math.segment_sum(tf.gather(grad, order), indices[order])
            elif kind == "0/1-matmul":
                (kr, kc), (sr, sc) = self.kernel_size, self.strides
                select_rows = np.zeros((self.out_rows, kr, rows), np.float32)
                select_cols = np.zeros((self.out_cols, kc, cols), np.float32)
                for r in range(self.out_rows):
                    select_rows[r, np.arange(kr), r * sr + np.arange(kr)] = 1
                for c in range(self.out_cols):
                    select_cols[c, np.arange(kc), c * sc + np.arange(kc)] = 1

                def scatter(grad):
                    grad = tf.reshape(grad, (self.out_rows, self.out_cols, kr, kc, channels, -1))
                    grad = tf.einsum("rcijzb,cjy->rizyb", grad, tf.constant(select_cols, grad.dtype))
                    grad = tf.einsum("rizyb,rix->xyzb", grad, tf.constant(select_rows, grad.dtype))
                    return tf.reshape(grad, (size, -1))
            else:
                raise ValueError(kind)

            @tf.custom_gradient
            def gather(flat):
                return tf.gather(flat, indices), scatter

            return tf.reshape(gather(flat), shape)

    return Variant


GATHER_GRADIENTS = ("col2im", "segment-sum", "col2im-no-xla", "scatter-nd", "sorted-segsum", "0/1-matmul")


def make_variant(shapes, name, variant, grads):
    """The gradient function of one variant for one shape: x -> [dx, dkernel] (or [dkernel])."""
    (rows, cols, channels), filters, k, s = shapes[name]
    out_rows, out_cols = _out(rows, k, s), _out(cols, k, s)
    kernel_init = tf.random.stateless_normal((out_rows * out_cols, k * k * channels, filters), (1, 2), stddev=0.05)
    if variant == "seed":
        import tf_keras

        layer = tf_keras.layers.LocallyConnected2D(filters, k, strides=s, implementation=1)
        layer.build((None, rows, cols, channels))
        layer.kernel.assign(kernel_init)
        forward, variable = layer, layer.kernel
    elif variant in ("ours", "ours+xla", "call-xla", "bf16") or variant in GATHER_GRADIENTS:
        from deepface.layers import LocallyConnected2D

        cls = gather_gradient_layer(variant) if variant in GATHER_GRADIENTS else LocallyConnected2D
        layer = cls(filters, k, strides=s, dtype="mixed_bfloat16" if variant == "bf16" else None)
        layer.build((None, rows, cols, channels))
        layer.kernel.assign(kernel_init)
        forward, variable = layer, layer.kernel.value
        if variant == "call-xla":
            forward = tf.function(layer, jit_compile=True)
    else:
        variable = tf.Variable(kernel_init)
        fn = {"patches+einsum": patches_einsum, "per-offset": per_offset}[variant]
        forward = lambda x: fn(x, variable, k, s, out_rows, out_cols)  # noqa: E731

    @tf.function(jit_compile=variant.endswith("+xla"))
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(tf.cast(forward(x), tf.float32)))
        return tape.gradient(loss, [x, variable] if grads == "both" else [variable])

    return step


def layer_child(shapes, jobs, rounds, steps):
    """Runs in a subprocess: times each job (shape, variant, batch, grads), each checked against our layer
    first; prints a JSON list."""
    results, references = [], {}
    for name, variant, batch, grads in jobs:
        (rows, cols, channels), *_ = shapes[name]
        step = make_variant(shapes, name, variant, grads)
        small = tf.constant(np.random.default_rng(0).standard_normal((2, rows, cols, channels)), tf.float32)
        if variant != "ours":
            tolerance = 3e-2 if variant == "bf16" else 1e-5
            if (name, grads) not in references:
                references[(name, grads)] = make_variant(shapes, name, "ours", grads)(small)
            for expected, actual in zip(references[(name, grads)], step(small)):
                error = float(tf.reduce_max(tf.abs(expected - actual)) / tf.reduce_max(tf.abs(expected)))
                assert error < tolerance, f"{name} {variant}: relative error {error} against deepface.layers"
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
        results.append({"img_s": float(np.median(rates)), "first_call_s": first, "peak_rss_gb": _peak_rss_gb()})
    print(json.dumps(results))


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(args, memory_limit_gb, env=None):
    """Run this script in a child process whose heap is capped, so that a variant that needs more memory
    than the machine has fails alone instead of waking the kernel's OOM killer."""

    def cap():
        limit = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, preexec_fn=cap,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        return {"error": f"failed (exit {result.returncode}): needs more than the {memory_limit_gb:g} GB cap"
                if "alloc" in result.stderr.lower() or result.returncode < 0
                else result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------
# The train step
# ------------------------------------------------------------------------------------------------------


# name: (gather gradient, dtype policy, L4-L6 dtype, step under XLA, optimizer)
MODEL_VARIANTS = {
    "ours": ("ours", "float32", None, False, "sgd"),
    "col2im": ("col2im", "float32", None, False, "sgd"),
    "segment-sum": ("segment-sum", "float32", None, False, "sgd"),
    "ours, step xla": ("ours", "float32", None, True, "sgd"),
    "bf16": ("ours", "mixed_bfloat16", None, False, "sgd"),
    "bf16, L4-L6 f32": ("ours", "mixed_bfloat16", "float32", False, "sgd"),
    "keras sgd": ("ours", "float32", None, False, "keras-sgd"),
}
GROUPS = {  # group: [(variant, batch multiple)]; the first is the reference of the ratios
    "gradient": [("ours", 1), ("col2im", 1), ("segment-sum", 1), ("ours, step xla", 1)],
    "layout": [("ours", 1), ("col2im", 1)],
    "precision": [("ours", 1), ("bf16", 1), ("bf16, L4-L6 f32", 1)],
    "batch": [("ours", 1), ("ours", 2), ("ours", 4)],
    "optimizer": [("ours", 1), ("keras sgd", 1)],
}


def build_model(preset, num_classes, variant):
    import keras

    import deepface.model
    from deepface.layers import LocallyConnected2D
    from deepface.train.momentum import MomentumSGD

    gradient, policy, local_dtype, jit, optimizer = MODEL_VARIANTS[variant]
    cls = LocallyConnected2D if gradient == "ours" else gather_gradient_layer(gradient)
    if local_dtype:
        base = cls

        class cls(base):  # noqa: N801
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "dtype": local_dtype})

    original = deepface.model.LocallyConnected2D
    deepface.model.LocallyConnected2D = cls
    try:
        model = deepface.model.build_classifier(preset, num_classes, seed=0, dtype_policy=policy)
    finally:
        deepface.model.LocallyConnected2D = original
    sgd = keras.optimizers.SGD if optimizer == "keras-sgd" else MomentumSGD
    model.compile(optimizer=sgd(0.001, momentum=0.9), loss="sparse_categorical_crossentropy", jit_compile=jit)
    return model


def model_group_child(groups, preset, num_classes, batch, rounds):
    """Runs in a subprocess: for each group, the train steps of its variants interleaved round by round, and
    the matmul peak in the same rounds; prints JSON."""
    matrices = {dtype: tf.cast(tf.random.stateless_uniform((PEAK_SIZE, PEAK_SIZE), (1, 2), -1, 1), dtype)
                for dtype in ("float32", "bfloat16")}
    matmul = tf.function(tf.linalg.matmul)
    output, built = {}, {}  # a variant's model serves every group it is in
    for group in groups:
        entries = GROUPS[group]
        for variant, _ in entries:
            if variant not in built:
                built[variant] = build_model(preset, num_classes, variant)
        models = {variant: built[variant] for variant, _ in entries}
        size = models[entries[0][0]].input_shape[1]
        rng = np.random.default_rng(0)
        data = {batch * multiple: (tf.constant(rng.random((batch * multiple, size, size, 3)), tf.float32),
                                   tf.constant(rng.integers(0, num_classes, batch * multiple), tf.int32))
                for _, multiple in entries}

        def run(key, models=models, data=data):
            start = time.perf_counter()
            if key in matrices:
                matmul(matrices[key], matrices[key])[0, 0].numpy()
            else:
                float(models[key[0]].train_on_batch(*data[key[1]]))
            return time.perf_counter() - start

        keys = [(variant, batch * multiple) for variant, multiple in entries] + list(matrices)
        first = {key: run(key) for key in keys}
        times = {key: [] for key in keys}
        for _ in range(rounds):
            for key in keys:
                times[key].append(run(key))
        reference = [s / keys[0][1] for s in times[keys[0]]]  # seconds per image
        rows = [{"variant": variant, "batch": n, "img_s": n / statistics.median(times[(variant, n)]),
                 "ratio": statistics.median(r / (s / n) for r, s in zip(reference, times[(variant, n)])),
                 "first_s": first[(variant, n)]}
                for variant, n in keys[: len(entries)]]
        peak = {dtype: 2 * PEAK_SIZE**3 / statistics.median(times[dtype]) / 1e9 for dtype in matrices}
        output[group] = {"rows": rows, "peak": peak, "peak_rss_gb": _peak_rss_gb()}
    print(json.dumps(output))


def threads_child(preset, num_classes, batch, steps):
    """Runs in a subprocess: the median step time of our model (threads from the environment); JSON."""
    model = build_model(preset, num_classes, "ours")
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, size, size, 3)).astype("float32"), rng.integers(0, num_classes, batch)
    model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    print(json.dumps({"step_s": statistics.median(times), "peak_rss_gb": _peak_rss_gb()}))


THREADS = [("default", {}), ("intra 2, inter 1", {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
           ("intra 1, inter 2", {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"})]


def print_model_group(group, result, flops_per_image):
    if "error" in result:
        print(f"  {group}: {result['error']}")
        return
    peak = result["peak"]
    for row in result["rows"]:
        fraction = row["img_s"] * flops_per_image / 1e9 / peak["float32"]
        print(f"  {group:<10}{row['variant']:<18}{row['batch']:>6}{row['img_s']:>9.2f}{row['ratio']:>9.2f}"
              f"{fraction:>10.1%}{row['first_s']:>9.1f}", flush=True)
    print(f"  {'':<10}matmul {PEAK_SIZE}: float32 {peak['float32']:.0f} GFLOP/s, bfloat16 {peak['bfloat16']:.0f} "
          f"GFLOP/s; peak RSS of the group's process {result['peak_rss_gb']:.2f} GB", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed round")
    parser.add_argument("--shapes", default="L4,L5,L6", help='layer shapes ("": none)')
    parser.add_argument("--variants", help="layer variants (default: all)")
    parser.add_argument("--groups", default="gradient,precision,batch,optimizer,threads", help="train step groups")
    parser.add_argument("--memory-limit-gb", type=float, default=14.0, help="heap cap of each child process")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="every code path at tiny sizes")
    parser.add_argument("--child-layer", help="JSON list of [shape, variant, batch, grads]")
    parser.add_argument("--child-group")
    parser.add_argument("--child-threads", action="store_true")
    args = parser.parse_args()
    global PEAK_SIZE
    shapes, preset, num_classes = SHAPES, "paper", 8631
    if args.smoke:
        shapes, preset, num_classes, PEAK_SIZE = SMOKE_SHAPES, "tiny", 10, 256
        if not args.child_layer and not args.child_group and not args.child_threads:
            args.batch, args.rounds, args.steps, args.shapes = 4, 1, 1, "L5"  # L5: strided, the general case
    smoke = ["--smoke"] if args.smoke else []
    child_args = ["--rounds", str(args.rounds), "--steps", str(args.steps), *smoke]
    if args.child_layer:
        return layer_child(shapes, json.loads(args.child_layer), args.rounds, args.steps)
    if args.child_group:
        return model_group_child(args.child_group.split(","), preset, num_classes, args.batch, args.rounds)
    if args.child_threads:
        return threads_child(preset, num_classes, args.batch, args.steps)

    print(f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}; forward + backward; "
          f"median of {args.rounds} rounds x {args.steps} steps; each variant in its own process "
          f"(heap capped at {args.memory_limit_gb:g} GB)")
    layer_variants = [  # (variant, batch, gradients)
        ("seed", None, "both"), ("seed", 8, "both"), ("seed", None, "kernel"), ("ours", None, "both"),
        ("ours+xla", None, "both"), ("call-xla", None, "both"), ("bf16", None, "both"),
        *((kind, None, "both") for kind in GATHER_GRADIENTS),
        ("patches+einsum", None, "both"), ("per-offset", None, "both"),
    ]
    if args.variants:
        chosen = args.variants.split(",")
        layer_variants = [v for v in layer_variants if v[0] in chosen]
    if args.smoke:  # the seed's other rows run the same code
        layer_variants = [v for v in layer_variants if v[0] != "seed" or v == ("seed", None, "both")]
    jobs = [(name, variant, batch or args.batch, grads) for name in filter(None, args.shapes.split(","))
            for variant, batch, grads in layer_variants]
    # each variant in its own process; a smoke run runs them all in one (process start-up dominates)
    batches = [jobs] if args.smoke else [[job] for job in jobs]
    results = []
    for batch_of_jobs in batches:
        result = run_child(["--child-layer", json.dumps(batch_of_jobs), *child_args], args.memory_limit_gb)
        results += result if isinstance(result, list) else [result] * len(batch_of_jobs)
    shown, seed_rate = None, None
    for (name, variant, batch, grads), r in zip(jobs, results):
        if name != shown:
            shown, seed_rate = name, None
            print(f"\n{name}: input {shapes[name][0]}, {shapes[name][1]} filters, {shapes[name][2]}x"
                  f"{shapes[name][2]} kernel, stride {shapes[name][3]}")
            print(f"  {'variant':<16}{'batch':>6}{'grads':>8}{'img/s':>9}{'x seed':>8}{'first s':>9}{'peak GB':>9}")
        if "error" in r:
            print(f"  {variant:<16}{batch:>6}{grads:>8}  {r['error']}")
            continue
        if variant == "seed" and grads == "both" and batch == args.batch:
            seed_rate = r["img_s"]
        ratio = f"{r['img_s'] / seed_rate:.2f}" if seed_rate else "-"
        print(f"  {variant:<16}{batch:>6}{grads:>8}{r['img_s']:>9.1f}{ratio:>8}{r['first_call_s']:>9.1f}"
              f"{r['peak_rss_gb']:>9.2f}", flush=True)
    if not args.skip_model:
        from profile_step import layer_macs

        from deepface.model import build_classifier

        model = build_classifier(preset, num_classes)
        flops = 0
        for layer in model.layers[1:]:  # forward, weight gradients, input gradients (none for C1)
            flops += 2 * layer_macs(layer, layer.output.shape) * (2 if layer is model.layers[1] else 3)
        del model
        print(f"\nTrain step of `{preset}` ({num_classes} classes, SGD momentum), {flops / 1e9:.2f} GFLOP per "
              f"image; each group in one process, its variants interleaved, {args.rounds} rounds; x first = "
              "median of the per-round ratios to the group's first row (per image)")
        print(f"  {'group':<10}{'variant':<18}{'batch':>6}{'img/s':>9}{'x first':>9}{'f32 peak':>10}{'first s':>9}")
        groups = args.groups.split(",")
        step_groups = [g for g in groups if g in GROUPS]
        for chosen in ([step_groups] if args.smoke else [[g] for g in step_groups]) if step_groups else []:
            result = run_child(["--child-group", ",".join(chosen), "--batch", str(args.batch), *child_args],
                               args.memory_limit_gb)
            for group in chosen:
                print_model_group(group, result if "error" in result else result[group], flops)
        if "threads" in groups:
            settings = THREADS[1:2] if args.smoke else THREADS  # a smoke run: one child, one setting
            times = {label: [] for label, _ in settings}
            for _ in range(max(1, args.rounds // 2)):
                for label, env in settings:
                    r = run_child(["--child-threads", "--batch", str(args.batch), "--steps", str(args.steps + 1),
                                   *smoke], args.memory_limit_gb, env)
                    times[label].append(r.get("step_s", float("nan")))
            reference = times[settings[0][0]]
            for label, seconds in times.items():
                ratio = statistics.median(a / b for a, b in zip(reference, seconds))
                print(f"  {'threads':<10}{label:<18}{args.batch:>6}{args.batch / statistics.median(seconds):>9.2f}"
                      f"{ratio:>9.2f}   (a process per setting, alternated)", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
