#!/bin/sh
# Entry point for docker-compose services: install the locked dependencies into the shared
# venv volume (fast when already there), then run the given command.
set -e
cd /app
test -x .venv/bin/python || python -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
UV_PROJECT_ENVIRONMENT=/app/.venv .venv/bin/uv sync --frozen --inexact --quiet --no-dev
exec "$@"
