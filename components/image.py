"""The container image every pipeline component runs in: the one place that names it.

Vertex AI caches a task's result on, among other things, the image string, so the reference must
change whenever the code in the image changes. The tag is therefore immutable:

- ``$DEEPFACE_IMAGE`` when set: a full reference with a tag or a digest (``:latest`` is refused);
- otherwise ``$DEEPFACE_IMAGE_REPO`` (default ``localhost/deepface-pipeline``) with the tag
  ``VERSION-gGITSHA``, plus ``-dirty-CONTENTHASH`` when the files copied into the image
  (``IMAGE_CONTEXT``) differ from the commit: the same scheme as ``docker/build.sh``;
- outside a git checkout (an installed package): ``VERSION`` alone.

Flavours (`FLAVOURS`; how each installs TensorFlow is ``docker/flavours.py``): ``cpu`` for every task, and
for training the flavour its accelerator needs (`flavour_for`): ``gpu`` for ``NVIDIA_*``, ``tpu`` for
``TPU_*``. A flavour's tag ends in ``-gpu`` / ``-tpu`` (cpu has no suffix), and its override is
``$DEEPFACE_IMAGE_GPU`` / ``$DEEPFACE_IMAGE_TPU``. A reference whose tag follows this module's scheme but
names another flavour is refused (`check_flavour`), so no accelerator run gets an image that cannot use it.

Computing it runs git, so it is computed when a pipeline is built, not when a component is imported:
every component is decorated with `PLACEHOLDER` (by `components.launcher.stage_component`, which also
sets the container command), and `pipelines.pipeline` sets `image_reference()` on
each task it creates (and on the training component it wraps as a custom job). A compiled template or a
local run therefore never names `PLACEHOLDER`; only a component called outside the pipeline does.

This module only needs the standard library: ``python -m components.image`` prints the reference,
for build scripts.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

from deepface import __version__
from deepface.errors import DeepFaceError

DEFAULT_REPOSITORY = "localhost/deepface-pipeline"
# The base image the components are decorated with: a stand-in the pipeline replaces on every task. A
# registry cannot serve it (and Vertex AI submission refuses localhost/ images), so a template that
# still names it fails before running stale code.
PLACEHOLDER = f"{DEFAULT_REPOSITORY}:set-when-the-pipeline-is-built"
# What the Dockerfile copies into the image (keep in step with .dockerignore and docker/build.sh).
IMAGE_CONTEXT = (
    "Dockerfile", ".dockerignore", "pyproject.toml", "constraints.txt", "docker/constraints-cuda.txt",
    "docker/constraints-tpu.txt", "docker/flavours.py", "README.md", "deepface", "components", "pipelines",
)
FLAVOURS = ("cpu", "gpu", "tpu")  # keep in step with docker/flavours.py (a test checks)
# A tag of this module's scheme: VERSION-gSHA[-dirty-HASH][-FLAVOUR].
_OUR_TAG = re.compile(r"^.+-g[0-9a-f]{12}(-dirty-[0-9a-f]{12})?(?P<flavour>-gpu|-tpu)?$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    """Output of a git command in the source checkout, or None outside one (or without git)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(_REPO_ROOT), *args], capture_output=True, text=True, check=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _is_hashed(relative: str) -> bool:
    parts = relative.split("/")
    return not (
        relative.endswith(".pyc") or "__pycache__" in parts[:-1] or any(p.endswith(".egg-info") for p in parts[:-1])
    )


def context_hash(root: Path = _REPO_ROOT) -> str:
    """12 hex digits of sha256 over ``sha256sum``-style lines of every file of the image context.

    Same value as ``find CONTEXT -type f ... -print0 | sort -z | xargs -0 sha256sum | sha256sum``
    under the C locale (paths sorted bytewise).
    """
    files = []
    for name in IMAGE_CONTEXT:
        path = root / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files.extend(p.relative_to(root).as_posix() for p in candidates)
    lines = [
        f"{hashlib.sha256((root / relative).read_bytes()).hexdigest()}  {relative}\n"
        for relative in sorted((f for f in files if _is_hashed(f)), key=lambda f: f.encode())
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:12]


