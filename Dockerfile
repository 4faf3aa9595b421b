# chatsse as a container: built from the lock file (every hash checked), run as a non-root user, no compilers or
# build tools in the final image, and fine on a read-only root filesystem (only /tmp is written: give it a tmpfs).
#
#   docker build -t chatsse .
#   docker run --rm -p 8000:8000 chatsse chatsse serve --demo       # no Azure account needed
#   docker run --rm -p 8000:8000 --env-file .env chatsse
#
# BASE is any Debian-based image with Python 3.11+ and its venv module (deploy/container-check.sh builds one from
# Debian's own packages where no registry is reachable).
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/chatsse
COPY requirements.txt /src/requirements.txt
RUN /opt/chatsse/bin/pip install --require-hashes -r /src/requirements.txt
COPY pyproject.toml README.md /src/
COPY chatsse /src/chatsse
RUN /opt/chatsse/bin/pip install --no-deps /src \
    && /opt/chatsse/bin/python -m compileall -q /opt/chatsse/lib \
    && /opt/chatsse/bin/pip uninstall -y pip

FROM ${BASE}
RUN (getent group chatsse || groupadd --system --gid 10001 chatsse) \
    && (getent passwd chatsse || useradd --system --uid 10001 --gid chatsse --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin chatsse)
COPY --from=build /opt/chatsse /opt/chatsse
# HOST, PORT and WEB_CONCURRENCY are what `chatsse serve` listens on and how many workers it runs.
ENV PATH=/opt/chatsse/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    WEB_CONCURRENCY=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/live' % os.environ.get('PORT', '8000'), timeout=2)"]
STOPSIGNAL SIGTERM
CMD ["chatsse", "serve"]
