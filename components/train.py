"""Component: train the DeepFace classifier and write the model directory."""

from kfp.dsl import Dataset, Input, Model, Output

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import TrainSettings


@stage_component
@takes_settings(TrainSettings)
def train(
    tfrecords: Input[Dataset],
    labels: Input[Dataset],
    model: Output[Model],
    preset: str,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str,
    min_learning_rate: float,
    momentum: float,
    lr_factor: float,
    lr_patience: int,
    weight_decay: float,
    label_smoothing: float,
    validation_fraction: float,
    steps_per_epoch: int,
    augment: bool,
    seed: int,
    strategy: str,
    precision: str,
    jit_compile: bool,
    steps_per_execution: int,
    shuffle_buffer: int,
    checkpoint_steps: int,
    feature_max_batches: int,
):
    """Fit DeepFace on the TFRecords, by the preset's recipe unless told otherwise (deepface.config.RECIPES).
    The parameters are those of `deepface.settings.TrainSettings`; "" and 0 stand for its None (the
    preset's recipe, every record once per epoch, all the data).

    Resumes from its last checkpoint when the step is retried (e.g. after a preemption).

    Args:
        tfrecords: training TFRecord shards.
        labels: the class map (classes.txt).

    Returns:
        model: model directory: classifier.keras, embedding.keras, classes.txt, metadata.json,
            history.json, training_curves.png, TensorBoard logs/, manifest.json.
    """
    from deepface.settings import TrainSettings
    from deepface.train import train

    settings = TrainSettings.from_kfp(
        preset=preset, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
        min_learning_rate=min_learning_rate, momentum=momentum, lr_factor=lr_factor, lr_patience=lr_patience,
        weight_decay=weight_decay, label_smoothing=label_smoothing, validation_fraction=validation_fraction,
        steps_per_epoch=steps_per_epoch, augment=augment, seed=seed, strategy=strategy, precision=precision,
        jit_compile=jit_compile, steps_per_execution=steps_per_execution, shuffle_buffer=shuffle_buffer,
        checkpoint_steps=checkpoint_steps, feature_max_batches=feature_max_batches,
    )
    train(tfrecords.path, labels.path, model.path, **settings.to_dict())
    model.metadata.update(framework="keras", preset=preset)
