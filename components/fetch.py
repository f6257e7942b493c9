"""Component: copy the data folder (or the synthetic one) into the pipeline and verify its MD5s."""

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
    fingerprint: str = "",
):
    """Copy every file of the data folder into the pipeline's storage, verifying MD5s (against an MD5SUMS
    file beside them, or the published VGGFace2 ones).

    Args:
        synthetic: output of the synth step, copied when data_uri is empty.
        fingerprint: the fingerprint step's output for data_uri (`deepface.fingerprint`), only logged: as
            part of this task's cache key it makes the task rerun when the data behind data_uri changes.

    Returns:
        data: the copied files under their own names, plus manifest.json (source, bytes, md5, how verified).
    """
    from deepface.fetch import fetch
    from deepface.settings import FetchSettings

    print(f"data fingerprint: {fingerprint or '(none given)'}")
    source = data_uri if data_uri else synthetic.path
    if not source.endswith("/"):
        source += "/"  # a folder: fetch every file under it
    settings = FetchSettings.from_kfp(auth_header_env=auth_header_env, auth_secret=auth_secret, retries=retries)
    fetch([source], data.path, auth_header_env=settings.auth_header_env, auth_secret=settings.auth_secret,
          retries=settings.retries)
