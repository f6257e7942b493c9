"""The DeepFace network (Taigman et al., CVPR 2014) in Keras 3, its presets, and its embedding model.

Topology (the paper's, with the seed project's layer names)::

    C1 conv 11x11 -> M2 maxpool 3x3/2 (same) -> C3 conv 9x9 -> L4 local 9x9 -> L5 local 7x7/2
       -> L6 local 5x5 -> F0 flatten -> F7 dense -> D0 dropout -> F8 softmax

ReLU after every layer but F8; the ``paper`` preset initialises kernels N(0, 0.01) and biases 0.5 (as the
seed). The small presets keep this topology and change sizes, and use He-normal kernels with zero biases:
with N(0, 0.01) and so few channels the activations shrink layer by layer until F7 is nearly constant
across images and a few hundred SGD steps leave the loss at ln(classes).

=======  =====  ==================  =====  ===========================  ==========================
preset   input  C1/C3/L4/L5/L6      F7     parameters                   use
=======  =====  ==================  =====  ===========================  ==========================
paper    152    32/16/16/16/16      4096   137,774,071 (8631 classes)   the real network
small    96     16/8/8/8/8          512    ~4.4M + 513 per class        demo (trains in minutes)
tiny     80     8/4/4/4/4           128    ~0.5M + 129 per class        tests (trains in seconds)
=======  =====  ==================  =====  ===========================  ==========================

``tiny`` uses the smallest input that still leaves the spatial chain of the paper valid with some
room (80 -> C1 70 -> M2 35 -> C3 27 -> L4 19 -> L5 7 -> L6 3; 71 is the minimum).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from deepface.config import PAPER_NUM_CLASSES, PRESETS, ModelConfig, get_config  # noqa: F401 (re-exported)
from deepface.errors import DeepFaceError
from deepface.layers import FeatureNormalization, LocallyConnected2D


def spatial_sizes(preset: str | ModelConfig) -> dict[str, int]:
    """Side of each layer's output map, e.g. paper: C1 142, M2 71, C3 63, L4 55, L5 25, L6 21."""
    size = get_config(preset).image_size
    sizes = {"C1": size - 10}
    sizes["M2"] = -(-sizes["C1"] // 2)  # 'same' padding, stride 2
    sizes["C3"] = sizes["M2"] - 8
    sizes["L4"] = sizes["C3"] - 8
    sizes["L5"] = (sizes["L4"] - 7) // 2 + 1
    sizes["L6"] = sizes["L5"] - 4
    if sizes["L6"] < 1:
        raise DeepFaceError(f"image_size {size} is too small for the DeepFace topology: use 71 or more")
    return sizes


def build_classifier(
    preset: str | ModelConfig = "paper",
    num_classes: int = PAPER_NUM_CLASSES,
    *,
    seed: int | None = None,
    dtype_policy: str | None = None,
) -> keras.Model:
    """Build the DeepFace classifier.

    Args:
        preset: a name in ``PRESETS`` or a ModelConfig.
        num_classes: identities of the F8 softmax.
        seed: seeds every initializer and the dropout, so the same seed builds the same weights.
        dtype_policy: a Keras dtype policy such as ``"mixed_bfloat16"`` or ``"mixed_float16"``
            (the F8 softmax always computes in float32).

    Returns:
        A functional ``keras.Model`` named ``DeepFace``: image ``(batch, S, S, 3)`` in [0, 1] ->
        class probabilities ``(batch, num_classes)``.
    """
    config = get_config(preset)
    if int(num_classes) < 2:
        raise DeepFaceError(f"num_classes must be >= 2, got {num_classes}")
    seeds = iter(range(0 if seed is None else seed * 1000, 10**9))

    def init(fan_in: int) -> dict:
        """Initializers of one layer; He normal uses the true fan-in (a locally connected kernel's first
        axis is positions, not receptive field, so Keras' own HeNormal would get it wrong)."""
        stddev = config.kernel_stddev or float(np.sqrt(2.0 / fan_in))
        kernel = keras.initializers.RandomNormal(0.0, stddev, seed=None if seed is None else next(seeds))
        return dict(kernel_initializer=kernel, bias_initializer=keras.initializers.Constant(config.bias_value),
                    dtype=dtype_policy)

    s, c = config.image_size, config
    l6_size = spatial_sizes(config)["L6"]
    inputs = keras.Input((s, s, 3), name="image")
    x = keras.layers.Conv2D(c.c1_filters, 11, activation="relu", name="C1", **init(11 * 11 * 3))(inputs)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="M2", dtype=dtype_policy)(x)
    x = keras.layers.Conv2D(c.c3_filters, 9, activation="relu", name="C3", **init(9 * 9 * c.c1_filters))(x)
    x = LocallyConnected2D(c.l4_filters, 9, activation="relu", name="L4", **init(9 * 9 * c.c3_filters))(x)
    x = LocallyConnected2D(c.l5_filters, 7, strides=2, activation="relu", name="L5",
                           **init(7 * 7 * c.l4_filters))(x)
    x = LocallyConnected2D(c.l6_filters, 5, activation="relu", name="L6", **init(5 * 5 * c.l5_filters))(x)
    x = keras.layers.Flatten(name="F0", dtype=dtype_policy)(x)
    x = keras.layers.Dense(c.f7_units, activation="relu", name="F7", **init(l6_size**2 * c.l6_filters))(x)
    x = keras.layers.Dropout(c.dropout, seed=seed, name="D0", dtype=dtype_policy)(x)
    outputs = keras.layers.Dense(int(num_classes), activation="softmax", name="F8",
                                 **{**init(c.f7_units), "dtype": "float32"})(x)
    return keras.Model(inputs, outputs, name="DeepFace")


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """image -> raw F7 activations ``(batch, f7_units)`` (post-ReLU), sharing the classifier's layers."""
    return keras.Model(classifier.input, classifier.get_layer("F7").output, name="DeepFaceF7")


