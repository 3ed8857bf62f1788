#!/usr/bin/env bash
# Build the bonemet image (`make container`): bonemet:<version> from the Dockerfile.
#
# Settings (environment variables; make passes its variables of the same names):
#   ENGINE       docker or podman (default: docker when its daemon answers, else podman)
#   IMAGE        the tag (default bonemet:<version in pyproject.toml>)
#   BASE         the base image (default: the Dockerfile's python:3.11-slim-bookworm); e.g.
#                bonemet-base:bookworm from scripts/make_base_image.sh
#   CA           CA bundle for pip behind a TLS-intercepting proxy (default: $PIP_CERT when
#                set; CA= for none), passed as the build secret `ca`, never stored in the image
#   CONSTRAINTS  pip constraints file, passed as the build secret `constraints`
#   BUILD_ARGS   more options for the build command, e.g. "--network host"
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
    echo "make container: $*" >&2
    exit 1
}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)
[ -n "$version" ] || die "no version in pyproject.toml"
IMAGE=${IMAGE:-bonemet:$version}
CA=${CA-${PIP_CERT:-}}  # CA= (empty) builds without one
CONSTRAINTS=${CONSTRAINTS:-}

if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null; then
        ENGINE=podman
    else
        die "no container engine: install docker (with a running daemon) or podman, or set ENGINE"
    fi
fi

args=(--tag "$IMAGE" --file Dockerfile)
[ -z "${BASE:-}" ] || args+=(--build-arg "BASE=$BASE")
if [ -n "$CA" ]; then
    [ -s "$CA" ] || die "CA bundle '$CA' does not exist or is empty: set CA=FILE (or PIP_CERT) to the proxy's CA bundle, or CA= to build without one"
    args+=(--secret "id=ca,src=$CA")
fi
if [ -n "$CONSTRAINTS" ]; then
    [ -s "$CONSTRAINTS" ] || die "constraints file '$CONSTRAINTS' does not exist or is empty"
    args+=(--secret "id=constraints,src=$CONSTRAINTS")
fi
# shellcheck disable=SC2206  # BUILD_ARGS is a list of options
extra=(${BUILD_ARGS:-})

case "$ENGINE" in
podman)
    exec podman build "${args[@]}" "${extra[@]}" .
    ;;
docker)
    # RUN --mount=type=secret needs BuildKit: the buildx plugin, or a docker client older
    # than 23 (BuildKit built in); a newer client without buildx cannot build it.
    if docker buildx version >/dev/null 2>&1; then
        exec docker buildx build --load "${args[@]}" "${extra[@]}" .
    fi
    while read -r client; do
        major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
        if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -lt 23 ]; then
            DOCKER_BUILDKIT=1 exec "$client" build "${args[@]}" "${extra[@]}" .
        fi
    done < <(type -ap docker)
    die "docker build needs BuildKit: install the buildx plugin (Debian: docker-buildx, Docker's repository: docker-buildx-plugin), or use ENGINE=podman"
    ;;
*)
    die "ENGINE must be docker or podman, not '$ENGINE'"
    ;;
esac
