#!/usr/bin/env bash
# Build the Dockerfile and stream a demo reply through the container, here, without an image registry: the base
# image is made from Debian's own packages (debootstrap), the image is built with buildah and run with podman.
# `.ci/run` runs this when CHATSSE_CHECK_CONTAINER=1; README "Deploying" says when it was last run.
#
#   sudo bash deploy/container-check.sh          # root: debootstrap, buildah and podman need it here
#   BASE=python:3.12-slim bash deploy/container-check.sh    # where a registry is reachable
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE:-localhost/debian-python:bookworm}
IMAGE=localhost/chatsse:check
missing=()
for tool in podman buildah debootstrap runc curl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ "$BASE" == localhost/debian-python:* ]] && ! podman image exists "$BASE"; then
    echo "== a base image from Debian's packages (python3, python3-venv, ca-certificates)"
    rootfs=$(mktemp -d)
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        "${mirror:-http://deb.debian.org/debian}" >/dev/null
    # This machine's trust store, in case its registries sit behind a TLS proxy with a CA of its own; pip in
    # the build is pointed at it too. A real base image has no need of either.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    tar -C "$rootfs" -c . | podman import --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi

echo "== buildah bud (the Dockerfile as it is, on that base)"
started=$(date +%s)
buildah bud --isolation chroot --build-arg BASE="$BASE" -t "$IMAGE" . >/tmp/chatsse-container-build.log 2>&1 \
    || { tail -30 /tmp/chatsse-container-build.log; exit 1; }
echo "built in $(( $(date +%s) - started )) s: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== podman run --read-only, as user $(podman image inspect "$IMAGE" --format '{{.Config.User}}'), PORT=$port"
name="chatsse-check-$$"
podman --runtime runc run -d --rm --name "$name" --network host --read-only \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -e PORT="$port" "$IMAGE" chatsse serve --demo >/dev/null
trap 'podman --runtime runc stop -t 5 "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/health/live" >/dev/null 2>&1 && break
    sleep 0.1
done
echo "live:  $(curl -s "http://127.0.0.1:$port/health/live")"
echo "ready: $(curl -s "http://127.0.0.1:$port/health/ready")"
echo "whoami in the container: $(podman --runtime runc exec "$name" id -u)"
reply=$(curl -s -N "http://127.0.0.1:$port/api/v1/chat/stream" -H 'Content-Type: application/json' \
    -d '{"message": "echo:streamed through the container"}')
printf '%s\n' "$reply"
case "$reply" in
    *'"done":true'*) ;;
    *) echo "no demo reply from the container" >&2; podman logs "$name" | tail -20; exit 1 ;;
esac
if podman --runtime runc exec "$name" sh -c 'command -v gcc cc make' >/dev/null 2>&1; then
    echo "a compiler or build tool is in the image" >&2
    exit 1
fi
echo "== the container streamed a demo reply"
