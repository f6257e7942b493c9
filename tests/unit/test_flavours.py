"""Image flavours: how each installs TensorFlow (docker/flavours.py) and which one a task gets
(components.image: tags, overrides, refusals)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from components import image
from deepface.errors import DeepFaceError

ROOT = image._REPO_ROOT
_spec = importlib.util.spec_from_file_location("flavours", ROOT / "docker" / "flavours.py")
flavours = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flavours)


def names(lines: list[str]) -> list[str]:
    return [flavours._name(line) for line in lines]


def pins(lines: list[str]) -> dict[str, str]:
    return {flavours._name(line): line.split("==", 1)[1] for line in lines}


def test_both_places_know_the_same_flavours():
    assert tuple(flavours.FLAVOURS) == image.FLAVOURS


@pytest.mark.parametrize("flavour", image.FLAVOURS)
def test_each_flavour_pins_every_package_once_and_keeps_the_rest_of_the_lock(flavour):
    constraints = flavours.constraints(flavour)
    assert len(names(constraints)) == len(set(names(constraints))), "a package pinned twice: pip would refuse"
    lock = pins(flavours._pins(ROOT / "constraints.txt"))
    own = pins(flavours.constraints(flavour))
    changed = {name for name in lock if own.get(name) != lock[name]}
    expected = {"cpu": set(), "gpu": set(), "tpu": {"tensorflow"}}[flavour]
    assert changed == expected
    requirements = flavours.requirements(flavour)
    tensorflow = [r for r in requirements if flavours._name(r).startswith("tensorflow")]
    assert tensorflow == [{"cpu": "tensorflow", "gpu": "tensorflow[and-cuda]", "tpu": "tensorflow-tpu"}[flavour]]


def test_the_gpu_flavour_pins_the_cuda_libraries_and_the_tpu_flavour_its_runtime():
    gpu = pins(flavours.constraints("gpu"))
    assert sum(name.startswith("nvidia-") for name in gpu) >= 10 and "nvidia-cudnn-cu12" in gpu
    tpu = pins(flavours.constraints("tpu"))
    assert tpu["tensorflow-tpu"] == "2.20.0" and "libtpu" in tpu
    assert tpu["tensorboard"].startswith("2.20.")  # tensorflow-tpu 2.20 asks for tensorboard~=2.20.0
    assert not any(name.startswith("nvidia-") for name in tpu)


def test_an_unknown_flavour_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "docker" / "flavours.py"), "write", "rocm", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "FLAVOUR='rocm'" in result.stderr and "cpu, gpu, tpu" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("accelerator", "flavour"), [
    ("", "cpu"), ("NVIDIA_L4", "gpu"), ("NVIDIA_TESLA_T4", "gpu"), ("TPU_V5_LITEPOD", "tpu"), ("TPU_V3", "tpu")])
def test_the_accelerator_chooses_the_flavour(accelerator, flavour):
    assert image.flavour_for(accelerator) == flavour


def test_flavour_tags_and_overrides(monkeypatch):
    for name in ("DEEPFACE_IMAGE", "DEEPFACE_IMAGE_GPU", "DEEPFACE_IMAGE_TPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEEPFACE_IMAGE_REPO", "r.example/p/deepface")
    cpu, gpu, tpu = (image.image_reference(flavour) for flavour in image.FLAVOURS)
    assert gpu == cpu + "-gpu" and tpu == cpu + "-tpu"
    assert re.fullmatch(r"r\.example/p/deepface:[^:]+-g[0-9a-f]{12}(-dirty-[0-9a-f]{12})?", cpu)
    # One explicit image for the CPU tasks does not serve an accelerator: say which variable to set.
    monkeypatch.setenv("DEEPFACE_IMAGE", "r.example/p/deepface:0.1.0-gaaaaaaaaaaaa")
    with pytest.raises(DeepFaceError, match="set DEEPFACE_IMAGE_GPU too"):
        image.image_reference("gpu")
    monkeypatch.setenv("DEEPFACE_IMAGE_GPU", "r.example/p/deepface@sha256:" + "b" * 64)  # a digest says nothing
    assert image.image_reference("gpu").endswith("b" * 64)
    with pytest.raises(DeepFaceError, match="flavour 'rocm'"):
        image.image_reference("rocm")


@pytest.mark.parametrize(("reference", "flavour", "problem"), [
    ("r/d:0.1.0-gaaaaaaaaaaaa", "gpu", "is the cpu flavour"),
    ("r/d:0.1.0-gaaaaaaaaaaaa-dirty-bbbbbbbbbbbb-tpu", "gpu", "is the tpu flavour"),
    ("r/d:0.1.0-gaaaaaaaaaaaa-gpu", "cpu", "is the gpu flavour"),
    ("r/d:0.1.0-gaaaaaaaaaaaa-gpu", "gpu", None),
    ("r/d:my-own-tag", "tpu", None),  # another scheme: accepted as it is
])
def test_a_reference_of_another_flavour_is_refused_with_the_fix(reference, flavour, problem):
    if problem is None:
        assert image.check_flavour(reference, flavour) == reference
        return
    with pytest.raises(DeepFaceError, match=problem) as caught:
        image.check_flavour(reference, flavour)
    assert f"FLAVOUR={flavour} docker/build.sh" in str(caught.value)


@pytest.mark.parametrize("flavour", image.FLAVOURS)
def test_build_script_names_the_flavour_image_the_pipeline_names(flavour):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFACE_IMAGE")}
    env["FLAVOUR"] = flavour
    built = subprocess.run([str(ROOT / "docker" / "build.sh"), "--print-ref"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    components = subprocess.run([sys.executable, "-m", "components.image", "--flavour", flavour], cwd=ROOT,
                                env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert built == components and built.endswith("" if flavour == "cpu" else f"-{flavour}")
