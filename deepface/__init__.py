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


def _after_keras(module, execute) -> None:
    """Run Keras's own import, then `_register_layers` (a `deepface.import_hooks` ``around``)."""
    execute()  # an error here propagates, as without the hook
    _register_layers()


def _install_hook() -> None:
    """Register the custom layers now if Keras is loaded, else once it is (see the module docstring)."""
    if "keras" in sys.modules:
        _register_layers()
        return
    from deepface import import_hooks

    import_hooks.install("keras", _after_keras)


_install_hook()

# TensorFlow's start-up lines (absl INFO lines before its log level applies): filtered from its import on.
from deepface import startup as _startup  # noqa: E402

_startup.install()
