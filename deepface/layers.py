"""Keras 3 layers of DeepFace: the locally connected layer (Keras 3 dropped LocallyConnected2D) and the
feature normalisation of the paper's representation."""

from __future__ import annotations

import keras
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

    The patches are gathered position-major, ``(positions, batch, patch)``, by stacking the
    ``kernel_rows * kernel_cols`` strided slices of the (rows, cols, batch, channels) transposed input,
    so that a single batched matmul with positions as the batch does all the work and no large tensor
    is ever transposed. Its gradient is again slices and batched matmuls (XLA-friendly).

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

    def extract_patches(self, inputs):
        """(batch, rows, cols, channels) -> (out_rows * out_cols, batch, kernel_rows * kernel_cols * channels)."""
        (kr, kc), (sr, sc) = self.kernel_size, self.strides
        row_span = (self.out_rows - 1) * sr + 1
        col_span = (self.out_cols - 1) * sc + 1
        grid_major = ops.transpose(inputs, (1, 2, 0, 3))  # (rows, cols, batch, channels)
        offsets = [
            grid_major[i : i + row_span : sr, j : j + col_span : sc]  # (out_rows, out_cols, batch, channels)
            for i in range(kr)
            for j in range(kc)
        ]
        patches = ops.stack(offsets, axis=3)  # (out_rows, out_cols, batch, kr * kc, channels)
        batch = ops.shape(inputs)[0]
        return ops.reshape(patches, (self.out_rows * self.out_cols, batch, -1))

    def call(self, inputs):
        patches = self.extract_patches(inputs)
        outputs = ops.matmul(patches, self.kernel)  # (positions, batch, filters)
        outputs = ops.reshape(outputs, (self.out_rows, self.out_cols, -1, self.filters))
        outputs = ops.transpose(outputs, (2, 0, 1, 3))  # (batch, out_rows, out_cols, filters)
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
