"""Import the seed project's released weights (a tf.keras HDF5 file) into a Keras 3 model directory.

The seed (swghosh/DeepFace) trained a tf.keras ``Sequential`` named ``DeepFace`` with layers C1, M2, C3,
L4, L5, L6, F0, F7, D0, F8 and saved it with ``model.save_weights("x.h5")``, e.g. the released
``VGGFace2_DeepFace_weights_val-0.9034.h5``. That file is read here with h5py alone (tf_keras is not
needed): its layout, written by tf_keras' legacy HDF5 saver, is

- root attribute ``layer_names``: every layer name in model order (split into ``layer_names0``,
  ``layer_names1``, ... when longer than an HDF5 attribute allows);
- one group per layer, with attribute ``weight_names`` (``"C1/kernel:0"``, ``"C1/bias:0"``; empty for
  layers without weights) and one dataset per weight name;
- a whole-model file (``model.save("x.h5")``) holds the same under the group ``model_weights``.

The weights go as they are into :func:`deepface.model.build_classifier`: Conv2D and Dense share tf.keras'
layouts, and :class:`deepface.layers.LocallyConnected2D` uses the kernel/bias layout of tf.keras
``LocallyConnected2D(implementation=1)``. Every shape is checked first; a file of another structure
gets a DeepFaceError naming the first layer that does not match.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from deepface.contracts import remove_manifest, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import md5_file, write_json

logger = logging.getLogger(__name__)

CLASSIFIER_FILE = "classifier.keras"
EMBEDDING_FILE = "embedding.keras"

# {layer name: {weight name ("kernel", "bias"): array}} in the file's layer order
LayerWeights = dict[str, dict[str, np.ndarray]]


def _read_string_list(group, name: str) -> list[str]:
    """An HDF5 string-list attribute as tf_keras writes it, chunked as name0, name1, ... when large."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [item.decode("utf8") if isinstance(item, bytes) else str(item) for chunk in chunks for item in chunk]


def _short_weight_name(full_name: str) -> str:
    """``"C1/kernel:0"`` -> ``"kernel"``."""
    return full_name.rsplit("/", 1)[-1].split(":", 1)[0]


def read_seed_weights(h5_path: str | os.PathLike) -> LayerWeights:
    """Read every layer that has weights from a tf.keras HDF5 weights (or whole-model) file.

    Returns:
        ``{layer name: {"kernel": array, "bias": array}}`` in the file's layer order, layers without
        weights (pooling, flatten, dropout) left out.
    """
    import h5py

    path = Path(h5_path)
    if not path.is_file():
        raise DeepFaceError(f"weights file {path} not found")
    if not h5py.is_hdf5(path):
        raise DeepFaceError(f"{path} is not an HDF5 file: expected weights saved by tf.keras "
                            "model.save_weights('x.h5'), such as VGGFace2_DeepFace_weights_val-0.9034.h5")
    try:
        with h5py.File(path, "r") as h5:
            return _read_layers(h5.get("model_weights", h5), path)
    except (OSError, KeyError) as error:  # h5py's errors for truncated or damaged files
        raise DeepFaceError(f"{path}: cannot read the HDF5 file ({error}); it is truncated or corrupt: "
                            "download it again") from error


def _read_layers(root, path: Path) -> LayerWeights:
    """The layers with weights under an HDF5 group laid out by tf_keras (see the module docstring)."""
    layer_names = _read_string_list(root, "layer_names")
    if not layer_names:
        raise DeepFaceError(f"{path} has no 'layer_names' attribute: it is not a tf.keras HDF5 weights "
                            "file (Keras 3 '.weights.h5' files are not supported; load those with Keras)")
    layers: LayerWeights = {}
    for layer_name in layer_names:
        if layer_name not in root:
            raise DeepFaceError(f"{path}: layer {layer_name!r} is listed in 'layer_names' but has no group; "
                                "the file is truncated or corrupt")
        group = root[layer_name]
        weights = {_short_weight_name(name): np.asarray(group[name])
                   for name in _read_string_list(group, "weight_names")}
        if weights:
            layers[layer_name] = weights
    return layers


def _expected_weights(model) -> dict[str, dict[str, tuple[int, ...]]]:
    """``{layer name: {weight name: shape}}`` of the Keras 3 model's layers that have weights."""
    return {layer.name: {variable.name: tuple(variable.shape) for variable in layer.weights}
            for layer in model.layers if layer.weights}


def _num_classes(layers: LayerWeights, h5_path) -> int:
    """Identities of the file's F8 layer (its kernel's last axis); the last layer when names differ."""
    name = "F8" if "F8" in layers else (list(layers)[-1] if layers else None)
    kernel = layers.get(name, {}).get("kernel")
    if kernel is None or kernel.ndim != 2:
        raise DeepFaceError(f"{h5_path}: no dense F8 kernel found (layers with weights: {', '.join(layers) or 'none'})")
    return int(kernel.shape[-1])


