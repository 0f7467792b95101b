# One image for the operator, the gateway and the built-in invoke action.
#   docker build -t fabric-tasks:dev .            (or: buildah bud --build-arg BASE_IMAGE=<local base> -t fabric-tasks:dev .)
#   operator: command fabric-task-operator   gateway: command fabric-task-gateway
#   invoke action: command [sys-invoke-skill]  (the default of agent invoke Tasks; reads $FABRIC_PAYLOAD,
#                  writes its outcome to /dev/termination-log; see README "The invoke action")
#   example agent (demo only): command [fabric-example-agent, --host, 0.0.0.0, --port, "8070"]
# BASE_IMAGE: any Debian-based Python >= 3.11 image with pip (a local copy where there is no registry).
# Not built on our build machines (no Docker engine there); the manifests expect this image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller controller
COPY gateway gateway
COPY taskctl taskctl
COPY invoke invoke
RUN pip install --no-cache-dir --prefix=/install .

FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
# Non-root, matching runAsUser in manifests/operator.yaml; the root filesystem is mounted read-only.
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 8081
CMD ["fabric-task-operator"]
