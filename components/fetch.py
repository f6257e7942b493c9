"""Component: verify the data folder's MD5s and hand it on: a gs:// folder where it is, any other copied."""

from kfp.dsl import Dataset, Input, Output

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import FetchSettings, PipelineSettings


@stage_component
@takes_settings(FetchSettings, PipelineSettings)
def fetch(
    synthetic: Input[Dataset],
    data: Output[Dataset],
    data_uri: str,
    auth_header_env: str,
    auth_secret: str,
    retries: int,
    copy_gs: bool,
    fingerprint: str = "",
):
    """Verify every file of the data folder (MD5s against an MD5SUMS file beside them, the published VGGFace2
    ones, or those GCS stores) and hand the folder on. A gs:// folder that this task sees through Cloud
    Storage FUSE (/gcs/BUCKET/..., as on Vertex AI) is verified from GCS's metadata and used where it is;
    any other folder (local, https, the synthetic one, or gs:// with copy_gs) is copied into the pipeline's
    storage.

    Args:
        synthetic: output of the synth step, copied when data_uri is empty.
        fingerprint: the fingerprint step's output for data_uri (`deepface.fingerprint`), only logged: as
            part of this task's cache key it makes the task rerun when the data behind data_uri changes.

    Returns:
        data: the data folder. Verified in place, its URI is the gs:// source folder itself (lineage starts
            there; the stages after read it through /gcs) and manifest.json stays in this task's own output
            folder, whose URI the metadata's "manifest" gives. Copied, it holds the files under their own
            names plus manifest.json. Metadata either way: source, in_place, files, bytes and the count of
            files per way of verification.
    """
    from collections import Counter

    from deepface.fetch import fetch
    from deepface.settings import FetchSettings
    from deepface.uris import redact_uri

    print(f"data fingerprint: {fingerprint or '(none given)'}")
    source = data_uri if data_uri else synthetic.path
    if not source.endswith("/"):
        source += "/"  # a folder: fetch every file under it
    settings = FetchSettings.from_kfp(auth_header_env=auth_header_env, auth_secret=auth_secret, retries=retries,
                                      copy_gs=copy_gs)
    own_folder = data.uri  # where this task may write: the manifest stays here when the data stays in place
    manifest = fetch([source], data.path, **settings.to_dict())
    files = manifest["files"].values()
    data.metadata.update({
        "source": redact_uri(data_uri) if data_uri else "synthetic", "in_place": "location" in manifest,
        "files": len(files), "bytes": sum(entry["bytes"] for entry in files),
        "verified": dict(sorted(Counter(entry["verified"] for entry in files).items())),
    })
    if "location" in manifest:
        data.metadata["manifest"] = own_folder.rstrip("/") + "/manifest.json"
        data.uri = manifest["location"].rstrip("/")  # KFP writes it to the executor output: the artifact's URI
        print(f"data verified in place at {manifest['location']} (read as {data.path})")