def compute_feature_max(classifier: keras.Model, images, steps: int | None = None,
                        total: int | None = None) -> np.ndarray:
    """Per-dimension maximum of F7 over a reference set (the paper uses the training set).

    Args:
        classifier: a model from :func:`build_classifier`.
        images: a dataset/iterable of image batches ``(batch, S, S, 3)`` or of ``(images, labels)`` tuples,
            or one array of images.
        steps: stop after this many batches (None: all).
        total: batches expected, for the progress bar (tqdm, silent when not on a terminal).

    Returns:
        float32 array ``(f7_units,)``.
    """
    extractor = feature_extractor(classifier)
    if isinstance(images, np.ndarray):
        images = [images[i : i + 256] for i in range(0, len(images), 256)]
    from tqdm import tqdm

    maximum = None
    expected = min(steps, total) if steps is not None and total is not None else steps or total
    for step, batch in enumerate(tqdm(images, total=expected, unit="batch", desc="F7 maxima", disable=None)):
        if steps is not None and step >= steps:
            break
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        features = np.asarray(extractor(batch, training=False), dtype=np.float32)
        batch_max = features.max(axis=0)
        maximum = batch_max if maximum is None else np.maximum(maximum, batch_max)
    if maximum is None:
        raise DeepFaceError("compute_feature_max: the reference image set is empty")
    return maximum


def build_embedding_model(classifier: keras.Model, feature_max=None) -> keras.Model:
    """The face representation: image ``(batch, S, S, 3)`` -> L2-normalised F7 features ``(batch, f7_units)``.

    Each F7 dimension is divided by ``feature_max`` (from :func:`compute_feature_max`), then the vector
    is L2-normalised, as in the paper. The normalisation runs in float32 and is saved with the model.
    """
    normalize = FeatureNormalization(name="F7_normalized", dtype="float32")
    outputs = normalize(classifier.get_layer("F7").output)
    if feature_max is not None:
        normalize.set_feature_max(feature_max)
    return keras.Model(classifier.input, outputs, name="DeepFaceEmbedding")


def count_params(preset: str | ModelConfig, num_classes: int = PAPER_NUM_CLASSES) -> int:
    """Parameters of a preset's classifier (built without allocating a graph's worth of compute)."""
    return build_classifier(preset, num_classes).count_params()


def save_model(model: keras.Model, path: str | os.PathLike) -> bytes:
    """Save ``model`` as a ``.keras`` file at ``path`` (local or gs://) atomically; returns the file's bytes.

    Keras writes the archive to a temporary folder first; ``deepface.files.write_bytes`` then puts it in
    place under a temporary name and renames it, so an interrupted save never leaves a file that looks
    complete.
    """
    import tempfile

    from deepface.files import write_bytes

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, os.path.basename(str(path)))
        model.save(local)
        with open(local, "rb") as handle:
            data = handle.read()
    write_bytes(path, data)
    return data


def load_embedding_model(model_dir: str | Path) -> tuple[keras.Model, dict]:
    """Load ``embedding.keras`` and ``metadata.json`` from a model directory written by training."""
    from deepface.files import read_json

    model_dir = Path(model_dir)
    path = model_dir / "embedding.keras"
    if not path.exists():
        raise DeepFaceError(f"{path} not found: model_dir must be a model directory written by `deepface train`")
    metadata = read_json(model_dir / "metadata.json") if (model_dir / "metadata.json").exists() else {}
    return keras.saving.load_model(path, compile=False), metadata
