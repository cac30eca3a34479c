#!/usr/bin/env bash
# Console page bench: Estafeta (release, role all) with its own Redis; a tenant with EVENTS
# events (default 100 000), DEAD of them (default 2 000) dead-lettered by a target answering
# 500; then every console page fetched 7 times with a session: its weight and its time to the
# last byte over loopback (benches/load/pages_bench.rs).
# Usage: benches/pages.sh   (env: EVENTS, DEAD; ESTAFETA_BIN=another build)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-100000}
DEAD=${DEAD:-2000}
ESTAFETA=${ESTAFETA_BIN:-./target/release/estafeta}

cargo build --release --quiet --bin estafeta --example pages_bench
. benches/common.sh

start_estafeta pages "[dispatch]
retry_poll_ms = 50"
./target/release/examples/pages_bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$EVENTS" "$DEAD"
echo "redis: $(redis-cli -p "$RPORT" info memory | awk -F: '/^used_memory_human:/ {print $2}' | tr -d '\r') used, $(redis-cli -p "$RPORT" dbsize) keys"
