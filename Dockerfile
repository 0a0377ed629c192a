# syntax=docker/dockerfile:1
# Miaofa (秒发): one image for every role; docker-compose.yml picks the command
# (`api`, `worker`, `sim`, `db upgrade`, `keys import ...`).

# --- build: install the project (no dev/test extras) into a virtualenv -------------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
WORKDIR /src

# Exactly what pyproject's setuptools config packages: the top-level packages and worker.py.
COPY pyproject.toml ./
COPY miaofa/ miaofa/
COPY api/ api/
COPY workflows/ workflows/
COPY activities/ activities/
COPY worker.py ./

RUN /opt/venv/bin/pip install .

# --- runtime: the virtualenv only, run as an unprivileged user ---------------------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/miaofa miaofa
COPY --from=build /opt/venv /opt/venv

USER miaofa
WORKDIR /home/miaofa

# API (api) and gateway simulator (sim); the worker serves no port.
EXPOSE 8000 8010

ENTRYPOINT ["miaofa"]
CMD ["api"]
