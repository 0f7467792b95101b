# One image for the operator, the gateway and the built-in invoke action.
#   docker build -t fabric-tasks:dev .                      (the public python:3.11-slim base)
#   devcluster/images.sh build                              (buildah, from a Debian base made locally
#                                                            with mmdebstrap: no registry needed)
#   operator: command fabric-task-operator   gateway: command fabric-task-gateway
#   invoke action: command [sys-invoke-skill]  (the default of agent invoke Tasks; reads $FABRIC_PAYLOAD,
#                  writes its outcome to /dev/termination-log; see README "The invoke action")
#   example agent (demo only): command [fabric-example-agent, --host, 0.0.0.0, --port, "8070"]
# BASE_IMAGE: any Debian-based image with Python >= 3.11 and venv. The application lives in a
# virtual environment (/opt/fabric), so it works wherever the base keeps its own Python.
ARG BASE_IMAGE=python:3.11-slim

# Reproducible: every package comes from requirements/*.lock (tools/lock.sh makes them from
# pyproject.toml), pinned and checked against its sha256; the project itself is installed without
# resolving anything. The dependencies are a layer of their own, rebuilt only when the lock changes.
FROM ${BASE_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements/runtime.lock requirements/build.lock requirements/
RUN python3 -m venv /opt/fabric \
    && /opt/fabric/bin/pip install --require-hashes -r requirements/runtime.lock \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY controller controller
COPY gateway gateway
COPY taskctl taskctl
COPY invoke invoke
# The wheel is built with the locked setuptools (in /opt/build, left behind in this stage).
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/fabric/bin/pip install --no-deps /tmp/wheels/*.whl

FROM ${BASE_IMAGE}
# Time-zone data for schedules with a timeZone (the Debian base made by devcluster/images.sh has it).
# Not pinned, on purpose: time-zone rules change, and the base's release decides which versions exist.
# hadolint ignore=DL3008
RUN if [ ! -e /usr/share/zoneinfo/UTC ]; then \
      apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/fabric /opt/fabric
# Non-root, matching runAsUser in manifests/operator.yaml; the root filesystem is mounted read-only.
USER 65532:65532
ENV PATH=/opt/fabric/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 8081
CMD ["fabric-task-operator"]