def _pair_layers(found: LayerWeights, expected: dict, h5_path) -> list[tuple[str, str]]:
    """(model layer, file layer) pairs: by name when the file uses the seed's names; by order (as tf.keras
    ``load_weights`` does for HDF5 files) when it uses none of them but has as many layers."""
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if not missing and not extra:
        return [(name, name) for name in expected]
    if len(found) == len(expected) and len(missing) == len(expected):
        logger.warning("%s: layer names (%s) differ from the seed's (%s); matching them by order",
                       h5_path, ", ".join(found), ", ".join(expected))
        return list(zip(expected, found))
    found_text = ", ".join(f"{name} {tuple(weights['kernel'].shape) if 'kernel' in weights else ''}".strip()
                           for name, weights in found.items())
    if missing:
        raise DeepFaceError(f"{h5_path}: layer {missing[0]} (kernel {expected[missing[0]]['kernel']}) not found; "
                            f"the file's layers with weights are: {found_text}")
    raise DeepFaceError(f"{h5_path}: unexpected layer {extra[0]!r} with weights; expected only "
                        f"{', '.join(expected)} (the file has: {found_text})")


def check_structure(found: LayerWeights, model, h5_path, preset: str) -> list[tuple[str, str]]:
    """Check every weight shape of the file against ``model``; return the (model, file) layer pairs.

    Raises:
        DeepFaceError naming the first layer whose weights are missing or have another shape.
    """
    expected = _expected_weights(model)
    pairs = _pair_layers(found, expected, h5_path)
    for model_layer, file_layer in pairs:
        for weight_name, shape in expected[model_layer].items():
            array = found[file_layer].get(weight_name)
            label = model_layer if model_layer == file_layer else f"{model_layer} (file layer {file_layer!r})"
            if array is None:
                raise DeepFaceError(f"{h5_path}: layer {label} has no {weight_name} "
                                    f"(found weights: {', '.join(found[file_layer])})")
            if tuple(array.shape) != shape:
                raise DeepFaceError(
                    f"{h5_path}: layer {label} {weight_name} has shape {tuple(array.shape)}, expected {shape} "
                    f"for the {preset!r} preset; is this a file of another preset or model?")
        unexpected = set(found[file_layer]) - set(expected[model_layer])
        if unexpected:
            raise DeepFaceError(f"{h5_path}: layer {file_layer} has unexpected weights {sorted(unexpected)}")
    return pairs


def import_seed_weights(h5_path: str | os.PathLike, out_dir: str | os.PathLike, *, preset: str = "paper") -> Path:
    """Convert the seed's tf.keras HDF5 weights into a Keras 3 model directory.

    Args:
        h5_path: HDF5 file written by the seed's ``model.save_weights`` (or ``model.save``).
        out_dir: the model directory to write (created; files replaced atomically).
        preset: the ``deepface.model`` preset whose sizes the file has (``paper`` for the release).

    Writes ``classifier.keras`` (image in [0, 1] -> F8 probabilities), ``embedding.keras`` (image ->
    L2-normalised F7; the per-feature maxima are left at 1 because the seed's training set is not at
    hand), ``metadata.json`` (preset, image_size, num_classes, source file name and md5) and
    ``manifest.json`` last. The number of classes comes from the file's F8 kernel.

    Returns:
        ``out_dir`` as a Path.
    """
    from deepface.model import build_classifier, build_embedding_model, get_config, save_model

    config = get_config(preset)
    found = read_seed_weights(h5_path)
    num_classes = _num_classes(found, h5_path)
    logger.info("read %d layers with weights (%s) from %s; %d classes", len(found), ", ".join(found),
                h5_path, num_classes)
    model = build_classifier(config, num_classes)
    pairs = check_structure(found, model, h5_path, config.name)
    for model_layer, file_layer in pairs:
        layer = model.get_layer(model_layer)
        layer.set_weights([found[file_layer][variable.name] for variable in layer.weights])
    parameters = model.count_params()
    logger.info("imported %s parameters into the %r preset", f"{parameters:,}", config.name)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_manifest(out)  # the directory is incomplete until it is rewritten
    save_model(model, out / CLASSIFIER_FILE)
    save_model(build_embedding_model(model), out / EMBEDDING_FILE)
    source = Path(h5_path)
    metadata = {
        "preset": config.name,
        "model_config": config.to_dict(),
        "image_size": config.image_size,
        "num_classes": num_classes,
        "parameters": parameters,
        "source": {"file": source.name, "md5": md5_file(source), "bytes": source.stat().st_size,
                   "format": "tf.keras HDF5 weights (seed project)"},
        "feature_max": "ones: not computed (the seed's training set is not available)",
        "classes": "unknown: the seed numbered identities in filesystem listing order",
    }
    write_json(out / "metadata.json", metadata)
    write_manifest(out, {"stage": "import-weights", "files": [CLASSIFIER_FILE, EMBEDDING_FILE, "metadata.json"],
                         "source_md5": metadata["source"]["md5"]})
    logger.info("wrote %s", out)
    return out
