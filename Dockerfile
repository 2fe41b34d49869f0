# One image for every Costline process; docker-compose.yml gives each service its command.
# The first stage compiles the ingest path's hot modules with mypyc (collector/speedups.py); the final
# image carries the compiled build but no compiler.
FROM python:3.11-slim AS speedups
RUN apt-get update && apt-get install --yes --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -e . mypy \
    && DATABASE_URL=postgres://localhost/unused-at-build python -c "from collector.speedups import main; main()" build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 costline
WORKDIR /app
COPY . .
# Editable, so that the settings find the checkout's layout (manage.py, templates/, staticfiles/) in /app.
# collectstatic only imports the settings; the URL keeps them from starting an embedded PostgreSQL.
RUN pip install -e . \
    && DATABASE_URL=postgres://localhost/unused-at-build python manage.py collectstatic --no-input --verbosity 0
COPY --from=speedups /app/.costline/speedups /app/.costline/speedups

USER costline
# Compile the anomaly detector's loop once at build (numba caches it in the user's home: /app is not
# writable by this user), so a container's first alert run does not spend seconds compiling it. A
# host whose CPU differs from the build's compiles it again on first use, into the same cache.
ENV NUMBA_CACHE_DIR=/home/costline/.cache/numba
RUN python -c "import numpy as np; from costline.alerts.detection import score; score(np.zeros(2), np.arange(2))"
EXPOSE 8000 4317 4318
CMD ["gunicorn", "costline.wsgi:application", "--bind", "0.0.0.0:8000", "--access-logfile", "-"]
