"""KFP components: one thin ``@dsl.component`` per pipeline stage, each calling one ``deepface`` function.

Every component runs in the project image (`components.image.IMAGE`) with ``install_kfp_package=False``
(kfp is already in the image), imports ``deepface`` inside its body (KFP ships only the function's
source to the container) and passes typed artifacts:

    synth_data       -> Dataset (the embedded synthetic VGGFace2 + LFW folder; empty when data_uri is set)
    fetch_data       Dataset -> Dataset (data_uri, or the synthetic folder, copied and MD5-verified)
    build_labels     Dataset -> Dataset (classes.txt)
    build_tfrecords  Dataset, Dataset -> Dataset (TFRecord shards)
    train_model      Dataset, Dataset -> Model (model directory)
    evaluate_model   Model, Dataset -> Dataset (evaluation folder), Metrics, ClassificationMetrics, HTML

This package's ``__init__`` stays free of kfp so that ``python -m components.image`` needs only the
standard library; import the components from their modules.
"""
