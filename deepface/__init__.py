"""DeepFace (Taigman et al., CVPR 2014) for Keras 3, and the stages of its training pipeline.

Each pipeline stage is one function in this package (``synth``, ``fetch``, ``labels``, ``tfrecords``,
``train``, ``evaluate``), called alike by the ``deepface`` command line, the KFP components and the tests.
This package never imports kfp.
"""

__version__ = "0.1.0"
