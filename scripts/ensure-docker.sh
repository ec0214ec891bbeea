#!/usr/bin/env bash
# Make sure a Docker engine answers and the packages the tests need are present.
#
# Idempotent: when `docker info` answers and nothing is missing it only checks.
# Otherwise it installs what is missing with apt (docker.io, busybox-static, and
# docker-compose when KALPANA_WITH_COMPOSE=1), starts dockerd in the background
# and waits until it answers. Needs root or sudo for those steps; without either
# it prints the commands to run and exits 1.
#
# Environment:
#   KALPANA_WITH_COMPOSE=1      also install Debian's docker-compose (benchmarks only)
#   KALPANA_DOCKERD_LOG         dockerd's log file     (default /tmp/kalpana-dockerd.log)
#   KALPANA_DOCKERD_PIDFILE     dockerd's pid file     (default /var/run/docker.pid)
#   KALPANA_DOCKERD_WAIT        seconds to wait for the engine to answer (default 60)
#   KALPANA_DOCKERD_ARGS        extra dockerd arguments, split on spaces (e.g. --data-root,
#                               --exec-root for a second engine). Never `--bridge none` next
#                               to another engine: dockerd then deletes the host's docker0.
#   DOCKER_HOST                 honoured; a unix:// socket is passed to dockerd as -H
set -euo pipefail

LOG=${KALPANA_DOCKERD_LOG:-/tmp/kalpana-dockerd.log}
PIDFILE=${KALPANA_DOCKERD_PIDFILE:-/var/run/docker.pid}
WAIT=${KALPANA_DOCKERD_WAIT:-60}

say() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

engine_answers() {
    # `timeout`: a wedged daemon must not hang CI; the client exits 1 when no engine answers.
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

package_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# How to become root for apt and dockerd: nothing, sudo, or impossible (empty array + SUDO_OK=0).
SUDO=()
SUDO_OK=1
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        # No terminal (CI): never wait for a password prompt nobody can answer.
        if [[ -t 0 ]]; then SUDO=(sudo); else SUDO=(sudo -n); fi
    else
        SUDO_OK=0
    fi
fi

ANSWERS=0
engine_answers && ANSWERS=1
if [[ $ANSWERS -eq 0 && $EUID -ne 0 ]] && command -v docker >/dev/null 2>&1 \
    && [[ "$(timeout 20 docker info 2>&1 >/dev/null || true)" == *"permission denied"* ]]; then
    die "a Docker engine runs but ${USER:-you} may not use its socket: add yourself to the docker group (sudo usermod -aG docker ${USER:-\$USER}) and log in again"
fi

missing=()
if [[ $ANSWERS -eq 0 ]] && ! { command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1; }; then
    missing+=(docker.io)
fi
package_installed busybox-static || missing+=(busybox-static)
if [[ "${KALPANA_WITH_COMPOSE:-}" == 1 ]] && ! command -v docker-compose >/dev/null 2>&1; then
    missing+=(docker-compose)
fi

if [[ $ANSWERS -eq 1 && ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $SUDO_OK -eq 0 ]]; then
        say "missing packages: ${missing[*]}; run as root:"
        say "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}"
        [[ $ANSWERS -eq 1 ]] || say "  nohup setsid dockerd >$LOG 2>&1 </dev/null &"
        exit 1
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages: ${missing[*]}, and apt-get is not available to install them; install them by hand"
    say "installing ${missing[*]} (apt)"
    apt_opts=(-q -o Acquire::Retries=3 -o DPkg::Lock::Timeout=300)
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2 \
        || die "apt-get update failed (see above)"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed (see above)"
    # The package's maintainer script may have started the engine already.
    engine_answers && ANSWERS=1
fi

[[ $ANSWERS -eq 1 ]] && exit 0

dockerd_args=(--pidfile "$PIDFILE")
case "${DOCKER_HOST:-}" in
    "") ;;
    unix://*) dockerd_args+=(-H "$DOCKER_HOST") ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local socket; start that engine, or unset DOCKER_HOST to use a local one" ;;
esac
if [[ -n "${KALPANA_DOCKERD_ARGS:-}" ]]; then
    read -r -a extra <<<"$KALPANA_DOCKERD_ARGS"
    dockerd_args+=("${extra[@]}")
fi

if [[ $SUDO_OK -eq 0 ]]; then
    say "no Docker engine answers and starting one needs root; run as root:"
    say "  nohup setsid dockerd ${dockerd_args[*]} >$LOG 2>&1 </dev/null &"
    exit 1
fi

started_pid=""
existing_pid=$(cat "$PIDFILE" 2>/dev/null || true)
if [[ -n "$existing_pid" ]] && kill -0 "$existing_pid" 2>/dev/null; then
    # A dockerd is alive but not answering yet (still starting): a second one would
    # only fail on the pid file, so wait for this one.
    say "dockerd (pid $existing_pid) is running but not answering yet; waiting"
else
    say "starting dockerd in the background (log: $LOG)"
    # setsid + nohup + no inherited descriptors: the engine outlives this script and
    # never holds a caller's stdout pipe open (pytest's subprocess capture would hang).
    "${SUDO[@]}" nohup setsid dockerd "${dockerd_args[@]}" >>"$LOG" 2>&1 </dev/null &
    started_pid=$!
fi

for ((i = 0; i < WAIT; i++)); do
    if engine_answers; then
        say "Docker engine answers after ${i}s"
        exit 0
    fi
    if [[ -n "$started_pid" ]] && ! kill -0 "$started_pid" 2>/dev/null; then
        tail -n 5 "$LOG" >&2 || true
        die "dockerd exited during start-up; see $LOG"
    fi
    sleep 1
done
if [[ $EUID -ne 0 ]] && "${SUDO[@]}" docker info >/dev/null 2>&1; then
    die "the engine answers root but not you: add yourself to the docker group (sudo usermod -aG docker $USER) and log in again"
fi
die "Docker engine did not answer within ${WAIT}s; see $LOG"
