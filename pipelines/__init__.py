"""The DeepFace KFP pipeline (`pipelines.pipeline`) and the commands that compile, send and run it.

``python -m pipelines --help`` lists the commands: compile, submit (Vertex AI), schedule, upload
(Artifact Registry), submit-kfp (Kubeflow Pipelines), run-local (kfp.local on this machine) and demo (the
main job: run-local on the embedded synthetic data).
"""
