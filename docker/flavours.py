"""How each image flavour installs TensorFlow: the requirements and constraints of its dependency layer.

Standard library only: the Dockerfile runs it before the package is installed.

=========  ===============================  ==============================================================
flavour    TensorFlow distribution          constraints
=========  ===============================  ==============================================================
``cpu``    ``tensorflow`` (constraints.txt)  constraints.txt
``gpu``    ``tensorflow[and-cuda]``          constraints.txt + docker/constraints-cuda.txt (CUDA libraries)
``tpu``    ``tensorflow-tpu`` + ``libtpu``   constraints.txt, its TensorFlow pins replaced by
                                             docker/constraints-tpu.txt (tensorflow-tpu is one minor behind)
=========  ===============================  ==============================================================

The flavour's name is also its image tag's suffix (`components.image`: ``VERSION-gSHA`` for cpu,
``VERSION-gSHA-gpu``, ``VERSION-gSHA-tpu``).

Usage (in the Dockerfile)::

    python3 docker/flavours.py write FLAVOUR DIR   # DIR/requirements.txt and DIR/constraints.txt
    pip install -c DIR/constraints.txt -r DIR/requirements.txt
    python3 docker/flavours.py check FLAVOUR       # pip check, knowing what the flavour replaces

Exit status 2 with one line on stderr for an unknown flavour.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent

# flavour -> (the TensorFlow requirement, extra constraint files, whether they replace constraints.txt's pins)
FLAVOURS = {
    "cpu": ("tensorflow", (), False),
    "gpu": ("tensorflow[and-cuda]", ("docker/constraints-cuda.txt",), False),
    "tpu": ("tensorflow-tpu", ("docker/constraints-tpu.txt",), True),
}
# The TensorFlow distribution the tpu flavour installs instead of `tensorflow` (same `tensorflow` module).
REPLACED = {"tpu": "tensorflow"}


def _name(requirement: str) -> str:
    """The normalised project name of a requirement or pin line (``Foo_Bar[x]>=1`` -> ``foo-bar``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def _pins(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def requirements(flavour: str, root: Path = ROOT) -> list[str]:
    """pyproject.toml's dependencies with its ``tensorflow`` requirement replaced by the flavour's."""
    tensorflow, _, _ = FLAVOURS[flavour]
    dependencies = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in dependencies if _name(d) != "tensorflow"] + [tensorflow]


def constraints(flavour: str, root: Path = ROOT) -> list[str]:
    """constraints.txt's pins plus (or, name by name, replaced by) the flavour's own constraint files."""
    _, files, replace = FLAVOURS[flavour]
    extra = [pin for name in files for pin in _pins(root / name)]
    dropped = {_name(pin) for pin in extra} | ({REPLACED[flavour]} if replace else set())
    base = [pin for pin in _pins(root / "constraints.txt") if not (replace and _name(pin) in dropped)]
    return base + extra


def pip_check(flavour: str) -> int:
    """``pip check``, accepting only the flavour's replaced distribution (tensorflow-tpu provides the
    ``tensorflow`` module our package requires under the name ``tensorflow``). Returns its exit status."""
    result = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    replaced = REPLACED.get(flavour)
    problems = [line for line in result.stdout.splitlines()
                if line.strip() and not (replaced and re.search(rf"requires {replaced}, which is not installed", line))
                and not line.startswith("No broken requirements")]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("write", "check") or (argv[0] == "write" and len(argv) != 3):
        print("usage: flavours.py write FLAVOUR DIR | check FLAVOUR", file=sys.stderr)
        return 2
    flavour = argv[1]
    if flavour not in FLAVOURS:
        print(f"flavours.py: FLAVOUR={flavour!r}: choose one of {', '.join(FLAVOURS)}", file=sys.stderr)
        return 2
    if argv[0] == "check":
        return pip_check(flavour)
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.txt").write_text("\n".join(requirements(flavour)) + "\n")
    (out / "constraints.txt").write_text("\n".join(constraints(flavour)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
