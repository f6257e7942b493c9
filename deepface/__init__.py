"""DeepFace (Taigman et al., CVPR 2014) for Keras 3, and the stages of its training pipeline.

Each pipeline stage is one function in this package (``synth``, ``fetch``, ``labels``, ``tfrecords``,
``train``, ``evaluate``), called alike by the ``deepface`` command line, the KFP components and the tests.
This package never imports kfp.

The Python API (`deepface.api`): ``deepface.load(model_dir, evaluation_dir)`` returns a
`deepface.api.FaceVerifier` that embeds and verifies face images as ``deepface verify`` does::

    import deepface
    verifier = deepface.load("out/model", evaluation_dir="out/eval")
    verifier.verify("a.jpg", "b.jpg")["same"]

Saved models. ``embedding.keras`` and ``classifier.keras`` hold two custom layers
(`deepface.layers.LocallyConnected2D`, ``FeatureNormalization``), which Keras finds by their registered
names (``deepface>LocallyConnected2D``) only once `deepface.layers` has run. ``import deepface`` sees to
that without importing TensorFlow or Keras itself (importing it stays cheap): if Keras is already imported,
`deepface.layers` is imported at once; otherwise a finder placed first on `sys.meta_path` waits for the
module ``keras`` to be loaded (by ``import keras``, ``import tensorflow``, which loads Keras, or anything
else) and imports `deepface.layers` right after Keras's own code has run. So, after ``import deepface``, in
any order, ``keras.saving.load_model("model/embedding.keras")`` works.
(Keras 3's deserializer imports a config's ``"module"`` only for Keras's own packages, so registration is
the only way a custom class is found.)
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading

__version__ = "0.1.0"

_logger = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Versions of what decides the results (Python, deepface, TensorFlow, Keras, NumPy), recorded in the
    metadata of models and evaluations."""
    import platform

    import keras
    import numpy
    import tensorflow

    return {"deepface": __version__, "keras": keras.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "tensorflow": tensorflow.__version__}


def load(model_dir, evaluation_dir=None, **options):
    """A `deepface.api.FaceVerifier` for a model directory written by ``deepface train``.

    This is `deepface.api.load` (see it for every option: ``threshold``, ``score``, ``flip``, ``align``,
    ``no_face``, ``batch_size``); TensorFlow is imported only now.

    Args:
        model_dir: the model directory (``embedding.keras``, ``metadata.json``).
        evaluation_dir: an output directory of ``deepface evaluate`` for this model: its threshold.json
            gives the decision threshold and the flip setting.

    Returns:
        A `deepface.api.FaceVerifier`.

    Raises:
        DeepFaceError: no embedding.keras in ``model_dir``, a threshold.json of another model, bad options.

    Example::

        verifier = deepface.load("out/model", evaluation_dir="out/eval")
        verifier.verify("a.jpg", "b.jpg")  # {"score": "cosine", "value": 0.93, "same": True, ...}
    """
    from deepface.api import load as load_verifier

    return load_verifier(model_dir, evaluation_dir, **options)


def __getattr__(name: str):
    """``deepface.FaceVerifier``, imported on first use (it needs NumPy and Pillow, not TensorFlow)."""
    if name == "FaceVerifier":
        from deepface.api import FaceVerifier

        return FaceVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------ custom layers for Keras loads

_LAYERS = "deepface.layers"
_hook_lock = threading.Lock()


def _register_layers() -> None:
    """Import `deepface.layers` (its decorators register the custom layers with Keras).

    Never raises: a failure (say, Keras on a backend without TensorFlow) must not break whatever imported
    Keras; it is logged, and loading a DeepFace model then fails with Keras's "Could not locate class".
    """
    if _LAYERS in sys.modules:  # imported, or being imported (it imports Keras): it registers itself
        return
    try:
        importlib.import_module(_LAYERS)
    except Exception as error:  # noqa: BLE001 (see the docstring)
        _logger.warning("deepface: custom layers not registered with Keras (%s: %s); import deepface.layers "
                        "before loading a DeepFace model", type(error).__name__, error)


class _AfterKeras:
    """Loader wrapper: runs Keras's loader, then `_register_layers`. The module gets Keras's own loader
    back before its code runs, so ``keras.__loader__`` and ``keras.__spec__`` look as without the hook."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)  # an error here propagates, as without the hook
        _register_layers()


class _KerasImportHook:
    """A `sys.meta_path` finder that answers only for the top-level module ``keras``: it asks the finders
    after it for Keras's spec and returns it with its loader wrapped in `_AfterKeras`.

    Python calls finders under the import lock of the module being found, so two threads never load Keras
    twice; a plain ``importlib.util.find_spec("keras")`` (TensorFlow makes some) gets the wrapped spec too,
    which is harmless: the wrapper acts only when the module is executed. The finder stays in place once
    Keras is loaded (Python asks finders only for modules not in `sys.modules`, so it is then never asked
    for Keras again; for any other name it returns None after one comparison): removing an entry of
    `sys.meta_path` while another thread iterates over it could make that thread skip a finder.
    """

    _deepface_keras_hook = True  # a marker that survives reloading this module (class identity does not)

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or path is not None:
            return None
        for finder in list(sys.meta_path):
            if getattr(finder, "_deepface_keras_hook", False) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _AfterKeras(spec.loader)
            return spec
        return None

    def invalidate_caches(self) -> None:
        pass


def _install_hook() -> None:
    """Register the custom layers now if Keras is loaded, else once it is (see the module docstring)."""
    if "keras" in sys.modules:
        _register_layers()
        return
    with _hook_lock:
        if not any(getattr(finder, "_deepface_keras_hook", False) for finder in sys.meta_path):
            sys.meta_path.insert(0, _KerasImportHook())


_install_hook()

# TensorFlow's start-up lines (absl INFO lines before its log level applies): filtered from its import on.
from deepface import startup as _startup  # noqa: E402

_startup.install()