def image_tag() -> str:
    """``VERSION-gGITSHA[-dirty-CONTENTHASH]`` in a git checkout, else the package version."""
    revision = _git("rev-parse", "--short=12", "HEAD")
    if not revision:
        return __version__
    tag = f"{__version__}-g{revision}"
    if _git("status", "--porcelain", "--untracked-files=all", "--", *IMAGE_CONTEXT):
        tag += f"-dirty-{context_hash()}"
    return tag


def check_image_reference(reference: str) -> str:
    """``reference`` if it names an immutable image (a tag other than ``latest``, or a digest)."""
    name, _, digest = reference.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if digest:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise DeepFaceError(f"image {reference!r} (DEEPFACE_IMAGE): the digest must be sha256:<64 hex digits>")
        return reference
    if not tag or tag == "latest" or not _TAG.fullmatch(tag):
        raise DeepFaceError(
            f"image {reference!r} (DEEPFACE_IMAGE or DEEPFACE_IMAGE_REPO) needs an immutable tag "
            "(e.g. :0.1.0-g1a2b3c4d5e6f) or a "
            "@sha256 digest: Vertex AI caches results on the image string, so ':latest' or no tag "
            "would serve stale results"
        )
    return reference


def flavour_for(accelerator: str) -> str:
    """The image flavour a task with this Vertex AI accelerator type needs: ``"gpu"`` for ``NVIDIA_*``,
    ``"tpu"`` for ``TPU_*``, ``"cpu"`` for none (``""``)."""
    if accelerator.startswith("NVIDIA"):
        return "gpu"
    if accelerator.startswith("TPU"):
        return "tpu"
    return "cpu"


def _override_variable(flavour: str) -> str:
    return "DEEPFACE_IMAGE" if flavour == "cpu" else f"DEEPFACE_IMAGE_{flavour.upper()}"


def check_flavour(reference: str, flavour: str) -> str:
    """``reference`` unless its tag follows this module's scheme and names another flavour (DeepFaceError
    naming the fix). Tags of another scheme and digests are accepted as they are: they say nothing."""
    name = reference.partition("@")[0]
    match = _OUR_TAG.match(name.rsplit("/", 1)[-1].partition(":")[2])
    if match:
        found = (match.group("flavour") or "-cpu")[1:]
        if found != flavour:
            raise DeepFaceError(
                f"image {reference!r} is the {found} flavour, but this task needs the {flavour} image: build "
                f"it with FLAVOUR={flavour} docker/build.sh and set {_override_variable(flavour)} to the reference "
                "it prints"
            )
    return reference


def image_reference(flavour: str = "cpu") -> str:
    """The image of the ``flavour`` (`FLAVOURS`) that the pipeline's tasks run; see the module docstring for
    the rules. Runs git.

    Raises DeepFaceError for an unknown flavour, a mutable tag, or an override of another flavour; and, for
    an accelerator flavour while ``$DEEPFACE_IMAGE`` names one explicit image, when ``$DEEPFACE_IMAGE_GPU``
    (``_TPU``) is not set: the explicit CPU image cannot serve the accelerator.
    """
    if flavour not in FLAVOURS:
        raise DeepFaceError(f"image flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    variable = _override_variable(flavour)
    override = os.environ.get(variable, "").strip()
    if override:
        return check_flavour(check_image_reference(override), flavour)
    if flavour != "cpu" and os.environ.get("DEEPFACE_IMAGE", "").strip():
        raise DeepFaceError(
            f"DEEPFACE_IMAGE names the CPU image, and training on this accelerator needs the {flavour} image: "
            f"set {variable} too (FLAVOUR={flavour} docker/build.sh prints its reference)"
        )
    repository = os.environ.get("DEEPFACE_IMAGE_REPO", "").strip().rstrip("/") or DEFAULT_REPOSITORY
    suffix = "" if flavour == "cpu" else f"-{flavour}"
    return check_image_reference(f"{repository}:{image_tag()}{suffix}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Print the image reference the pipeline's tasks name.")
    parser.add_argument("--flavour", choices=FLAVOURS, default="cpu", help="image flavour (default: cpu)")
    try:
        print(image_reference(parser.parse_args().flavour))
    except DeepFaceError as error:
        raise SystemExit(f"components.image: {error}") from None
