"""Component: the class map (sorted identities) of the training images."""

from kfp.dsl import Dataset, Input, Output

from components.launcher import stage_component


@stage_component
def build_labels(
    data: Input[Dataset],
    labels: Output[Dataset],
    source: str = "train_list.txt",
):
    """Write classes.txt (one identity per line, line index = class id) and class_counts.tsv.

    Args:
        data: the fetched data folder.
        source: file of the data folder to index: an image list (train_list.txt, fast) or the train
            archive (vggface2_train.tar.gz, read as a stream).

    Returns:
        labels: folder with classes.txt, class_counts.tsv and manifest.json.
    """
    import os

    from deepface.labels import build_labels as build

    build(os.path.join(data.path, source), labels.path)
