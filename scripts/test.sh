#!/usr/bin/env bash
# The test command: bash scripts/test.sh [pytest arguments...]
#
# Installs the package with its test extras into the current Python (an active
# virtualenv is used as it is), makes sure a Docker engine answers and the test
# base image exists, then runs the whole suite on two workers. Exits with
# pytest's code; "no tests collected" (5) is a failure too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'test.sh: %s\n' "$*" >&2; }

if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
else
    PYTHON=python3
fi
# A distribution's own Python refuses pip installs (PEP 668): use a project venv instead.
if "$PYTHON" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(marker) else 1)'; then
    [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv \
        || { say "python3 is externally managed and 'python3 -m venv .venv' failed: apt-get install -y python3-venv"; exit 1; }
    PYTHON=.venv/bin/python
fi

# pip takes ~10 s even when nothing changed; skip it while this Python already has
# this checkout installed from the same pyproject.toml.
stamp=.pytest_cache/kalpana-install-stamp
want="$(sha256sum <pyproject.toml | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.executable)')"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]] || ! "$PYTHON" -c 'import sys, gitops, pytest, xdist
sys.exit(0 if gitops.__file__.startswith(sys.argv[1]) else 1)' "$PWD/" 2>/dev/null; then
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check -e '.[test]'
    mkdir -p "$(dirname "$stamp")" && printf '%s\n' "$want" >"$stamp"
fi
bash scripts/ensure-docker.sh
bash scripts/build-test-image.sh

rc=0
"$PYTHON" -m pytest -n 2 "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    say "pytest collected no tests: that is a failure (wrong path or -k expression?)"
fi
exit "$rc"
