#!/usr/bin/env bash
# Build a busybox base image FROM scratch: the tests' kalpana-test-base:latest, or TAG.
#
#   bash scripts/build-test-image.sh [TAG]
#
# No container registry is reachable from these machines, so nothing can be
# pulled: the image is a static busybox (Debian's busybox-static) with its
# applets installed, which gives sh, httpd, nc, wget, sleep, cat and friends.
# The tests build on it, and setup.sh builds the same recipe under another tag
# for the examples when busybox cannot be pulled (scripts/setup_examples.py).
# Skipped when the image exists and was built from the same busybox and recipe
# (both recorded as labels). Safe to run concurrently (a file lock serialises it).
#
# Environment:
#   KALPANA_TEST_IMAGE   tag to build when no TAG is given (default kalpana-test-base:latest)
#   KALPANA_BUSYBOX      busybox to use    (default /bin/busybox; must be static)
set -euo pipefail

IMAGE=${1:-${KALPANA_TEST_IMAGE:-kalpana-test-base:latest}}
BUSYBOX=${KALPANA_BUSYBOX:-/bin/busybox}
# What the image is for: the tests' own base, or a stand-in base image for users' deployments.
if [[ -n "${1:-}" ]]; then LABEL_TEST=dev.kalpana.local-base; else LABEL_TEST=dev.kalpana.test; fi
LABEL_BUSYBOX=dev.kalpana.test.busybox-sha256
LABEL_RECIPE=dev.kalpana.test.recipe-sha256

say() { printf 'build-test-image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# One layer: fewer build containers is most of the cold build time.
DOCKERFILE='FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -p /usr/bin /usr/sbin /sbin /etc /root /tmp /workspace /var/www && chmod 1777 /tmp && ln -s /bin/env /usr/bin/env"]
COPY passwd group /etc/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
'
PASSWD='root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
'
GROUP='root:x:0:
nogroup:x:65534:
'

[[ -f "$BUSYBOX" ]] || die "$BUSYBOX not found: run scripts/ensure-docker.sh (it installs busybox-static)"
# A FROM-scratch image has no libc, so a dynamically linked busybox cannot run in it.
if [[ "$(ldd "$BUSYBOX" 2>&1 || true)" == *"=>"* ]]; then
    die "$BUSYBOX is dynamically linked; install the static one: apt-get install -y busybox-static"
fi

busybox_sha=$(sha256sum "$BUSYBOX" | cut -d' ' -f1)
recipe_sha=$(printf '%s\0%s\0%s' "$DOCKERFILE" "$PASSWD" "$GROUP" | sha256sum | cut -d' ' -f1)

built_from() {
    docker image inspect -f "{{index .Config.Labels \"$LABEL_BUSYBOX\"}} {{index .Config.Labels \"$LABEL_RECIPE\"}}" \
        "$IMAGE" 2>/dev/null || true
}

# Parallel test workers may all find the image missing; build it once.
exec 9>"${TMPDIR:-/tmp}/kalpana-test-image.lock"
flock -w 600 9 || die "timed out waiting for another build of $IMAGE"

if [[ "$(built_from)" == "$busybox_sha $recipe_sha" ]]; then
    exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$BUSYBOX" "$ctx/busybox"
printf '%s' "$DOCKERFILE" >"$ctx/Dockerfile"
printf '%s' "$PASSWD" >"$ctx/passwd"
printf '%s' "$GROUP" >"$ctx/group"

old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
say "building $IMAGE from $BUSYBOX (sha256 ${busybox_sha:0:12})"
if ! docker build --force-rm --label "$LABEL_TEST=1" --label "$LABEL_BUSYBOX=$busybox_sha" \
    --label "$LABEL_RECIPE=$recipe_sha" -t "$IMAGE" "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2
    die "docker build of $IMAGE failed (output above)"
fi

if ! out=$(docker run --rm --network none "$IMAGE" sh -c \
    'for a in sh httpd nc wget sleep cat env; do command -v $a >/dev/null || echo "missing $a"; done' 2>&1) \
    || [[ -n "$out" ]]; then
    die "$IMAGE was built but is not usable: $out"
fi

new_id=$(docker image inspect -f '{{.Id}}' "$IMAGE")
if [[ -n "$old_id" && "$old_id" != "$new_id" ]]; then
    # The previous build is now untagged; drop it unless a container still uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi
say "built $IMAGE (${new_id:7:12})"
