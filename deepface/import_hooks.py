"""Run code around the import of one top-level module, whoever imports it and whenever.

`install(name, around)` places a finder first on `sys.meta_path` that answers only for the top-level
module ``name``: it asks the finders after it for the module's spec and wraps the spec's loader, so that
executing the module runs ``around(module, execute)``, where ``execute()`` runs the module's own code.
The module gets its own loader back before its code runs, so ``module.__loader__`` and
``module.__spec__`` look as without the hook. deepface uses it to register its Keras layers right after
Keras loads (`deepface.__init__`) and to filter TensorFlow's start-up lines during its import
(`deepface.startup`), without importing either itself.

Python calls finders under the import lock of the module being found, so two threads never execute it
twice; a plain ``importlib.util.find_spec(name)`` gets the wrapped spec too, which is harmless: the
wrapper acts only when the module is executed. A finder stays in place once its module is loaded (Python
asks finders only for modules not in `sys.modules`, so it is never asked for it again; for any other name
it returns None after one comparison): removing an entry of `sys.meta_path` while another thread iterates
over it could make that thread skip a finder.

Example::

    install("keras", lambda module, execute: (execute(), print("keras loaded")))
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import ModuleType

# around(module, execute): must call execute() once (an error from it should propagate, as without the hook).
Around = Callable[[ModuleType, Callable[[], None]], None]
_lock = threading.Lock()


class _WrappedLoader:
    """The module's own loader, with its ``exec_module`` run inside ``around``."""

    def __init__(self, loader, around: Around):
        self.loader, self.around = loader, around

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        self.around(module, lambda: self.loader.exec_module(module))


class ImportHook:
    """A `sys.meta_path` finder for the top-level module ``name`` whose loader runs inside ``around``.

    ``_deepface_import_hook`` holds the module's name: a marker that survives reloading this module (class
    identity does not), by which `install` finds an installed hook and hooks skip each other.
    """

    def __init__(self, name: str, around: Around):
        self._deepface_import_hook = name
        self.around = around

    def find_spec(self, name, path=None, target=None):
        if name != self._deepface_import_hook or path is not None:
            return None
        for finder in list(sys.meta_path):
            if getattr(finder, "_deepface_import_hook", None) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _WrappedLoader(spec.loader, self.around)
            return spec
        return None

    def invalidate_caches(self) -> None:
        pass


def installed(name: str) -> bool:
    """Whether a hook for ``name`` is on `sys.meta_path`."""
    return any(getattr(finder, "_deepface_import_hook", None) == name for finder in sys.meta_path)


def install(name: str, around: Around) -> None:
    """Run ``around`` at the next import of the top-level module ``name`` (once per process and name:
    a second call for the same name does nothing). The caller checks whether ``name`` is loaded already."""
    with _lock:
        if not installed(name):
            sys.meta_path.insert(0, ImportHook(name, around))
