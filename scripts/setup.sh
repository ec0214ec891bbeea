#!/usr/bin/env bash
# Set up Kalpana on a fresh Debian/Ubuntu machine and deploy the examples in deployments.d/.
#
#   bash scripts/setup.sh
#
# Installs the package (into the active virtualenv, else the current python3, else a
# project .venv where the system Python refuses pip), makes sure a Docker engine answers
# (starting an installed dockerd; installing docker.io when root), then deploys the examples
# (scripts/setup_examples.py): `kalpana apply`, and the URLs that serve. Base images the
# examples need (busybox, python:3.12-slim) are pulled; where no registry answers, the
# busybox example runs on a stand-in built here from Debian's busybox-static, named in
# kalpana.yaml's image_fallbacks (said in one line), and an example whose image cannot be
# had is reported as skipped, with the reason.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

source scripts/python.sh

PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check -e .
bash scripts/ensure-docker.sh
say "deploying the examples in deployments.d/"
exec "$PYTHON" scripts/setup_examples.py
