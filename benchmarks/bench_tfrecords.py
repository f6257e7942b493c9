"""Benchmark: the tfrecords stage against a plain single-thread Pillow loop doing the same image work.

On the same synthetic VGGFace2-like JPEGs (made by `deepface synth` in a separate process), in one run,
interleaving the contenders in every repeat:

* loop, re-encode: for each image already in memory, ``Image.open``, RGB, ``ImageOps.pad`` to
  152 x 152 (bilinear, black), save as JPEG quality 90; one thread.
* loop, decode: ``Image.open`` and ``load`` at full scale (the stage validates keep_original JPEGs
  by decoding them at 1/8 scale, which still reads all their compressed data).
* ``build_tfrecords`` re-encoding the whole frame (``align=False``), aligning each face from the
  synthetic ``bb_landmark.tar.gz`` (the default for VGGFace2: no detector), and keep_original, with 1
  and 2 workers: the whole stage, reading the tar.gz stream from disk, writing and fsyncing a shard and
  the manifest.

Prints medians over the repeats of:

* wall images/s, per core (= / workers), its ratio to the loop, and the 1 -> 2 workers scaling;
* CPU images/s: images per CPU-second of the whole process tree (this process, the forkserver and
  the workers it reaps), and its ratio to the loop: the per-core efficiency, which depends less than
  the wall clock on what else the machine runs;
* main: the share of that CPU spent in the main process, and the same as CPU microseconds per image.
  The main process reads the archive, hands tasks to the pool, appends the records to the shard,
  and with several workers also encodes the tasks the pool has no room for (workers = N is N - 1
  pool processes plus the main one), so its share is not all serial work.

Goals: >= 0.85 of the loop per core, close to 2x from 1 to 2 workers; aligning from the CSV >= 0.85 of
the whole-frame re-encode per core (the ``vs frame`` column). The load average before and
after is printed: on a shared machine the wall figures move with it. The default 7,200 images keep a
build's fixed cost (starting the pool, the manifest, fsyncs) a small share of even the fastest build,
keep_original on 2 workers; with far fewer images that cost would blur the rates.

    .venv/bin/python benchmarks/bench_tfrecords.py [--identities 24] [--images-per-identity 300] [--repeats 3]

``--smoke`` runs every contender once on a few small images (options given still win): a check that the
benchmark runs, its figures meaningless.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import parse_args
from PIL import Image, ImageOps

from deepface.archives import iter_members
from deepface.labels import build_labels
from deepface.parallel import available_cpus
from deepface.tfrecords import build_tfrecords

# --smoke: a few small images, every contender once.
SMOKE = {"identities": 4, "images_per_identity": 4, "image_size": 64, "repeats": 1}
# LFW is not measured, but synth writes it: the fewest people whose pairs fill LFW's 10 folds.
LFW_IDENTITIES = 4


def loop_reencode(images: list[bytes], size: int = 152, quality: int = 90) -> None:
    for data in images:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        face = ImageOps.pad(image, (size, size), method=Image.Resampling.BILINEAR, color=(0, 0, 0))
        face.save(io.BytesIO(), format="JPEG", quality=quality)


def loop_decode(images: list[bytes]) -> None:
    for data in images:
        Image.open(io.BytesIO(data)).load()


def tree_cpu_seconds() -> float:
    """CPU seconds used by this process and its finished descendants (Linux).

    Worker processes are children of multiprocessing's forkserver, which reaps them: their time shows
    in the forkserver's ``cutime + cstime``, read from /proc.
    """
    total = time.process_time() + sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), field)
                                      for field in ("ru_utime", "ru_stime"))
    ticks = os.sysconf("SC_CLK_TCK")
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += sum(int(value) for value in fields[11:15]) / ticks  # utime stime cutime cstime
    return total


def measure(function) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process tree, CPU seconds of this process) of one call."""
    wall, tree, own = time.perf_counter(), tree_cpu_seconds(), time.process_time()
    function()
    return time.perf_counter() - wall, tree_cpu_seconds() - tree, time.process_time() - own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=24)
    parser.add_argument("--images-per-identity", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=256, help="typical side of the synthetic JPEGs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parse_args(parser, SMOKE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    with tempfile.TemporaryDirectory(prefix="bench_tfrecords_") as temporary:
        root = Path(temporary)
        # The data comes from another process, so this one starts like `deepface tfrecords` does (its
        # worker pool's forkserver not yet started by anyone else).
        synth = subprocess.run(
            [sys.executable, "-m", "deepface.cli", "synth", "--out", str(root / "data"),
             "--train-identities", str(args.identities), "--test-identities", "1",
             "--lfw-identities", str(LFW_IDENTITIES), "--images-per-identity", str(args.images_per_identity),
             "--image-size", str(args.image_size), "--lfw-image-size", "32"], capture_output=True, text=True)
        if synth.returncode:
            raise SystemExit(f"deepface synth exited {synth.returncode}:\n{synth.stderr[-3000:]}")
        archive = root / "data" / "vggface2_train.tar.gz"
        build_labels(archive, root / "labels")
        images = [member.read() for member in iter_members(archive)]
        count = len(images)

        landmarks = root / "data" / "bb_landmark.tar.gz"

        def build(workers: int, keep_original: bool = False, aligned: bool = False) -> None:
            out = Path(tempfile.mkdtemp(dir=root))
            build_tfrecords(archive, root / "labels", out, workers=workers, keep_original=keep_original,
                            align=aligned, landmarks=landmarks if aligned else None)

        # (contender, workers, its baseline loop, function)
        contenders = [
            ("loop, re-encode", 1, "loop, re-encode", lambda: loop_reencode(images)),
            ("tfrecords, re-encode", 1, "loop, re-encode", lambda: build(1)),
            ("tfrecords, re-encode", 2, "loop, re-encode", lambda: build(2)),
            ("tfrecords, aligned (CSV)", 1, "loop, re-encode", lambda: build(1, aligned=True)),
            ("tfrecords, aligned (CSV)", 2, "loop, re-encode", lambda: build(2, aligned=True)),
            ("loop, decode", 1, "loop, decode", lambda: loop_decode(images)),
            ("tfrecords, keep_original", 1, "loop, decode", lambda: build(1, True)),
            ("tfrecords, keep_original", 2, "loop, decode", lambda: build(2, True)),
        ]
        build(2)  # warm-up: starts the forkserver, fills the page cache, imports what the stage imports
        load_before = os.getloadavg()
        wall, cpu, main_cpu = ({(name, workers): [] for name, workers, _, _ in contenders} for _ in range(3))
        for _ in range(args.repeats):
            for name, workers, _, function in contenders:
                for record, value in zip((wall, cpu, main_cpu), measure(function)):
                    record[name, workers].append(value)
        load_after = os.getloadavg()

    rate = {key: count / statistics.median(values) for key, values in wall.items()}
    cpu_rate = {key: count / statistics.median(values) for key, values in cpu.items()}
    sizes = [Image.open(io.BytesIO(data)).size for data in images]
    print(f"\ntfrecords benchmark: {count} synthetic JPEGs (mean {statistics.mean(map(len, images)) / 1024:.1f} KB, "
          f"sides {min(min(s) for s in sizes)}-{max(max(s) for s in sizes)} px), {args.repeats} repeats, medians; "
          f"{available_cpus()} CPUs, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print("wall: images/s by the clock, per core = / workers.  CPU: images per CPU-second of the whole process "
          "tree;\nmain: share of that CPU spent in the main process (reading, writing, and some encoding), and "
          "its CPU microseconds per image.")
    print(f"{'contender':<26}{'workers':>8}{'wall img/s':>11}{'per core':>10}{'vs loop':>9}{'1->2':>7}"
          f"{'CPU img/s':>11}{'vs loop':>9}{'main':>7}{'main us/img':>12}{'vs frame':>9}")
    for name, workers, baseline, _ in contenders:
        per_core = rate[name, workers] / workers
        scaling = f"{rate[name, 2] / rate[name, 1]:.2f}x" if workers == 2 else ""
        main_seconds = statistics.median(main_cpu[name, workers])
        print(f"{name:<26}{workers:>8}{rate[name, workers]:>11.0f}{per_core:>10.0f}"
              f"{per_core / rate[baseline, 1]:>9.2f}{scaling:>7}"
              f"{cpu_rate[name, workers]:>11.0f}{cpu_rate[name, workers] / cpu_rate[baseline, 1]:>9.2f}"
              f"{main_seconds / statistics.median(cpu[name, workers]):>7.0%}{main_seconds / count * 1e6:>12.0f}"
              + (f"{cpu_rate[name, workers] / cpu_rate['tfrecords, re-encode', workers]:>9.2f}"
                 if name.startswith("tfrecords, aligned") else ""))


if __name__ == "__main__":
    main()
