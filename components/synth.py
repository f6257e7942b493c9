"""Component: the embedded synthetic dataset, made when the pipeline is given no data URI."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def synth_data(
    data: Output[Dataset],
    data_uri: str = "",
    train_identities: int = 40,
    test_identities: int = 20,
    lfw_identities: int = 40,
    images_per_identity: int = 24,
    image_size: int = 112,
    lfw_image_size: int = 250,
    seed: int = 0,
):
    """Synthetic faces laid out like the VGGFace2 and LFW releases, unless real data is given.

    The pipeline always runs this step so that its graph needs no condition: with a data URI it only
    creates an empty folder (in seconds), and the fetch step copies the data URI instead.

    Args:
        data_uri: the pipeline's data folder; when set, no synthetic data is made.
        train_identities: identities of the synthetic VGGFace2 train archive.
        test_identities: identities of the synthetic VGGFace2 test archive (disjoint from train).
        lfw_identities: people of the synthetic LFW archive.
        images_per_identity: images per VGGFace2 identity (the largest count of an LFW person).
        image_size: nominal side of the VGGFace2 images, in pixels.
        lfw_image_size: side of the square LFW images, in pixels.
        seed: the same seed and sizes give the same bytes.

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
