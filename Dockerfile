# bonemet container image: the `bonemet` CLI with its runtime dependencies, for the Nextflow
# docker / podman / singularity / apptainer profiles.
#
#   make container                                   # bonemet:<version> on python:3.11-slim
#   scripts/make_base_image.sh                       # or a base built from the Debian mirror,
#   make container BASE=bonemet-base:bookworm        # for hosts that cannot pull images
#
# Build secrets (never stored in the image):
#   ca           CA bundle for pip behind a TLS-intercepting proxy (make container passes
#                $PIP_CERT or CA=FILE)
#   constraints  a pip constraints file (CONSTRAINTS=FILE), e.g. the `pip freeze` of a tested
#                environment, so that the image computes exactly as that environment does
#
# Needs BuildKit (docker buildx, or DOCKER_BUILDKIT=1 with a client that has it built in) or
# podman/buildah, for RUN --mount=type=secret.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONNOUSERSITE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

# procps: Nextflow reads each task's CPU and memory with `ps`. The Debian-mirror base
# (scripts/make_base_image.sh) has it already; python:3.11-slim does not.
RUN if ! command -v ps >/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends procps \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# One virtual environment for everything: Debian's python refuses system-wide pip installs.
RUN PY="$(command -v python3.11 || command -v python3)" \
    && "$PY" -m venv /opt/bonemet \
    && /opt/bonemet/bin/python -m pip install --upgrade pip
ENV PATH=/opt/bonemet/bin:$PATH

# Dependencies first, from pyproject.toml alone: a code change rebuilds only the last layer.
# The ligrec extra (liana, LIANA+) too: the compare stage's ligand-receptor analysis.
COPY pyproject.toml /src/pyproject.toml
RUN --mount=type=secret,id=ca --mount=type=secret,id=constraints \
    set -e; \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -s /run/secrets/constraints ]; then export PIP_CONSTRAINT=/run/secrets/constraints; fi; \
    python -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["ligrec"]))' > /tmp/requirements.txt; \
    pip install -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# bonemet itself, its dependencies being those of the layer above (the .dockerignore sends
# only what the wheel needs)
COPY . /src
RUN --mount=type=secret,id=ca --mount=type=secret,id=constraints \
    set -e; \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    if [ -s /run/secrets/constraints ]; then export PIP_CONSTRAINT=/run/secrets/constraints; fi; \
    pip install --no-deps /src; \
    rm -rf /src; \
    bonemet --version

# Any user works (Nextflow runs tasks with -u $(id -u):$(id -g)): caches go to /tmp, not to
# a home folder that such a user does not have.
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/.matplotlib \
    NUMBA_CACHE_DIR=/tmp/.numba \
    XDG_CACHE_HOME=/tmp/.cache

LABEL org.opencontainers.image.title="bonemet" \
      org.opencontainers.image.description="Single-cell RNA-seq pipeline for bone-metastasis research" \
      org.opencontainers.image.licenses="MIT"

CMD ["bonemet", "--help"]
