"""deepface.import_hooks: code around one module's import, in a fresh interpreter (the module not yet loaded)."""

import subprocess
import sys

SCRIPT = """
import sys
from deepface import import_hooks
calls = []
def around(module, execute):
    calls.append(("before", hasattr(module, "reader")))
    execute()
    calls.append(("after", hasattr(module, "reader")))
import_hooks.install("csv", around)
import_hooks.install("csv", around)  # a second install for the same name does nothing
assert sum(getattr(f, "_deepface_import_hook", None) == "csv" for f in sys.meta_path) == 1
import csv
import csv as again
assert calls == [("before", False), ("after", True)], calls  # once, around the module's own code
assert type(csv.__loader__).__name__ == "SourceFileLoader" and csv.__spec__.loader is csv.__loader__
import json  # other modules: untouched
assert type(json.__loader__).__name__ == "SourceFileLoader"
print("ok")
"""


def test_around_runs_once_around_the_modules_own_code_and_leaves_its_loader():
    completed = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr[-2000:]
