"""SGD with momentum whose update is one fused op per weight.

Keras' SGD updates a weight with momentum in five elementwise passes over it (``m * momentum``,
``g * lr``, their difference, assigning ``m``, adding ``m`` to the weight), each a trip through memory.
For the `paper` model (~120M weights) that was 20% of a train step on a CPU (benchmarks/profile_step.py).
`MomentumSGD` does the same arithmetic as TensorFlow's one kernel ``ResourceApplyKerasMomentum``
(``m = m * momentum - lr * g; w += m``, in place): the weights after any number of steps are bitwise
those of Keras' SGD (tests/unit/test_momentum.py), and its variables and checkpoints are Keras' SGD's.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="deepface")
class MomentumSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with its momentum update fused into one op per weight.

    Same arguments, variables, checkpoints and results as ``keras.optimizers.SGD``. Nesterov momentum,
    momentum 0, sparse gradients and TPU strategies (whose variables are not plain resource
    variables in an update) take Keras' own update.

    Example: ``MomentumSGD(learning_rate=0.01, momentum=0.9)``.
    """

    def update_step(self, gradient, variable, learning_rate):
        if (self.momentum == 0 or self.nesterov or isinstance(gradient, tf.IndexedSlices)
                or isinstance(tf.distribute.get_strategy(), tf.distribute.TPUStrategy)):
            return super().update_step(gradient, variable, learning_rate)
        momentum = self.momentums[self._get_variable_index(variable)]
        variable = variable.value if isinstance(variable, keras.Variable) else variable
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=momentum.value.handle, lr=tf.cast(learning_rate, dtype),
            grad=tf.cast(gradient, dtype), momentum=tf.cast(self.momentum, dtype),
            use_locking=False, use_nesterov=False)
