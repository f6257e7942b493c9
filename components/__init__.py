"""KFP components: one thin ``@dsl.component`` per pipeline stage, each calling one ``deepface`` function.

Each component has the name of the ``deepface`` function it calls (so a stage has one name in the
library, its component and its pipeline task). Every component runs in the project image with
``install_kfp_package=False`` (kfp is already in the image), imports ``deepface`` inside its body (KFP ships
only the function's source to the container) and passes typed artifacts:

    make_synthetic_dataset  -> Dataset (the embedded synthetic VGGFace2 + LFW folder; empty when data_uri is set)
    fetch                   Dataset -> Dataset (data_uri, or the synthetic folder, copied and MD5-verified)
    build_labels            Dataset -> Dataset (classes.txt)
    build_tfrecords         Dataset, Dataset -> Dataset (TFRecord shards)
    train                   Dataset, Dataset -> Model (model directory)
    evaluate                Model, Dataset -> Dataset (evaluation folder), Metrics, ClassificationMetrics, HTML

The components are decorated with `components.image.PLACEHOLDER`, not the image reference: computing that
runs git, so importing a component does not; the pipeline (`pipelines.pipeline`) sets the reference
(`components.image.image_reference`) on every task it creates.

This package's ``__init__`` stays free of kfp so that ``python -m components.image`` needs only the
standard library; import the components from their modules.
"""
