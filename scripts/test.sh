#!/usr/bin/env bash
# The test command: bash scripts/test.sh [pytest arguments...]
#
# Installs the package with its test extras into the current Python (an active
# virtualenv is used as it is), makes sure a Docker engine answers, Chromium is installed (the
# dashboard's browser test) and the test base image exists, then runs the whole suite on two
# workers. Exits with pytest's code; "no tests collected" (5) is a failure too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'test.sh: %s\n' "$*" >&2; }

source scripts/python.sh

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
bash scripts/ensure-chromium.sh   # the dashboard's browser test drives Debian's chromium
bash scripts/build-test-image.sh

rc=0
"$PYTHON" -m pytest -n 2 "$@" || rc=$?
if [[ $rc -eq 5 ]]; then
    say "pytest collected no tests: that is a failure (wrong path or -k expression?)"
fi
exit "$rc"
