#!/usr/bin/env bash
# Make the local base image localhost/base:bookworm from Debian packages, for machines that cannot pull
# images from a registry (no Docker engine; buildah/podman only). Cached: does nothing when it exists.
#
# Usage: docker/make_base.sh [IMAGE]     (default localhost/base:bookworm; needs root; installs
#                                         debootstrap and podman with apt-get when missing)
# Env:   DEBIAN_MIRROR (default http://deb.debian.org/debian), FORCE=1 to make it again.
#
# The image is a minimal Debian bookworm with python3 (3.11), venv and pip: the same Python as
# python:3.11-slim, the Dockerfile's default base where a registry can be reached.
set -euo pipefail

image=${1:-localhost/base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

"$(dirname "$0")/install_tools.sh" debootstrap podman
if [[ ${FORCE:-0} != 1 ]] && podman image exists "$image"; then
    echo "make_base: $image exists, kept (FORCE=1 makes it again)" >&2
    exit 0
fi

start=$SECONDS
rootfs=$(mktemp -d /var/tmp/deepface-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "make_base: debootstrap bookworm into $rootfs" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$rootfs" "$mirror" >&2
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
tar --numeric-owner -C "$rootfs" -c . | podman import \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV=LANG=C.UTF-8' \
    --change 'CMD=["python3"]' \
    - "$image" >&2
echo "make_base: $image made in $((SECONDS - start)) s" >&2
