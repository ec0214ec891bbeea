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

if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
else
    PYTHON=python3
fi
command -v "$PYTHON" >/dev/null || { say "python3 not found: apt-get install -y python3 python3-venv"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { say "Kalpana needs Python 3.11 or newer ($("$PYTHON" --version))"; exit 1; }
if "$PYTHON" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(marker) else 1)'; then
    [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv \
        || { say "'python3 -m venv .venv' failed: apt-get install -y python3-venv"; exit 1; }
    PYTHON=.venv/bin/python
    say "installed into .venv: run kalpana as .venv/bin/kalpana (or 'source .venv/bin/activate')"
fi

"$PYTHON" -m pip install -q --disable-pip-version-check -e .
bash scripts/ensure-docker.sh
say "deploying the examples in deployments.d/"
exec "$PYTHON" -m gitops apply
