"""Keras 3 layers of DeepFace: the locally connected layer (Keras 3 dropped LocallyConnected2D) and the
feature normalisation of the paper's representation.

The project runs Keras 3 on the TensorFlow backend; LocallyConnected2D uses TensorFlow directly where
Keras has no equivalent: the matmul flag ``transpose_a``, a custom gradient, an in-place row add, and XLA.
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


# Patch elements per image that `LocallyConnected2D` gathers at a time: one output row of L4
# (55 x 1296), 9 MB at batch 32, stays in cache; several rows of L5 and L6 (benchmarks/bench_layers.py).
BLOCK_PATCH_ELEMENTS = 72_000


def col2im(grad, *, kernel: tuple[int, int], strides: tuple[int, int], rows: int, cols: int, channels: int):
    """The gradient of gathering patches: every patch element added back to the image element it came from.

    ``grad``: (out_rows, out_cols, kernel_rows * kernel_cols * channels, batch), patch elements ordered
    (kernel row, kernel column, channel), for valid patches of a (rows, cols, channels) image at
    ``strides``. Returns (rows, cols, channels, batch).

    Offset (i, j) of every patch lands on image rows ``r * stride + i``: on the rows of stride phase
    ``i % stride``, shifted by ``i // stride``. Each phase sums its offsets' padded slices; the phases are
    then interleaved back into rows (and the same for columns). Under XLA that is one fused loop.
    """
    (kr, kc), (sr, sc) = kernel, strides
    out_rows, out_cols = grad.shape[0], grad.shape[1]
    grad = tf.reshape(grad, (out_rows, out_cols, kr, kc, channels, -1))
    phase_rows, phase_cols = -(-rows // sr), -(-cols // sc)  # rows and columns of each phase
    zero = tf.zeros((phase_rows, phase_cols, channels, tf.shape(grad)[-1]), grad.dtype)
    phases = [[tf.add_n([zero] + [
        tf.pad(grad[:, :, i, j], [[i // sr, phase_rows - out_rows - i // sr],
                                  [j // sc, phase_cols - out_cols - j // sc], [0, 0], [0, 0]])
        for i in range(p, kr, sr) for j in range(q, kc, sc)]) for q in range(sc)] for p in range(sr)]
    image = tf.stack([tf.stack(row, axis=2) for row in phases], axis=1)  # (rows/sr, sr, cols/sc, sc, ...)
    return tf.reshape(image, (phase_rows * sr, phase_cols * sc, channels, -1))[:rows, :cols]


@keras.saving.register_keras_serializable(package="deepface")
class LocallyConnected2D(keras.layers.Layer):
    """2-D convolution with unshared weights: every output position has its own kernel.

    Valid padding, channels last. The weights use exactly the layout of tf.keras
    ``LocallyConnected2D(implementation=1)``, so weights saved by tf.keras transfer as they are:

    - kernel: ``(out_rows * out_cols, kernel_rows * kernel_cols * channels, filters)``; the patch axis is
      ordered (kernel row, kernel column, channel) and the position axis row-major over the output.
    - bias: ``(out_rows, out_cols, filters)``.

    How it computes: the input is laid out batch-innermost, ``(rows * cols * channels, batch)``; a gather
    with indices fixed at build time forms patches as ``(positions, patch, batch)``, and a batched matmul
    with positions as the batch applies the kernels, a block of output rows at a time
    (`_apply_kernels_by_rows`), so that a block's patches stay in cache. So does the backward pass: the
    block's patches gathered again for the kernel's gradient, and the patches' gradient added back into
    the input rows it covers (`col2im` over kernel columns under XLA, then an in-place add of those
    rows). No patch tensor of the whole layer exists (500 MB for L4 at batch 32), forward or backward.
    benchmarks/bench_layers.py measures it against tf.keras's implementation=1 (3025 slices for L4) and
    the alternatives we rejected.

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
        self._columns_back = tf.function(self._columns_back, jit_compile=True)

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

    def apply_kernels(self, inputs):
        """(batch, rows, cols, channels) -> (out_rows * out_cols, filters, batch): every position's kernel
        applied to its patch, a block of output rows at a time (`_apply_kernels_by_rows`)."""
        _, rows, cols, channels = inputs.shape
        batch_innermost = tf.reshape(tf.transpose(inputs, (1, 2, 3, 0)), (rows * cols * channels, -1))
        return self._apply_kernels_by_rows(batch_innermost, self.kernel.value, rows, cols, channels)

    def row_blocks(self) -> list[np.ndarray]:
        """The output rows `_apply_kernels_by_rows` takes at a time: consecutive rows, as many as make about
        `BLOCK_PATCH_ELEMENTS` patch elements per image (at least one row)."""
        size = max(1, BLOCK_PATCH_ELEMENTS // (self.out_cols * self.kernel.shape[1]))
        return np.array_split(np.arange(self.out_rows), -(-self.out_rows // size))

    def _apply_kernels_by_rows(self, batch_innermost, kernel, rows: int, cols: int, channels: int):
        """`apply_kernels`, a block of output rows at a time (`row_blocks`), with its gradient.

        ``batch_innermost``: (rows * cols * channels, batch); ``kernel``: (positions, patch, filters).

        Each block gathers its own patches (block positions, patch, batch), a few MB that stay in cache
        between the gather and the matmul, instead of one patch tensor of every row (500 MB for L4 at
        batch 32). The backward pass gathers them again block by block (nothing is kept from the forward
        pass) for the kernel's gradient, and adds the patches' gradient back into the input's:
        `_columns_back` sums each output row's kernel columns under XLA, giving one input row per output
        row and kernel row, and ``tensor_scatter_nd_add`` adds those rows in place (summing the rows that
        several output rows cover). The blocks run in order (control dependencies), so one block's
        tensors are in memory at a time. The input's gradient is summed in float32 whatever the compute
        dtype (under mixed_bfloat16 it is then 3x closer to float32's than TensorFlow's gather gradient,
        and as fast).
        """
        kr, sr = self.kernel_size[0], self.strides[0]
        blocks = self.row_blocks()
        indices = self._patch_indices(rows, cols, channels).reshape(self.out_rows, -1)
        positions = [len(block) * self.out_cols for block in blocks]

        def patches(block, after):
            with tf.control_dependencies(after):
                flat = tf.gather(batch_innermost, indices[blocks[block]].reshape(-1))
                return tf.reshape(flat, (positions[block], kernel.shape[1], -1))

        @tf.custom_gradient
        def by_rows(batch_innermost, kernel):
            kernels = tf.split(kernel, positions)  # (block positions, patch, filters) each
            outputs = []
            for block in range(len(blocks)):
                outputs.append(tf.linalg.matmul(kernels[block], patches(block, outputs[-1:]), transpose_a=True))

            def gradient(upstream):  # (positions, filters, batch)
                upstream_blocks = tf.split(upstream, positions)
                grad_input = tf.zeros((rows, cols * channels, tf.shape(upstream)[-1]), "float32")  # summed here
                grad_kernels = []
                for block, out_rows in enumerate(blocks):
                    grad_kernels.append(tf.linalg.matmul(patches(block, [grad_input]), upstream_blocks[block],
                                                         transpose_b=True))
                    grad_patches = tf.cast(tf.linalg.matmul(kernels[block], upstream_blocks[block]), "float32")
                    covered = self._columns_back(grad_patches, len(out_rows), cols, channels)
                    input_rows = (out_rows[:, None] * sr + np.arange(kr)).reshape(-1, 1).astype("int32")
                    grad_input = tf.tensor_scatter_nd_add(grad_input, input_rows, covered)
                grad_input = tf.cast(tf.reshape(grad_input, (rows * cols * channels, -1)), upstream.dtype)
                return grad_input, tf.concat(grad_kernels, 0)

            return tf.concat(outputs, 0), gradient

        return by_rows(batch_innermost, kernel)

    def _columns_back(self, grad_patches, out_rows: int, cols: int, channels: int):
        """The patch gradient of ``out_rows`` output rows, (out_rows * out_cols, patch, batch), added back by
        kernel column: (out_rows * kernel_rows, cols * channels, batch), the input row of each output row
        and kernel row. Compiled with XLA (one fused loop)."""
        (kr, kc), (_, sc) = self.kernel_size, self.strides
        grad = tf.reshape(grad_patches, (out_rows, self.out_cols, kr, kc * channels, -1))
        grad = tf.reshape(tf.transpose(grad, (0, 2, 1, 3, 4)), (out_rows * kr, self.out_cols, kc * channels, -1))
        return tf.reshape(col2im(grad, kernel=(1, kc), strides=(1, sc), rows=out_rows * kr, cols=cols,
                                 channels=channels), (out_rows * kr, cols * channels, -1))

    def call(self, inputs):
        outputs = self.apply_kernels(inputs)  # (positions, filters, batch)
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
