"""Benchmark: the face detector (MTCNN on the CPU, one process) and what it implies for LFW and `verify`.

On a real photograph (matplotlib's ``grace_hopper.jpg``, 512 x 600), resized to the sizes that matter:
250 x 250 (an LFW image), the photo itself, and a 3000 x 4000 "phone photo" (the photo upscaled into a
larger frame, so the face is ~15% of it, then decoded reduced as `deepface.faces.face_image` does). For
each: detection alone (``FaceDetector.detect`` on the decoded image) and the whole `face_image` (decode,
detect, align), images/s on one core, medians over the repeats, the contenders interleaved. Then the
time the LFW rate implies for the 13,233 LFW images on one core, and per `verify` call (two images).

The detector's first call (TensorFlow start, weights, tracing) is timed apart: `verify` pays it once per
process.

    .venv/bin/python benchmarks/bench_detect.py [--repeats 5] [--images 20]

``--smoke`` times one call of each contender, once (options given still win): a check that the benchmark
runs, its figures meaningless.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

from _common import parse_args

LFW_IMAGES = 13_233
SMOKE = {"repeats": 1, "images": 1}  # --smoke: every contender once


def encoded(image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=20, help="calls per contender per repeat")
    args = parse_args(parser, SMOKE)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import matplotlib.cbook
    import tensorflow as tf
    from PIL import Image

    from deepface.detect import FaceDetector
    from deepface.faces import DETECT_SIDE, decode, face_image

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    photo = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    phone = Image.new("RGB", (3000, 4000), (90, 110, 130))
    phone.paste(photo.resize((1024, 1200)), (988, 1400))
    files = {"LFW 250x250": encoded(photo.resize((250, 250))), "photo 512x600": encoded(photo),
             "phone 3000x4000": encoded(phone)}
    detector = FaceDetector()
    started = time.perf_counter()
    detector.detect(photo)
    first_call = time.perf_counter() - started

    def detect_only(data: bytes):
        image, _ = decode(data, min_side=DETECT_SIDE)
        return lambda: detector.detect(image)

    contenders = {}
    for name, data in files.items():
        contenders[name, "detect"] = detect_only(data)
        contenders[name, "face_image"] = lambda data=data: face_image(data, 152, detector=detector)
    times = {key: [] for key in contenders}
    for _ in range(args.repeats):
        for key, function in contenders.items():
            started = time.process_time()
            for _ in range(args.images):
                function()
            times[key].append((time.process_time() - started) / args.images)

    print(f"\ndetector benchmark (MTCNN, one core, {args.repeats} repeats x {args.images} calls, medians of CPU time)")
    print(f"first call (TensorFlow, weights, tracing): {first_call:.2f} s wall")
    print(f"{'image':<18}{'step':<12}{'ms/img':>8}{'img/s':>8}")
    for (name, step), values in times.items():
        seconds = statistics.median(values)
        print(f"{name:<18}{step:<12}{seconds * 1e3:>8.1f}{1 / seconds:>8.1f}")
    lfw = statistics.median(times["LFW 250x250", "face_image"])
    print(f"LFW: {LFW_IMAGES} images x {lfw * 1e3:.1f} ms = {LFW_IMAGES * lfw / 60:.1f} min on one core "
          f"({LFW_IMAGES * lfw / 60 / 8:.1f} min with `deepface landmarks --workers 8`)")
    phone_seconds = statistics.median(times["phone 3000x4000", "face_image"])
    print(f"verify, two phone photos: {2 * phone_seconds:.2f} s of detection and alignment "
          f"(+ {first_call:.1f} s detector start once per process)")


if __name__ == "__main__":
    main()
