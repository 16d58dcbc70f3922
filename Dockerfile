# Costlake app image: Streamlit with the embedded scheduler, PySpark on a Java 17 runtime, pinned requirements.
# Built by docker-compose.yml (`docker compose build app`); see docs/production-stack.md.
#
# bookworm, not trixie: Debian 13 no longer ships openjdk-17, which Spark 4 runs on.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONPATH=/app \
    DATA_DIR=/var/lib/costlake

# Java for Spark (found on PATH by backend/runtime/java.py, so SPARK_JAVA_HOME stays empty and the image
# works on amd64 and arm64 alike); tini as PID 1 reaps Spark's child processes and forwards SIGTERM.
# Debian packages are not version-pinned: the pinned base image fixes the release, and security
# updates within it must not break the build. The man1 folder works around openjdk's postinst on slim.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && java -version

# A fixed uid/gid so the app-data volume keeps its ownership across rebuilds.
RUN groupadd --system --gid 10001 costlake \
 && useradd --system --uid 10001 --gid costlake --home-dir /var/lib/costlake --shell /usr/sbin/nologin costlake \
 && mkdir -p /var/lib/costlake \
 && chown costlake:costlake /var/lib/costlake

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the pins change, not on every code change.
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

# Code (and .streamlit/config.toml) last; .dockerignore keeps .env, secrets.toml, data/, .venv/ and tests out.
# Owned by root and read-only to the app user: the running app cannot modify its own code.
COPY . .

USER costlake
VOLUME ["/var/lib/costlake"]
EXPOSE 8501

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=5)"]

ENTRYPOINT ["/usr/bin/tini", "--"]
# The working directory stays /app: Streamlit reads .streamlit/config.toml from there.
# app.serve starts the runtime and the scheduler before Streamlit, so scheduled runs need no browser session.
CMD ["python", "-m", "app.serve", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
