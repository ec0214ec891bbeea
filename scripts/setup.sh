#!/usr/bin/env bash
# Set up Kalpana on a fresh Debian/Ubuntu machine and deploy the examples in deployments.d/.
#
#   bash scripts/setup.sh
#
# Installs the package (into the active virtualenv, else the current python3, else a
# project .venv where the system Python refuses pip), makes sure a Docker engine answers
# (starting an installed dockerd; installing docker.io when root), then runs
# `kalpana apply`. Base images the examples need (busybox, python:3.12-slim) are pulled on
# first use; where no registry answers, apply names the missing image and how to get it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

source scripts/python.sh

PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check -e .
bash scripts/ensure-docker.sh
say "deploying the examples in deployments.d/"
exec "$PYTHON" -m gitops apply
