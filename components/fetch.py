"""Component: copy the data folder (or the synthetic one) into the pipeline and verify its MD5s."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def fetch_data(
    synthetic: Input[Dataset],
    data: Output[Dataset],
    data_uri: str = "",
    auth_header_env: str = "",
    retries: int = 2,
):
    """Copy every file of the data folder into the pipeline's storage, verifying MD5s.

    Args:
        synthetic: output of the synth step, copied when data_uri is empty.
        data_uri: folder (gs://bucket/path/, https://host/path/ or a local path) holding
            vggface2_train.tar.gz, train_list.txt, lfw.tgz and pairs.txt (and vggface2_test.tar.gz to
            verify on held-out identities); MD5s are checked against an MD5SUMS file beside them or
            the published VGGFace2 ones. Empty: the synthetic data.
        auth_header_env: NAME of an environment variable of the task holding an HTTP header for https
            sources (e.g. set from a Kubernetes secret); the header itself is never a parameter.
        retries: times an interrupted download is resumed before the step fails.

    Returns:
        data: the copied files under their own names, plus manifest.json (source, bytes, md5, how verified).
    """
    from deepface.fetch import fetch

    source = data_uri if data_uri else synthetic.path
    if not source.endswith("/"):
        source += "/"  # a folder: fetch every file under it
    fetch([source], data.path, auth_header_env=auth_header_env or None, retries=retries)
