"""Serving a trained model: the export for serving, the verification server and batch embedding.

- `deepface.serving.export.export_saved_model(model_dir, out_dir, threshold_json=...)`: the embedding model
  as a TensorFlow SavedModel (no Python, no custom layer needed to run it), with ``serving.json`` (how to
  cut faces for it, the evaluation's threshold) beside it: the serving directory.
- `deepface.serving.model.ServingModel`: a serving directory loaded (local or ``gs://``); embeds face crops
  exactly as `deepface.api.FaceVerifier` does, and decides pairs with the evaluation's threshold.
- `deepface.serving.server`: ``deepface serve``, an HTTP server under Vertex AI's custom-container contract
  (``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``, ``AIP_STORAGE_URI``), batching images
  of concurrent requests into one forward pass (`deepface.serving.batcher.MicroBatcher`).
- `deepface.serving.embed.embed_folder`: ``deepface embed``, the embeddings of every image of a folder or
  archive in resumable shards.

Importing this package imports no TensorFlow.
"""
