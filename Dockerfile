# chatkit-gateway: `python -m gateway serve --config /etc/chatkit-gateway/config.yaml`, as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies are pinned (==) in pyproject.toml; the source is not kept beside the installed package.
COPY pyproject.toml /src/
COPY gateway /src/gateway
COPY plugins /src/plugins
RUN pip install /src && rm -rf /src

RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/chatkit-gateway /etc/chatkit-gateway \
    && chown 10001:10001 /var/lib/chatkit-gateway
COPY config.yaml /etc/chatkit-gateway/config.yaml

# Listen on every interface of the container; the SQLite database (WAL) lives on the volume.
ENV GATEWAY__SERVER__HOST=0.0.0.0 \
    GATEWAY__STORAGE__PATH=/var/lib/chatkit-gateway/gateway.db
VOLUME ["/var/lib/chatkit-gateway"]
WORKDIR /var/lib/chatkit-gateway
USER 10001:10001
EXPOSE 8080

# No curl in the slim image. The check never goes through HTTP(S)_PROXY, which may be set for the upstream.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY__SERVER__PORT', '8080'), timeout=4)"]

CMD ["python", "-m", "gateway", "serve", "--config", "/etc/chatkit-gateway/config.yaml"]
