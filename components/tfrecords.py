"""Component: TFRecord shards of the training images, at the input size of the model preset."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def build_tfrecords(
    data: Input[Dataset],
    labels: Input[Dataset],
    tfrecords: Output[Dataset],
    preset: str = "tiny",
    source: str = "vggface2_train.tar.gz",
    split: str = "train",
    keep_original: bool = False,
    max_bad_fraction: float = 0.01,
    align: bool = True,
    landmarks: str = "bb_landmark.tar.gz",
    no_face: str = "skip",
):
    """Write the images of one archive as TFRecord shards (schema v1) of faces resized for ``preset``.

    Args:
        data: the fetched data folder.
        labels: the class map (classes.txt) from the labels step.
        preset: model preset (tiny, small or paper) whose input size the faces are stored at.
        source: archive of the data folder to convert (read as a stream, nothing extracted).
        split: prefix of the shard names.
        keep_original: store each file's original bytes instead of a resized JPEG.
        max_bad_fraction: fail when a larger share of the images cannot be stored.
        align: store faces aligned from 5 landmarks (the crop evaluate and verify make); False: whole frames.
        landmarks: landmark file of the data folder (VGGFace2's bb_landmark.tar.gz, or a
            loose_landmark_*.csv); when the folder has no such file, the face detector finds the faces.
        no_face: when the detector finds no face: skip (counted) or center-crop.

    Returns:
        tfrecords: folder of <split>-NNNNN-of-NNNNN.tfrecord shards and manifest.json.
    """
    import os

    from deepface.config import get_config  # no TensorFlow import just for the image size
    from deepface.landmarks import landmarks_in
    from deepface.tfrecords import build_tfrecords as build

    build(
        os.path.join(data.path, source), labels.path, tfrecords.path, split=split,
        image_size=get_config(preset).image_size, keep_original=keep_original,
        max_bad_fraction=max_bad_fraction, align=align,
        landmarks=landmarks_in(data.path, landmarks) if align else None, no_face=no_face,
    )
