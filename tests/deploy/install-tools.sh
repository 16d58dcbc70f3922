#!/usr/bin/env bash
# Installs what tests/deploy needs to validate docker-compose.yml offline (no Docker engine anywhere):
#   - Debian's docker-compose (v1.29): `docker-compose config` parses, interpolates and validates the file;
#   - the current compose-spec JSON schema, as shipped inside the npm package dclint (schemas/compose.schema.json).
# Idempotent; run by .ci/run, and by developers who want these tests to run instead of skip. Needs root for apt.
set -euo pipefail

DCLINT_VERSION=3.1.0
SCHEMA_DEST="${COMPOSE_SPEC_SCHEMA:-/usr/local/share/costlake/compose-spec/compose.schema.json}"

if ! command -v docker-compose >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

if [ ! -s "$SCHEMA_DEST" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # `npm pack` fetches the package tarball only (no install, no scripts run).
  (cd "$tmp" && npm pack --silent "dclint@${DCLINT_VERSION}" >/dev/null)
  tar -xzf "$tmp/dclint-${DCLINT_VERSION}.tgz" -C "$tmp" package/schemas/compose.schema.json
  install -D -m 0644 "$tmp/package/schemas/compose.schema.json" "$SCHEMA_DEST"
fi

docker-compose version --short
echo "compose-spec schema: $SCHEMA_DEST"
