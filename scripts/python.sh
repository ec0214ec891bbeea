# Sourced by setup.sh and test.sh: sets PYTHON to the interpreter to install Kalpana into.
# An active virtualenv is used as it is; a distribution's own Python refuses pip installs
# (PEP 668), so a project .venv is made and used instead. Needs `say` defined by the caller.

if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
else
    PYTHON=python3
fi
command -v "$PYTHON" >/dev/null || { say "python3 not found: apt-get install -y python3 python3-venv"; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { say "Kalpana needs Python 3.11 or newer ($("$PYTHON" --version 2>&1))"; exit 1; }
if "$PYTHON" -c 'import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(marker) else 1)'; then
    [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv \
        || { say "python3 is externally managed and 'python3 -m venv .venv' failed: apt-get install -y python3-venv"; exit 1; }
    PYTHON=.venv/bin/python
    say "using the project virtualenv .venv (run Kalpana as .venv/bin/kalpana, or 'source .venv/bin/activate')"
fi
