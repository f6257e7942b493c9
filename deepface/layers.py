"""Keras 3 layers of DeepFace: the locally connected layer (Keras 3 dropped LocallyConnected2D) and the
feature normalisation of the paper's representation.

The project runs Keras 3 on the TensorFlow backend; LocallyConnected2D uses TensorFlow directly where
Keras has no equivalent: the matmul flag ``transpose_a``, the patch gather's custom gradient, and XLA for it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"`{name}` must be a positive int or a pair of positive ints, got {value!r}")
    return value


@keras.saving.register_keras_serializable(package="deepface")
class LocallyConnected2D(keras.layers.Layer):
    """2-D convolution with unshared weights: every output position has its own kernel.

    Valid padding, channels last. The weights use exactly the layout of tf.keras
    ``LocallyConnected2D(implementation=1)``, so weights saved by tf.keras transfer as they are:

    - kernel: ``(out_rows * out_cols, kernel_rows * kernel_cols * channels, filters)``; the patch axis is
      ordered (kernel row, kernel column, channel) and the position axis row-major over the output.
    - bias: ``(out_rows, out_cols, filters)``.

    How it computes: the input is laid out batch-innermost, ``(rows * cols * channels, batch)``, and one
    gather with indices fixed at build time forms every patch at once as ``(positions, patch, batch)``;
    a single batched matmul with positions as the batch applies the kernels. The backward pass is the
    same matmuls plus the gather's gradient, written here as col2im: one shifted add per kernel offset
    (``_col2im``, compiled with XLA) instead of TensorFlow's segment sum over every patch element. No
    large tensor is ever transposed, and its memory is one patch tensor. benchmarks/bench_layers.py
    measures it against tf.keras's implementation=1 (3025 slices for L4) and the alternatives we rejected.

    Args:
        filters: number of output channels.
        kernel_size: int or (rows, cols).
        strides: int or (rows, cols).
        activation: activation applied to the output.
        use_bias: whether to add the per-position bias.

    Input shape: ``(batch, rows, cols, channels)``.
    Output shape: ``(batch, out_rows, out_cols, filters)`` with
    ``out = (in - kernel) // stride + 1`` on each axis.
    """

    def __init__(
        self,
        filters: int,
        kernel_size,
        strides=(1, 1),
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) < 1:
            raise ValueError(f"`filters` must be >= 1, got {filters}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self._indices = None  # patch gather indices, computed on first call
        self._col2im_compiled = tf.function(self._col2im, jit_compile=True)

    def output_grid(self, rows: int, cols: int) -> tuple[int, int]:
        """(out_rows, out_cols) for an input of (rows, cols)."""
        (kr, kc), (sr, sc) = self.kernel_size, self.strides
        out_rows, out_cols = (rows - kr) // sr + 1, (cols - kc) // sc + 1
        if out_rows < 1 or out_cols < 1:
            raise ValueError(
                f"{self.name}: input {rows}x{cols} is smaller than the kernel {kr}x{kc}; use a larger input"
            )
        return out_rows, out_cols

    def build(self, input_shape):
        _, rows, cols, channels = input_shape
        if rows is None or cols is None or channels is None:
            raise ValueError(f"{self.name}: LocallyConnected2D needs a fully defined input shape, got {input_shape}")
        self.out_rows, self.out_cols = self.output_grid(rows, cols)
        patch_size = self.kernel_size[0] * self.kernel_size[1] * channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.out_rows * self.out_cols, patch_size, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.out_rows, self.out_cols, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={1: rows, 2: cols, 3: channels})

    def _patch_indices(self, rows: int, cols: int, channels: int) -> np.ndarray:
        """Flat indices into a (rows, cols, channels) image of every patch element, ordered
        (output row, output col, kernel row, kernel col, channel): shape (positions * patch,)."""
        (kr, kc), (sr, sc) = self.kernel_size, self.strides
        r = np.arange(self.out_rows)[:, None, None, None, None] * sr + np.arange(kr)[None, None, :, None, None]
        c = np.arange(self.out_cols)[None, :, None, None, None] * sc + np.arange(kc)[None, None, None, :, None]
        z = np.arange(channels)[None, None, None, None, :]
        return ((r * cols + c) * channels + z).reshape(-1).astype("int32")

    def _col2im(self, grad_patches, rows: int, cols: int, channels: int):
        """The patch gather's gradient: (positions * patch, batch) -> (rows * cols * channels, batch), every
        patch element added back to the input element it came from.

        Offset (i, j) of every patch lands on input rows ``r * stride + i``: on the rows of stride phase
        ``i % stride``, shifted by ``i // stride``. Each phase sums its offsets' padded slices; the phases
        are then interleaved back into rows (and the same for columns). The sums run in float32 (XLA on
        a CPU adds bfloat16 elementwise slowly, and one rounding at the end is more accurate).
        """
        (kr, kc), (sr, sc) = self.kernel_size, self.strides
        grad = tf.reshape(tf.cast(grad_patches, "float32"), (self.out_rows, self.out_cols, kr, kc, channels, -1))
        phase_rows, phase_cols = -(-rows // sr), -(-cols // sc)  # rows and columns of each phase
        zero = tf.zeros((phase_rows, phase_cols, channels, tf.shape(grad)[-1]), grad.dtype)
        phases = [[tf.add_n([zero] + [
            tf.pad(grad[:, :, i, j], [[i // sr, phase_rows - self.out_rows - i // sr],
                                      [j // sc, phase_cols - self.out_cols - j // sc], [0, 0], [0, 0]])
            for i in range(p, kr, sr) for j in range(q, kc, sc)]) for q in range(sc)] for p in range(sr)]
        image = tf.stack([tf.stack(row, axis=2) for row in phases], axis=1)  # (rows/sr, sr, cols/sc, sc, ...)
        image = tf.reshape(image, (phase_rows * sr, phase_cols * sc, channels, -1))[:rows, :cols]
        return tf.cast(tf.reshape(image, (rows * cols * channels, -1)), grad_patches.dtype)

    def extract_patches(self, inputs):
        """(batch, rows, cols, channels) -> (out_rows * out_cols, kernel_rows * kernel_cols * channels, batch)."""
        _, rows, cols, channels = inputs.shape
        if self._indices is None:
            self._indices = self._patch_indices(rows, cols, channels)

        @tf.custom_gradient
        def gather(batch_innermost):  # (rows * cols * channels, batch) -> (positions * patch, batch)
            return tf.gather(batch_innermost, self._indices), lambda grad: self._col2im_compiled(
                grad, rows, cols, channels)

        batch_innermost = tf.reshape(tf.transpose(inputs, (1, 2, 3, 0)), (rows * cols * channels, -1))
        # col2im in float32 only: with it, bfloat16 training verified 0.047 below float32 over two seeds
        # (tests/integration/test_precision.py), while TensorFlow's own gradient of the gather trains as well.
        patches = gather(batch_innermost) if inputs.dtype == tf.float32 else tf.gather(batch_innermost, self._indices)
        return tf.reshape(patches, (self.out_rows * self.out_cols, self.kernel.shape[1], -1))

    def call(self, inputs):
        patches = self.extract_patches(inputs)
        # (positions, filters, batch); transpose_a avoids copying the kernel (Keras ops have no such flag)
        outputs = tf.linalg.matmul(self.kernel.value, patches, transpose_a=True)
        outputs = ops.reshape(outputs, (self.out_rows, self.out_cols, self.filters, -1))
        outputs = ops.transpose(outputs, (3, 0, 1, 2))  # (batch, out_rows, out_cols, filters)
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        out_rows, out_cols = self.output_grid(input_shape[1], input_shape[2])
        return (input_shape[0], out_rows, out_cols, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
        )
        return config


@keras.saving.register_keras_serializable(package="deepface")
class FeatureNormalization(keras.layers.Layer):
    """The paper's representation normalisation: divide each feature by its maximum over a reference set
    (the training data), then L2-normalise.

    The per-feature maxima are a non-trainable weight ``feature_max``, saved with the model; set them
    with :meth:`set_feature_max` (see ``deepface.model.compute_feature_max``).

    Input shape: ``(batch, features)`` (non-negative F7 activations). Output shape: the same, unit L2 norm.
    """

    def __init__(self, epsilon: float = 1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.feature_max = self.add_weight(
            name="feature_max", shape=(input_shape[-1],), initializer="ones", trainable=False
        )

    def set_feature_max(self, values) -> None:
        """Set the per-feature maxima; features whose max is 0 (dead units) are left undivided."""
        values = ops.convert_to_numpy(values).astype("float32")
        values[values <= 0] = 1.0
        self.feature_max.assign(values)

    def call(self, inputs):
        scaled = inputs / ops.cast(self.feature_max, inputs.dtype)
        norm = ops.sqrt(ops.maximum(ops.sum(ops.square(scaled), axis=-1, keepdims=True), self.epsilon))
        return scaled / norm

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon)
        return config
