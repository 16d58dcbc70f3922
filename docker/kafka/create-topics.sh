#!/usr/bin/env bash
# One-shot job of the compose stack (apache/kafka image): create Costlake's topic(s) if missing, then exit.
# Runs on every `docker compose up`, so it must be idempotent and must fail loudly.
set -euo pipefail

: "${BOOTSTRAP_SERVERS:?}" "${TOPIC:?}" "${PARTITIONS:?}"
topics=/opt/kafka/bin/kafka-topics.sh

# Single node: one replica is all there is. Partitions bound the parallelism of the bronze consumers.
"$topics" --bootstrap-server "$BOOTSTRAP_SERVERS" --create --if-not-exists \
  --topic "$TOPIC" --partitions "$PARTITIONS" --replication-factor 1

# --if-not-exists keeps an existing topic as it is; say so when its partition count differs from .env
# (Kafka can add partitions but never remove them, so changing it is a deliberate operator step).
actual=$("$topics" --bootstrap-server "$BOOTSTRAP_SERVERS" --describe --topic "$TOPIC" \
  | sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
if [ "$actual" != "$PARTITIONS" ]; then
  echo "kafka-init: topic $TOPIC has $actual partition(s), KAFKA_TOPIC_PARTITIONS=$PARTITIONS; see docs/production-stack.md" >&2
fi
echo "kafka-init: topic $TOPIC ready ($actual partition(s))"
