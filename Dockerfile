# One image for the operator and the gateway (and, later, the built-in invoke action).
#   docker build -t fabric-tasks:dev .
#   operator: command fabric-task-operator   gateway: command fabric-task-gateway
# Not built on our build machines (no Docker engine there); the manifests expect this image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller controller
COPY gateway gateway
COPY taskctl taskctl
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends tzdata && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
# Non-root, matching runAsUser in manifests/operator.yaml; the root filesystem is mounted read-only.
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 8081
CMD ["fabric-task-operator"]
