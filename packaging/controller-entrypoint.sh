#!/bin/sh
# Container entrypoint: the broker (mosquitto drops to its own account), then the controller as `edgefleet`.
set -eu
edgefleet broker --host 0.0.0.0 &
broker=$!
i=0
until [ -s "$EDGEFLEET_BROKER_DIR/controller.password" ] && [ -s "$EDGEFLEET_BROKER_DIR/ca/ca.pem" ]; do
  i=$((i + 1)); [ "$i" -lt 100 ] || { echo "broker did not start" >&2; exit 1; }
  kill -0 "$broker" 2>/dev/null || { echo "broker exited" >&2; exit 1; }
  sleep 0.1
done
# the controller reads its broker password and the CA certificate (for enrollment bundles)
chown edgefleet "$EDGEFLEET_BROKER_DIR/controller.password"
mkdir -p "$COMPRESSION_WORKSPACE" && chown edgefleet "$COMPRESSION_WORKSPACE"
exec su edgefleet -s /bin/sh -c 'exec edgefleet controller'
