#!/usr/bin/env bash
# Build the project image from ./Dockerfile with buildah (no Docker engine needed), then smoke-test it
# inside, as its runtime user: `deepface --help`, the imports a KFP task needs, a tiny model build.
#
# Usage: docker/build.sh [--no-test | --print-ref]
#   --no-test    build only
#   --print-ref  print the image reference this tree would get, build nothing
# Env:   BASE_IMAGE  base image (default localhost/base:bookworm, made by docker/make_base.sh when missing;
#                    python:3.11-slim where a registry can be reached)
#        DEEPFACE_IMAGE_REPO  image name without tag (default localhost/deepface-pipeline)
#        FLAVOUR     cpu (default), gpu (tensorflow[and-cuda]) or tpu (tensorflow-tpu, libtpu): docker/flavours.py;
#                    the tag ends in -gpu / -tpu, as the pipeline's training task names it for an accelerator
#        RUNTIME_USER  uid:gid the image runs as (default 1000:1000, non-root); 0:0 for a platform whose
#                    /gcs mount refuses uid 1000 (a task then says so at start); give it its own
#                    DEEPFACE_IMAGE_REPO
#        PIP_CERT    CA bundle for pip in the build (default: this machine's /etc/ssl/certs/ca-certificates.crt,
#                    which holds a TLS-intercepting proxy's CA): a build secret, never stored in the image
# The reference is the one the pipeline's components use (python3 -m components.image): an immutable
# tag VERSION-gGITSHA, plus -dirty-CONTENTHASH when the files the image is built from differ from the
# commit. Progress and timings go to stderr; the last stdout line is the image reference.
# Tools missing here (buildah; podman and debootstrap for the local base) are installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=test
for arg in "$@"; do
    case $arg in
        --no-test) mode=build ;;
        --print-ref) mode=ref ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

base_image=${BASE_IMAGE:-localhost/base:bookworm}
flavour=${FLAVOUR:-cpu}
[[ $flavour =~ ^(cpu|gpu|tpu)$ ]] || { echo "build.sh: FLAVOUR=$flavour: choose cpu, gpu or tpu" >&2; exit 2; }
[[ -z ${TF_PACKAGE:-} ]] || {
    echo "build.sh: TF_PACKAGE is no longer read: set FLAVOUR=gpu (or tpu) instead" >&2; exit 2; }
runtime_user=${RUNTIME_USER:-1000:1000}
[[ $runtime_user =~ ^[0-9]+:[0-9]+$ ]] || {
    echo "build.sh: RUNTIME_USER=$runtime_user: give it as uid:gid (e.g. 1000:1000, or 0:0 for root)" >&2; exit 2; }
for path in Dockerfile .dockerignore pyproject.toml constraints.txt docker/constraints-cuda.txt \
            docker/constraints-tpu.txt docker/flavours.py README.md deepface components pipelines; do
    [[ -e $path ]] || { echo "build.sh: $path is missing: the image is built from it" >&2; exit 1; }
done
if [[ $runtime_user != 1000:1000 && -z ${DEEPFACE_IMAGE_REPO:-}${DEEPFACE_IMAGE:-} ]]; then
    echo "build.sh: RUNTIME_USER=$runtime_user: set DEEPFACE_IMAGE_REPO to this flavour's own repository" \
         "(e.g. ...-root), here and when compiling the pipeline, so that the two flavours never share a tag" >&2
    exit 2
fi

# The reference the pipeline's components name (components/image.py, the one place that computes it):
# $DEEPFACE_IMAGE_REPO:VERSION-gGITSHA[-dirty-CONTENTHASH][-gpu|-tpu], or $DEEPFACE_IMAGE[_GPU|_TPU].
ref=$("${PYTHON:-python3}" -m components.image --flavour "$flavour")
if [[ $mode == ref ]]; then
    echo "$ref"
    exit 0
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
revision=$(git rev-parse --short=12 HEAD)

docker/install_tools.sh buildah
if [[ $base_image == localhost/base:bookworm ]]; then
    docker/make_base.sh "$base_image"
