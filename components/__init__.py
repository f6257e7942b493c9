"""KFP components: one thin component per pipeline stage (`components.launcher.stage_component`, a
``@dsl.component`` whose command execs Python so that the task's process receives SIGTERM, after a check
that its outputs can be written), each calling one ``deepface`` function. Their settings parameters take
defaults and descriptions from `deepface.settings` (`components.parameters.takes_settings`).

Each component has the name of the ``deepface`` function it calls (so a stage has one name in the
library, its component and its pipeline task). Every component runs in the project image with
``install_kfp_package=False`` (kfp is already in the image), imports ``deepface`` inside its body (KFP ships
only the function's source to the container) and passes typed artifacts:

    make_synthetic_dataset  -> Dataset (the embedded synthetic VGGFace2 + LFW folder; empty when data_uri is set)
    fingerprint_data        -> str (names, sizes and checksums of data_uri's files; never cached)
    fetch                   Dataset, str -> Dataset (data_uri, or the synthetic folder, copied and MD5-verified;
                            the fingerprint makes its cache follow the data)
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
