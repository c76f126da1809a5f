# syntax=docker/dockerfile:1
#
# aero-relay container image (drop-in for aero-webrtc-udp-relay's image).
#
# Ports:
#   8080/tcp          HTTP: signalling, /udp WebSocket, /healthz, /readyz, /version, /metrics
#   50000-50100/udp   ICE (WebRTC) ports: keep WEBRTC_UDP_PORT_MIN/MAX, the published range and
#                     the firewall identical (docs/operations.md, "Ports and ranges")
#
# Build (BuildKit, the default builder of Docker 23+):
#   docker build -t aero-relay \
#     --build-arg BUILD_COMMIT="$(git rev-parse HEAD)" \
#     --build-arg BUILD_TIME="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
# Run: docker run --rm -p 8080:8080 -p 50000-50100:50000-50100/udp -e AUTH_MODE=none aero-relay
# Arguments are `aero-relay` arguments: `serve` (default), `serve --mode=prod`, `check-config`, `version`.

ARG PYTHON_VERSION=3.11

# ---- builder: a wheel of the project plus a wheel of every runtime dependency ----------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the package build reads (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md LICENSE ./
COPY aero_relay ./aero_relay
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --wheel-dir /wheels .

# ---- runtime: slim Python, the wheels installed offline, a non-root user ---------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it (ops/kubernetes/).
RUN groupadd --system --gid 10001 aero \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin aero

# The wheels are bind-mounted from the builder, so neither they nor any build tool end up in a
# layer; --no-index installs exactly the dependency set the builder resolved.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels aero-relay

# Build metadata for GET /version (aero_relay/buildinfo.py reads _build_info.json next to the
# package). Late in the file so a new commit only rebuilds this layer.
ARG BUILD_COMMIT=""
ARG BUILD_TIME=""
RUN python -I -c 'import importlib.util, json, os, pathlib; pkg = pathlib.Path(importlib.util.find_spec("aero_relay").submodule_search_locations[0]); (pkg / "_build_info.json").write_text(json.dumps({"commit": os.environ.get("BUILD_COMMIT", ""), "buildTime": os.environ.get("BUILD_TIME", "")}) + "\n")'
LABEL org.opencontainers.image.title="aero-relay" \
      org.opencontainers.image.description="UDP relay for browsers (WebRTC DataChannel and WebSocket)" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${BUILD_COMMIT}" \
      org.opencontainers.image.created="${BUILD_TIME}"

# Listen on every interface inside the container (the relay's own default is 127.0.0.1:8080),
# and use the ICE port range that EXPOSE documents. PYTHONDONTWRITEBYTECODE: the root
# filesystem may be read-only (Kubernetes readOnlyRootFilesystem).
ENV AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR=0.0.0.0:8080 \
    WEBRTC_UDP_PORT_MIN=50000 \
    WEBRTC_UDP_PORT_MAX=50100 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /

EXPOSE 8080/tcp
EXPOSE 50000-50100/udp

# No curl in the slim image: probe /healthz with urllib, on the port of
# AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR, bypassing any HTTP(S)_PROXY; a non-2xx answer or no answer
# raises (exit 1). -I: isolated mode, nothing from the working directory is importable.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-I", "-c", "import os, urllib.request; port = os.environ.get('AERO_WEBRTC_UDP_RELAY_LISTEN_ADDR', ':8080').rpartition(':')[2]; urllib.request.build_opener(urllib.request.ProxyHandler({})).open('http://127.0.0.1:' + port + '/healthz', timeout=4)"]

# SIGTERM starts the graceful shutdown (readyz 503, sessions closed, up to
# AERO_WEBRTC_UDP_RELAY_SHUTDOWN_TIMEOUT): give `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aero-relay"]
CMD ["serve"]