fi
pull_args=()
if [[ $base_image == localhost/* ]]; then
    pull_args=(--pull-never)  # a local image: never look for it in a registry
fi
# pip in the build trusts this machine's CA bundle (a TLS-intercepting proxy's CA is often only there);
# it is mounted for the pip steps only, never stored in a layer.
pip_cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
secret_args=()
if [[ -f $pip_cert ]]; then
    secret_args=(--secret "id=pip_cert,src=$pip_cert")
fi

start=$SECONDS
echo "build.sh: building $ref from $base_image ($flavour flavour, runs as $runtime_user)" >&2
buildah bud --isolation chroot --ulimit nofile=20000:20000 --layers "${pull_args[@]}" \
    --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "FLAVOUR=$flavour" \
    --build-arg "RUNTIME_USER=$runtime_user" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    "${secret_args[@]}" \
    --tag "$ref" --file Dockerfile . >&2
# buildah's layer cache ignores a changed build argument in LABEL: an image cached from another commit with
# the same files keeps that commit's revision label. Set it on the result (a new config, same layers).
label=$(buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.revision"}}' "$ref")
if [[ $label != "$revision" ]]; then
    relabel=$(buildah from --pull-never "$ref")
    buildah config --label "org.opencontainers.image.revision=$revision" "$relabel"
    buildah commit --quiet "$relabel" "$ref" >/dev/null
    buildah rm "$relabel" >/dev/null
    echo "build.sh: revision label $label (from the layer cache) set to $revision" >&2
fi
echo "build.sh: built $ref in $((SECONDS - start)) s" >&2

if [[ $mode == test ]]; then
    start=$SECONDS
    container=$(buildah from --pull-never "$ref")
    trap 'buildah rm "$container" >/dev/null' EXIT
    # The TPU runtime asks the GCE metadata server about the TPU (30 tries a value) unless told this is no
    # TPU machine; on Vertex AI's TPU machines it answers.
    run_env=()
    [[ $flavour != tpu ]] || run_env=(--env TPU_SKIP_MDS_QUERY=1)
    in_image() { buildah run --isolation chroot "${run_env[@]}" "$container" -- "$@"; }
    uid=$(in_image id -u)
    [[ $uid == "${runtime_user%%:*}" ]] || {
        echo "build.sh: the image runs as uid '$uid', RUNTIME_USER is $runtime_user" >&2; exit 1; }
    in_image deepface --help >&2
    in_image python3 -c "
import importlib.util, deepface, kfp, keras, tensorflow as tf
from kfp.dsl import executor_main  # what KFP tasks run: python3 -m kfp.dsl.executor_main
test_only = [name for name in ('pytest', 'tf_keras') if importlib.util.find_spec(name)]
assert not test_only, f'test dependencies in the image: {test_only}'
print(f'deepface {deepface.__version__}, kfp {kfp.__version__}, tensorflow {tf.__version__}, keras {keras.__version__}')
" >&2
    # The flavour's TensorFlow: the CUDA libraries (gpu), the TPU build and its runtime (tpu), neither (cpu).
    in_image python3 -c "
import importlib.metadata as m, importlib.util, os, re, tensorflow as tf
flavour = os.environ['DEEPFACE_IMAGE_FLAVOUR']
assert flavour == '$flavour', flavour
installed = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() for d in m.distributions()}
cuda = sorted(name for name in installed if name.startswith('nvidia-'))
tpu = importlib.util.find_spec('libtpu') is not None and 'tensorflow-tpu' in installed
assert (bool(cuda), tpu) == (flavour == 'gpu', flavour == 'tpu'), (flavour, cuda, tpu)
assert ('tensorflow' in installed) == (flavour != 'tpu'), 'tensorflow and tensorflow-tpu side by side'
print(f'{flavour} flavour: tensorflow {tf.__version__}, {len(cuda)} CUDA packages, TPU runtime: {tpu}')
" >&2
    in_image deepface model --preset tiny --num-classes 10 --json >&2
    # The bundled face detector: its weights come inside the mtcnn wheel, nothing is downloaded.
    in_image python3 -c "
import matplotlib.cbook
from PIL import Image
from deepface.detect import FaceDetector
photo = Image.open(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)).convert('RGB')
faces = FaceDetector().detect(photo)
assert len(faces) == 1, faces
print(f'face detector: 1 face, eyes at {faces[0].points[:2].round().tolist()}')
" >&2
    echo "build.sh: smoke test passed as uid $uid in $((SECONDS - start)) s" >&2
fi
echo "$ref"
