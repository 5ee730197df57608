#!/usr/bin/env bash
# Apache Kafka (KRaft) for the tests: the broker's runtime jars from Maven Central, resolved by
# tools/kafka/pom.xml, copied to $CACHE_DIR/kafka-$KAFKA_VERSION/libs and run with the machine's Java.
source "$(dirname "$0")/common.sh"

# This machine kind ships OpenJDK 17 and Maven; install them from Debian where they are missing.
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
need java "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless), then rerun bash tools/kafka.sh"
need mvn "install Maven (Debian: apt-get install maven), then rerun bash tools/kafka.sh"

# Kafka 4.x brokers need Java 17 or newer.
java_major=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  log "kafka $KAFKA_VERSION needs Java >= 17, found $java_major"
  exit 1
fi

dest="$CACHE_DIR/kafka-$KAFKA_VERSION"
stamp="$dest/.complete"
# The stamp also covers the pom and logging config, so editing either re-provisions.
want="kafka=$KAFKA_VERSION scala=$SCALA_VERSION log4j=$LOG4J_VERSION inputs=$(
  cat "$TOOLS_DIR/kafka/pom.xml" "$TOOLS_DIR/kafka/log4j2.properties" | sha256sum | cut -c1-16
)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dest/log4j2.properties" ]; then
  log "kafka $KAFKA_VERSION cached in $dest"
  exit 0
fi

start=$(date +%s)
log "kafka $KAFKA_VERSION: resolving broker jars from Maven Central (scala $SCALA_VERSION, log4j $LOG4J_VERSION)"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/libs"
mvn_log="$dest.tmp/mvn.log"
mvn -B -f "$TOOLS_DIR/kafka/pom.xml" \
  -Dkafka.version="$KAFKA_VERSION" -Dscala.binary.version="$SCALA_VERSION" -Dlog4j.version="$LOG4J_VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dest.tmp/libs" >"$mvn_log" 2>&1 &
mvn_pid=$!
# Progress for a cold run: downloads from Maven Central can take a while on a slow link.
while kill -0 "$mvn_pid" 2>/dev/null; do
  sleep 5
  kill -0 "$mvn_pid" 2>/dev/null || break
  log "kafka $KAFKA_VERSION: $(grep -c 'Downloaded from' "$mvn_log" || true) artifacts downloaded so far"
done
if ! wait "$mvn_pid" || [ ! -f "$dest.tmp/libs/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar" ]; then
  tail -n 30 "$mvn_log" >&2
  log "kafka $KAFKA_VERSION: maven could not resolve the broker jars (log: $mvn_log)"
  exit 1
fi
log "kafka $KAFKA_VERSION: $(grep -c 'Downloaded from' "$mvn_log" || true) artifacts downloaded, $(find "$dest.tmp/libs" -name '*.jar' | wc -l) jars copied"
cp "$TOOLS_DIR/kafka/log4j2.properties" "$dest.tmp/log4j2.properties"
# The broker must start from these jars: a quick check that the main class resolves.
java -cp "$dest.tmp/libs/*" kafka.tools.StorageTool random-uuid >/dev/null 2>&1 \
  || { log "kafka $KAFKA_VERSION: StorageTool does not run from the copied jars"; exit 1; }
echo "$want" >"$dest.tmp/.complete"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
log "kafka $KAFKA_VERSION provisioned in $dest ($(( $(date +%s) - start ))s)"
