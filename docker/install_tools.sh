#!/usr/bin/env bash
# Install the container tools the image scripts use, with apt-get, when they are missing.
# Usage: docker/install_tools.sh TOOL...   (tools: buildah podman debootstrap; needs root on Debian/Ubuntu)
set -euo pipefail

missing=()
for tool in "$@"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ ${#missing[@]} == 0 ]] && exit 0
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "install_tools: ${missing[*]} missing; install them (Debian: apt-get install -y ${missing[*]}) as root" >&2
    exit 1
fi
echo "install_tools: apt-get install ${missing[*]}" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
