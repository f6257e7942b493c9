"""Component: train the DeepFace classifier and write the model directory."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_model(
    tfrecords: Input[Dataset],
    labels: Input[Dataset],
    model: Output[Model],
    preset: str = "tiny",
    epochs: int = 15,
    batch_size: int = 0,
    learning_rate: float = 0.0,
    optimizer: str = "",
    validation_fraction: float = 0.0,
    steps_per_epoch: int = 0,
    augment: bool = False,
    strategy: str = "auto",
    precision: str = "auto",
    seed: int = 0,
):
    """Fit DeepFace on the TFRecords, by the preset's recipe unless told otherwise (deepface.config.RECIPES).

    Resumes from its last checkpoint when the step is retried (e.g. after a preemption).

    Args:
        tfrecords: training TFRecord shards.
        labels: the class map (classes.txt).
        preset: model size: tiny, small (DeepFace topology, fewer filters) or paper (the real network).
        epochs: training epochs (the paper: about 15).
        batch_size: global batch size over all replicas; 0: the preset's (paper 128, tiny and small 32).
        learning_rate: initial learning rate; for sgd it is for a batch of 128 and scaled linearly with
            batch_size, for adam it is used as given; 0: the preset's (paper 0.01, tiny and small 0.001).
        optimizer: sgd (the paper's, with momentum 0.9) or adam; empty: the preset's (paper sgd, tiny and
            small adam: what makes them learn in a few hundred steps).
        validation_fraction: share of the shards held out to monitor validation loss (0: none).
        steps_per_epoch: steps per epoch; 0 reads every training record once per epoch.
        augment: random flips and crops.
        strategy: auto (from the hardware), tpu, gpu, multi-gpu, multi-worker or cpu.
        precision: auto (bfloat16 on TPU, else float32), float32, bfloat16 or float16.
        seed: seeds the weights, dropout, data order and augmentation.

    Returns:
        model: model directory: classifier.keras, embedding.keras, classes.txt, metadata.json,
            history.json, training_curves.png, TensorBoard logs/, manifest.json.
    """
    from deepface.config import unset_to_none
    from deepface.train import train

    train(
        tfrecords.path, labels.path, model.path, preset=preset, epochs=epochs, batch_size=unset_to_none(batch_size),
        learning_rate=unset_to_none(learning_rate), optimizer=unset_to_none(optimizer),
        validation_fraction=validation_fraction,
        steps_per_epoch=steps_per_epoch or None, augment=augment, strategy=strategy, precision=precision,
        seed=seed,
    )
    model.metadata.update(framework="keras", preset=preset)
