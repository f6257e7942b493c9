"""Component: the fingerprint of the data folder, run uncached so that fetch follows the data."""

from components.launcher import stage_component
from components.parameters import takes_settings
from deepface.settings import FetchSettings, PipelineSettings


@stage_component
@takes_settings(FetchSettings, PipelineSettings)
def fingerprint_data(
    data_uri: str,
    auth_header_env: str,
    auth_secret: str,
) -> str:
    """Fingerprint the data folder from its listing and checksums (`deepface.fingerprint.fingerprint_source`).

    The pipeline runs this step with caching off and passes its output to fetch: fetch's cache key then
    changes exactly when the data behind data_uri does, so fetch and the stages after it rerun on new
    data and stay cached otherwise.

    Returns:
        Output: the fingerprint, "<scheme> <N> files sha256:<hex>"; "synthetic" when data_uri is empty (the
            synthetic data, made from the synth step's parameters).
    """
    from deepface.fingerprint import fingerprint_source
    from deepface.settings import FetchSettings

    settings = FetchSettings.from_kfp(auth_header_env=auth_header_env, auth_secret=auth_secret)
    fingerprint = fingerprint_source(data_uri, auth_header_env=settings.auth_header_env,
                                     auth_secret=settings.auth_secret)
    print(f"data fingerprint: {fingerprint}")
    return fingerprint
