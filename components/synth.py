"""Component: the embedded synthetic dataset, made when the pipeline is given no data URI."""

from kfp.dsl import Dataset, Output

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import PipelineSettings, SynthSettings


@stage_component
@takes_settings(SynthSettings, PipelineSettings)
def make_synthetic_dataset(
    data: Output[Dataset],
    data_uri: str,
    train_identities: int,
    test_identities: int,
    lfw_identities: int,
    images_per_identity: int,
    image_size: int,
    lfw_image_size: int,
    seed: int,
):
    """Synthetic faces laid out like the VGGFace2 and LFW releases, unless real data is given.

    The pipeline always runs this step so that its graph needs no condition: with a data URI it only
    creates an empty folder, and the fetch step copies the data URI instead. The parameters
    are those of `deepface.settings.SynthSettings` (defaults and descriptions from there).

    Returns:
        data: folder with vggface2_train.tar.gz, vggface2_test.tar.gz, train_list.txt, test_list.txt,
            bb_landmark.tar.gz (VGGFace2's loose boxes and 5 landmarks), lfw.tgz, lfw_landmarks.csv,
            pairs.txt and MD5SUMS (empty when data_uri is set).
    """
    import os

    os.makedirs(data.path, exist_ok=True)
    if data_uri:
        print(f"data_uri is set ({data_uri}): no synthetic data made")
        return
    from deepface.synth import make_synthetic_dataset

    make_synthetic_dataset(
        data.path, train_identities=train_identities, test_identities=test_identities,
        lfw_identities=lfw_identities, images_per_identity=images_per_identity, image_size=image_size,
        lfw_image_size=lfw_image_size, seed=seed,
    )
