#!/usr/bin/env bash
# The fault suite (benches/faults.py): kill -9 of the only gateway and of one of two, Redis
# killed and restarted with AOF, Redis stalled past the command timeout, Redis full, FLUSHALL,
# and a target down for 20 s under 10,000 events; one row per scenario (acked, delivered, lost,
# duplicates, seconds to recover). Exits non-zero when any row lost an acknowledged event.
# Usage: benches/faults.sh      (env: FAULTS=kill9_restart,redis_stall to choose; FAULT_RATE=300;
#                                ESTAFETA_BIN=another build)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ESTAFETA_BIN:-}" ]; then
  cargo build --release --quiet --bin estafeta
fi
exec python3 benches/faults.py
