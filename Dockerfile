# mqttlb's own components (broker exporter, Envoy exporter, rebalancer webhook) for the Docker
# Compose stack (stack/docker-compose.yml):  docker build -t mqttlb:local .
# Run one with its subcommand, e.g.  docker run mqttlb:local webhook --config /etc/mqttlb/webhook.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what `pip install .` packages (see .dockerignore): metadata, the package, its shipped data.
COPY pyproject.toml README.md ./
COPY mqttlb ./mqttlb
# Data the wheel ships inside the package (mqttlb/shipped.py): rules, dashboards, runbooks, stack files.
COPY rules ./rules
COPY dashboards/generated ./dashboards/generated
COPY docs/runbooks ./docs/runbooks
COPY stack ./stack
RUN pip install . && rm -rf /src

WORKDIR /
# 9641 broker exporter, 9642 Envoy exporter, 9643 webhook (defaults of stack/stack.yaml)
EXPOSE 9641 9642 9643
ENTRYPOINT ["mqttlb"]
CMD ["--help"]
