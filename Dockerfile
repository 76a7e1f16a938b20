# syntax=docker/dockerfile:1.12
# The code location image, built on Docker Build Cloud (`images/code-location`) and, with
# `--target gpu`, the image that runs the embedding entrypoint on a GPU (`images/gpu-embedding`).
# Dependencies sit in a layer of their own before the project's code, so a code change rebuilds
# only the last layers; uv's cache lives in a cache mount, never in the image.

FROM astral/uv:0.11.7-python3.11-bookworm-slim AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md workspace.yaml dagster.yaml Dockerfile .dockerignore ./
COPY sophia_assets ./sophia_assets
COPY resources ./resources
COPY sensors ./sensors
COPY flow_specs ./flow_specs
COPY infra ./infra
COPY deploy ./deploy
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# Same Python and Debian as the build stage, so the virtual environment's interpreter path holds.
FROM python:3.11.14-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 sophia \
    && useradd --system --uid 10001 --gid sophia --home-dir /app --no-create-home sophia
COPY --from=build --chown=sophia:sophia /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SOPHIA_HOME=/tmp/sophia
WORKDIR /app
USER 10001:10001
EXPOSE 3030
CMD ["dagster", "code-server", "start", "--host", "0.0.0.0", "--port", "3030", "--module-name", "sophia_assets.definitions"]

# The GPU variant runs the embedding entrypoint: the same environment (PyPI's torch wheel
# carries the CUDA runtime); the host brings the driver through the NVIDIA container toolkit.
FROM runtime AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
# The Dagster Pipes entrypoint: the bootstrap environment names its batch and output.
CMD ["python", "-m", "sophia_assets.embedding.entrypoint"]
