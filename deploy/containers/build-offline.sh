#!/usr/bin/env bash
# Build the images on a machine that reaches a Debian mirror and a Python package index but no
# container registry, and cannot run an OCI runtime (the case of this project's machines):
#   1. a base image made with debootstrap from the Debian mirror (bookworm minbase + Python 3.11),
#   2. buildah with --isolation chroot (no crun/runc needed), the host's pip configuration and
#      local wheel mirrors mounted for the build steps only (nothing of them lands in an image).
# With a registry at hand, build normally instead:
#   podman build -f deploy/containers/gateway.Containerfile -t aiml021-gateway .
# usage: deploy/containers/build-offline.sh [gateway|edge-agent]...   (run as root, repo root)
set -euo pipefail
cd "$(dirname "$0")/../.."
base=localhost/aiml021-base:bookworm-python3.11
if ! podman image exists "$base"; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  rootfs=$(mktemp -d /tmp/aiml021-rootfs.XXXXXX)
  debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian
  tar -C "$rootfs" -c . | podman import - "$base"
  rm -rf "$rootfs"
fi
mounts=()
for p in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf /opt/wheels /opt/pypi /opt/pypi-more; do
  [ -e "$p" ] && mounts+=(-v "$p:$p:ro")
done
for image in "${@:-gateway edge-agent}"; do
  for name in $image; do
    buildah bud --isolation chroot --ignorefile deploy/containers/containerignore \
      --build-arg PYTHON_IMAGE="$base" "${mounts[@]}" \
      -f "deploy/containers/$name.Containerfile" -t "localhost/aiml021-$name:dev" .
  done
done
