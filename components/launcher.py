"""`stage_component`: the decorator of every pipeline component, and the command its container runs.

kfp (2.17, ``component_factory._get_command_and_args_for_lightweight_component``) makes a lightweight
Python component's command ``sh -ec SCRIPT SOURCE`` where SCRIPT writes SOURCE (the function's code) to
a file, then runs ``_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path FILE
"$@"`` as a child of the shell. The shell is the container's main process and does not pass SIGTERM on,
so a cancelled task's Python never hears of it. `stage_component` keeps kfp's component (interface,
arguments, SOURCE) and replaces SCRIPT by one that ``exec``s the interpreter, so that the task's Python
process is the container's main process (the one the platform signals), and runs
`components.task_start` in it: a check that the task's output folders can be written (one clear line
instead of a traceback from kfp's executor), then ``kfp.dsl.executor_main`` with kfp's own arguments.

The command is ``sh -ec OUR_SCRIPT SOURCE START_CODE`` followed by kfp's arguments: START_CODE is the text
of ``components/task_start.py``. It stays what kfp.local needs: the script names
``"$program_path/ephemeral_component.py"`` and ``"$@"`` (kfp.local leaves the next item, SOURCE, alone
when it points ``python3`` at its own interpreter) and the command names ``kfp.dsl.executor_main``. It
depends only on these files, so compiling twice gives the same template.
"""

from __future__ import annotations

from pathlib import Path

from kfp import dsl
from kfp.dsl import component_factory

from components.image import PLACEHOLDER
from deepface.errors import DeepFaceError

START_CODE = (Path(__file__).with_name("task_start.py")).read_text(encoding="utf-8")

# $0 is SOURCE, $1 START_CODE, then kfp's arguments (--executor_input ... --function_to_execute ...).
# `export` (not a `VAR=value exec` prefix: POSIX leaves it unspecified whether an assignment before
# the special built-in `exec` is exported) keeps kfp's _KFP_RUNTIME=true for the executor.
SCRIPT = """\
program_path=$(mktemp -d)

printf "%s" "$0" > "$program_path/ephemeral_component.py"
start_code=$1
shift
export _KFP_RUNTIME=true
exec python3 -c "$start_code" --component_module_path "$program_path/ephemeral_component.py" "$@"
"""


def _check_start_code(code: str) -> str:
    # Vertex AI and kfp replace {{$...}} placeholders in every command item; kfp.local replaces the word
    # python3 in every item but SOURCE.
    for forbidden in ("{{", "python3"):
        if forbidden in code:
            raise DeepFaceError(f"components/task_start.py: must not contain {forbidden!r} (see components.launcher)")
    return code


def exec_python_command(command: list[str]) -> list[str]:
    """kfp's lightweight-component ``command`` with its script replaced by `SCRIPT` (see the module
    docstring); raises DeepFaceError when it is not the ``sh -ec SCRIPT SOURCE`` command of kfp 2.17."""
    if (
        len(command) != 4
        or command[:2] != ["sh", "-ec"]
        or f"-m {component_factory.EXECUTOR_MODULE}" not in command[2]
        or '"$program_path/ephemeral_component.py"' not in command[2]
    ):
        raise DeepFaceError(
            f"the component command made by kfp is not the 'sh -ec SCRIPT SOURCE' of kfp 2.17 "
            f"(starts {command[:2]}): update components/launcher.py for this kfp version"
        )
    return ["sh", "-ec", SCRIPT, command[3], _check_start_code(START_CODE)]


def stage_component(func):
    """``@dsl.component(base_image=PLACEHOLDER, install_kfp_package=False)`` whose container command
    execs Python (see the module docstring)."""
    component = dsl.component(func, base_image=PLACEHOLDER, install_kfp_package=False)
    container = component.component_spec.implementation.container
    container.command = exec_python_command(list(container.command))
    return component
