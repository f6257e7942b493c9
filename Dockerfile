# One image for every pipeline component: the deepface package, kfp and TensorFlow.
#
#   export DEEPFACE_IMAGE_REPO=REGION-docker.pkg.dev/PROJECT/REPO/deepface-pipeline
#   docker build -t "$(python3 -m components.image)" .
#   GPU or TPU flavour:  --build-arg FLAVOUR=gpu (or tpu), tagged "$(python3 -m components.image --flavour gpu)"
#   Behind a TLS-intercepting proxy:  --secret id=pip_cert,src=/path/to/ca-bundle.crt
# On machines without a Docker engine or registry access, docker/build.sh builds this same file with
# buildah on a local Debian base image and smoke-tests the result.
#
# Tag immutably (VERSION-gGITSHA, as components/image.py names it): Vertex AI caches task results on
# the image string.
# No ENTRYPOINT: KFP components run their own command (components/launcher.py: `sh -ec` that execs
# python3, which checks the task's output folders can be written, then runs kfp.dsl.executor_main).
#
# The runtime user (RUNTIME_USER, default the non-root uid 1000) must be able to write the task outputs:
# KFP maps gs://BUCKET/... to /gcs/BUCKET/... (on Vertex AI a Cloud Storage FUSE mount; whether it lets a
# non-root uid write is not documented). A task that cannot write there stops at start with one line
# naming the path and the uid. Then build a root flavour, under its own repository (the tag does not
# carry build arguments):  --build-arg RUNTIME_USER=0:0  (docker/build.sh: RUNTIME_USER=0:0).

ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Non-root user. KFP's executor writes local artifact copies under /gcs, /minio and /s3 at the
# filesystem root (Vertex AI mounts /gcs over it): they are given to the runtime user further down.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash deepface \
    && mkdir -p /gcs /minio /s3 \
    && chown deepface:deepface /gcs /minio /s3

# Packaging tools, pinned here because constraints.txt pins only the runtime environment.
ARG PIP_VERSION=26.3
ARG SETUPTOOLS_VERSION=84.2.1
ARG WHEEL_VERSION=0.48.0
# A venv owned by root (read-only for the runtime user); first on PATH, so `python3` is the venv's.
# Also works on Debian's python3, which refuses system-wide pip installs (externally managed).
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 -m venv /opt/venv \
    && pip install --quiet "pip==${PIP_VERSION}" "setuptools==${SETUPTOOLS_VERSION}" "wheel==${WHEEL_VERSION}"

# Dependencies only (the slow, big layer): it depends on pyproject.toml and constraints.txt alone, so
# a change to the source does not reinstall TensorFlow. Test extras ([dev]) are not installed.
WORKDIR /opt/deepface
COPY pyproject.toml constraints.txt ./
COPY docker/flavours.py docker/constraints-cuda.txt docker/constraints-tpu.txt ./docker/
# The flavour (docker/flavours.py) says which TensorFlow: cpu "tensorflow" (the version of constraints.txt),
# gpu "tensorflow[and-cuda]" (same version, with the CUDA libraries of docker/constraints-cuda.txt), tpu
# "tensorflow-tpu" with libtpu (docker/constraints-tpu.txt).
ARG FLAVOUR=cpu
RUN --mount=type=secret,id=pip_cert \
    if [ -f /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
    && python3 docker/flavours.py write "${FLAVOUR}" /tmp/flavour \
    && pip install --quiet -c /tmp/flavour/constraints.txt -r /tmp/flavour/requirements.txt \
    && rm -r /tmp/flavour
ENV DEEPFACE_IMAGE_FLAVOUR=${FLAVOUR}

# The runtime user (declared here, below the dependency layer, so that its cache is shared by both
# flavours) owns /gcs, /minio, /s3 and matplotlib's config and cache folder. The font cache is built
# once, here, as that user, instead of in every new container; the folder is inside the image
# (independent of HOME) and writable by that user.
ARG RUNTIME_USER=1000:1000
ENV MPLCONFIGDIR=/opt/matplotlib
RUN mkdir -p "${MPLCONFIGDIR}" && chown "${RUNTIME_USER}" /gcs /minio /s3 "${MPLCONFIGDIR}"
USER ${RUNTIME_USER}
RUN python3 -c "import matplotlib.pyplot" \
    && ls "${MPLCONFIGDIR}"/fontlist-*.json >/dev/null
USER 0:0

# The package itself: a small layer, rebuilt when the source changes.
COPY README.md ./
COPY deepface ./deepface
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --quiet --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info \
    && python3 docker/flavours.py check "${FLAVOUR}"

USER ${RUNTIME_USER}
WORKDIR /home/deepface
CMD ["deepface", "--help"]

ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="deepface-pipeline" \
      org.opencontainers.image.description="DeepFace training and evaluation pipeline (KFP v2 / Vertex AI)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
