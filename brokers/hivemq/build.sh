#!/usr/bin/env bash
# Build the mqttlb HiveMQ extension and launcher: brokers/hivemq/target/mqttlb-hivemq.jar (one runnable jar),
# and the extension alone as a HiveMQ extension folder, target/mqttlb-extension/mqttlb-extension/ (and .zip).
# Offline (mvn -o) when the local Maven repository already holds every dependency and plugin; otherwise
# online, once, from Maven Central. Does nothing when both are there and the jar is newer than pom.xml and
# every source file.
# Needs Java 17+ and Maven 3.6+. Exit status: 0 built or up to date, 1 build failed, 2 tools missing.
set -euo pipefail
cd "$(dirname "$0")"

JAR=target/mqttlb-hivemq.jar
FOLDER=target/mqttlb-extension/mqttlb-extension
if [ -f "$JAR" ] && [ -f "$FOLDER/hivemq-extension.xml" ] && [ -z "$(find pom.xml src -newer "$JAR" -print -quit)" ]; then
  echo "hivemq: $JAR is up to date"
  exit 0
fi
for tool in java mvn; do
  command -v "$tool" >/dev/null || { echo "hivemq: error: $tool not found (Debian: openjdk-17-jdk-headless maven)" >&2; exit 2; }
done
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [ "${java_major%%.*}" -lt 17 ]; then
  echo "hivemq: error: Java 17 or newer needed, found $java_major" >&2
  exit 2
fi

MVN=(mvn -q -B -Dstyle.color=never --no-transfer-progress)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
if "${MVN[@]}" -o package >"$log" 2>&1; then
  mode=offline
elif grep -q "in offline mode" "$log"; then
  echo "hivemq: the local Maven repository lacks some artifacts; building online (Maven Central)"
  if ! "${MVN[@]}" package >"$log" 2>&1; then
    cat "$log" >&2
    echo "hivemq: error: mvn package failed (online)" >&2
    exit 1
  fi
  mode=online
else
  cat "$log" >&2
  echo "hivemq: error: mvn package failed" >&2
  exit 1
fi
echo "hivemq: built $JAR and $FOLDER/ ($mode, $(( $(date +%s) - start )) s)"
