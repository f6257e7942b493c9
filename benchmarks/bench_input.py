"""Input pipeline throughput: deepface.data.make_dataset next to bare JPEG decoding of the same records.

Writes a few thousand 152x152 synthetic face JPEGs (deepface.synth) as 4 TFRecord shards of schema v1
in a temporary directory, then, for each CPU count asked (the process pinned to that many cores with
sched_setaffinity, TF intra/inter-op threads set alike), measures the images delivered by:

- ``bare decode, python loop``: a Python loop over the records: parse + tf.io.decode_jpeg, eagerly;
- ``bare decode, tf.data``: TFRecordDataset -> map(parse + decode_jpeg, AUTOTUNE), nothing else (the
  baseline);
- ``bare decode + uint8 batch``: the same, batched: the least work that delivers batches;
- ``make_dataset(...)``: the product, shards -> float32 [0, 1] batches: evaluation order, training with
  shuffling, training with shuffling and augmentation (extra work the baseline does not do); on
  "stage shards" (a manifest like the tfrecords stage's says they hold JPEGs at the training size, so
  no record needs a size check; training passes its shards as such a list) and on the same shards
  without a manifest ("unknown size": every record's size is checked).

Two rates per method: images per wall-clock second, and images per CPU-second of the process (user +
system time of all its threads), which is the rate per core and stays meaningful on a shared machine
where other jobs take cores away. Every dataset is built once, outside the timing (building one traces
its functions in Python, a cost paid once per training run, not per epoch), and each repeat drains a
new epoch of it inside the graph (``Dataset.reduce``), so Python iteration costs nothing; the repeats
of all methods are interleaved and each figure is the median.
Ratios compare images per CPU-second with the baseline.
Run: ``python benchmarks/bench_input.py [--help]``; ``--smoke`` measures every method once on a few small
records and one core (options given still win): a check that the benchmark runs, its figures meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import parse_args

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BASELINE = "bare decode, tf.data"
BATCHED_BASELINE = "bare decode + uint8 batch"
UNKNOWN_SIZE = "unknown_size"  # subdirectory: the shards without a manifest
# --smoke: a few records of the tiny preset's size in small batches, one repeat, one core.
SMOKE = {"records": 32, "image_size": 80, "batch_size": 8, "repeats": 1, "cores": "1"}


def write_records(directory: Path, records: int, image_size: int, shards: int = 4, seed: int = 0) -> int:
    """``records`` synthetic faces as JPEG (quality 90) in ``train-0000k-of-0000n.tfrecord``; returns bytes."""
    import numpy as np
    import tensorflow as tf

    from deepface.records import make_example
    from deepface.synth import draw_identity, encode_jpeg, render_face

    rng = np.random.default_rng(seed)
    identities = [draw_identity(rng) for _ in range(50)]
    total_bytes = 0
    names = [f"train-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    writers = [tf.io.TFRecordWriter(str(directory / name)) for name in names]
    for index in range(records):
        label = index % len(identities)
        encoded = encode_jpeg(render_face(identities[label], rng, image_size, image_size), 90)
        total_bytes += len(encoded)
        writers[index % shards].write(make_example(encoded, label, f"n{label:06d}", f"{index}.jpg"))
    for writer in writers:
        writer.close()
    # What `deepface tfrecords` says of shards it re-encoded at the training size (enables the fast path).
    manifest = {"encoding": "jpeg-resized", "image_size": image_size, "schema_version": 1,
                "shards": [{"file": name} for name in names]}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    # The same shards with no manifest: the reader cannot know their image size and checks every record.
    (directory / UNKNOWN_SIZE).mkdir()
    for name in names:
        os.link(directory / name, directory / UNKNOWN_SIZE / name)
    return total_bytes


def measure(directory: str, cores: int, repeats: int, batch_size: int, image_size: int) -> dict[str, dict]:
    """Images per wall-second and per CPU-second of every method, ``repeats`` times each (interleaved),
    on ``cores`` pinned CPUs: ``{method: {"wall": [...], "cpu": [...]}}``."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])  # before TF starts its threads
    import tensorflow as tf

    from deepface.data import list_shards, make_dataset, parse_example

    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    shards = list_shards(directory, split="train")

    def decode(serialized):
        return tf.io.decode_jpeg(parse_example(serialized)["image/encoded"], channels=3)

    def python_loop() -> int:
        count = 0
        for serialized in tf.data.TFRecordDataset(shards):
            decode(serialized)
            count += 1
        return count

    def drain(dataset: tf.data.Dataset, batched: bool) -> int:
        if batched:  # batches of images, or of (images, labels)
            count = lambda n, batch: n + tf.shape(tf.nest.flatten(batch)[0], tf.int64)[0]  # noqa: E731
        else:
            count = lambda n, image: n + 1  # noqa: E731
        return int(dataset.reduce(tf.constant(0, tf.int64), count))

    def product(source, **kwargs):  # built once, like the baselines: each repeat is a new epoch of it
        dataset = make_dataset(source, batch_size=batch_size, image_size=image_size, **kwargs)
        return lambda: drain(dataset, True)

    def bare(batched: bool):
        dataset = tf.data.TFRecordDataset(shards).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
        dataset = dataset.batch(batch_size) if batched else dataset
        return lambda: drain(dataset, batched)

    unknown = os.path.join(directory, UNKNOWN_SIZE)
    methods = {
        "bare decode, python loop": python_loop,
        BASELINE: bare(batched=False),
        BATCHED_BASELINE: bare(batched=True),
        # The shards as the tfrecords stage leaves them: the manifest vouches for their size.
        "stage shards: evaluation": product(shards, training=False),
        "stage shards: training": product(shards, training=True, seed=0),
        "stage shards: training + augment": product(shards, training=True, augment=True, seed=0),
        # Shards of unknown image size: every record is checked (and would be resized).
        "unknown size: evaluation": product(unknown, training=False),
        "unknown size: training": product(unknown, training=True, seed=0),
        "unknown size: training + augment": product(unknown, training=True, augment=True, seed=0),
    }
    for method in methods.values():  # warm up: tracing, file cache
        method()
    rates = {name: {"wall": [], "cpu": []} for name in methods}
    for _ in range(repeats):
        for name, method in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            images = method()
            rates[name]["wall"].append(images / (time.perf_counter() - wall))
            rates[name]["cpu"].append(images / (time.process_time() - cpu))
    return rates


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def print_table(results: dict[int, dict[str, dict]]) -> None:
    header = (f"{'method':42s} {'cores':>5s} {'img/s wall':>10s} {'img/CPU-s':>9s} {'vs bare':>7s} "
              f"{'vs batched':>10s}   img/CPU-s of each run")
    print(header)
    print("-" * len(header))
    for cores, rates in results.items():
        baseline, batched_baseline = median(rates[BASELINE]["cpu"]), median(rates[BATCHED_BASELINE]["cpu"])
        for name, values in rates.items():
            wall, cpu = median(values["wall"]), median(values["cpu"])
            runs = " ".join(f"{value:.0f}" for value in values["cpu"])
            print(f"{name:42s} {cores:5d} {wall:10.0f} {cpu:9.0f} {cpu / baseline:7.0%} "
                  f"{cpu / batched_baseline:10.0%}   {runs}")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="JPEG records to write")
    parser.add_argument("--image-size", type=int, default=152)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cores", default="1,2", help="comma-separated CPU counts to pin to")
    parser.add_argument("--measure", metavar="DIR", help=argparse.SUPPRESS)  # child process: one CPU count
    args = parse_args(parser, SMOKE)
    cores_list = [int(cores) for cores in args.cores.split(",")]

    if args.measure:
        rates = measure(args.measure, cores_list[0], args.repeats, args.batch_size, args.image_size)
        print(json.dumps(rates))
        return

    available = len(os.sched_getaffinity(0))
    print(f"Machine: {available} usable CPU(s), load average {os.getloadavg()[0]:.1f} at start "
          "(shared with other jobs: figures are noisy, compare within one run).")
    with tempfile.TemporaryDirectory(prefix="bench_input_") as directory:
        start = time.perf_counter()
        total_bytes = write_records(Path(directory), args.records, args.image_size)
        print(f"Wrote {args.records} {args.image_size}x{args.image_size} JPEG records "
              f"({total_bytes / args.records / 1024:.1f} KB each) in {time.perf_counter() - start:.0f} s; "
              f"batch {args.batch_size}, median of {args.repeats} interleaved repeats.\n")
        results = {}
        for cores in cores_list:
            if cores > available:
                print(f"Skipping {cores} cores: only {available} usable.")
                continue
            command = [sys.executable, __file__, "--measure", directory, "--cores", str(cores),
                       "--repeats", str(args.repeats), "--batch-size", str(args.batch_size),
                       "--image-size", str(args.image_size)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[cores] = json.loads(output.strip().splitlines()[-1])
    print_table(results)
    print(f"Load average at the end: {os.getloadavg()[0]:.1f}. Goal: make_dataset >= 80% of the bare decode "
          "rate per core (img/CPU-s, column 'vs bare').")


if __name__ == "__main__":
    main()
