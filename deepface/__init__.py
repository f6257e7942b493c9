"""DeepFace (Taigman et al., CVPR 2014) for Keras 3, and the stages of its training pipeline.

Each pipeline stage is one function in this package (``synth``, ``fetch``, ``labels``, ``tfrecords``,
``train``, ``evaluate``), called alike by the ``deepface`` command line, the KFP components and the tests.
This package never imports kfp.
"""

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """Versions of what decides the results (Python, deepface, TensorFlow, Keras, NumPy), recorded in the
    metadata of models and evaluations."""
    import platform

    import keras
    import numpy
    import tensorflow

    return {"deepface": __version__, "keras": keras.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "tensorflow": tensorflow.__version__}
