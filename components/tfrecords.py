"""Component: TFRecord shards of the training images, at the input size of the model preset."""

from kfp.dsl import Dataset, Input, Output

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import PipelineSettings, TfrecordsSettings, TrainSettings


@stage_component
@takes_settings(TfrecordsSettings, TrainSettings, PipelineSettings,
                renamed={"source": (PipelineSettings, "training_images")})
def build_tfrecords(
    data: Input[Dataset],
    labels: Input[Dataset],
    tfrecords: Output[Dataset],
    preset: str,
    source: str,
    landmarks: str,
    split: str,
    keep_original: bool,
    align: bool,
    no_face: str,
    max_bad_fraction: float,
    jpeg_quality: int,
    shard_mb: float,
):
    """Write the images of one archive of the data folder as TFRecord shards (schema v1) of faces at the
    input size of ``preset``. Landmarks come from the named file of the data folder; when the folder has
    no such file, the face detector finds the faces.

    Args:
        data: the fetched data folder.
        labels: the class map (classes.txt) from the labels step.

    Returns:
        tfrecords: folder of <split>-NNNNN-of-NNNNN.tfrecord shards and manifest.json.
    """
    import os

    from deepface.config import get_config  # no TensorFlow import just for the image size
    from deepface.landmarks import landmarks_in
    from deepface.tfrecords import build_tfrecords

    build_tfrecords(
        os.path.join(data.path, source), labels.path, tfrecords.path,
        landmarks=landmarks_in(data.path, landmarks) if align else None, image_size=get_config(preset).image_size,
        split=split, keep_original=keep_original, align=align, no_face=no_face, max_bad_fraction=max_bad_fraction,
        jpeg_quality=jpeg_quality, shard_mb=shard_mb,
    )
