#!/usr/bin/env bash
# Make sure Debian's `chromium` is installed: the dashboard's browser test drives it with Playwright.
#
# Idempotent: when `chromium` is on PATH it only checks. Otherwise it installs the
# Debian package with apt (Playwright's own browser download cannot reach its
# servers here, so the test uses this system browser instead). Needs root or sudo;
# without either it prints the command to run and exits 1.
set -euo pipefail

say() { printf 'ensure-chromium: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

command -v chromium >/dev/null 2>&1 && exit 0

SUDO=()
if [[ $EUID -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        say "chromium is missing and installing it needs root; run as root:"
        say "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
        exit 1
    fi
    # No terminal (CI): never wait for a password prompt nobody can answer.
    if [[ -t 0 ]]; then SUDO=(sudo); else SUDO=(sudo -n); fi
fi
command -v apt-get >/dev/null 2>&1 \
    || die "chromium is missing and apt-get is not available to install it; install Chromium by hand (it must be on PATH as 'chromium')"

say "installing chromium (apt)"
apt_opts=(-q -o Acquire::Retries=3 -o DPkg::Lock::Timeout=300)
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2 \
    || die "apt-get update failed (see above)"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends chromium >&2 \
    || die "apt-get install chromium failed (see above)"
command -v chromium >/dev/null 2>&1 || die "the chromium package installed but 'chromium' is not on PATH"
say "chromium installed: $(chromium --version 2>/dev/null || echo 'version unknown')"
