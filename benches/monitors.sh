#!/usr/bin/env bash
# Overdue-checker cost with many monitors: MONITORS (default 1000000) watched monitors in a
# Redis of the bench's own, OVERDUE_PCT (default 1) % of them overdue; prints the fill rate
# through the heartbeat script, then the time and Redis commands (sent, and run by Redis inside
# scripts too) of a checker pass between deadlines, of the pass that handles the overdue ones,
# and of the pass after it.
#
# Usage: benches/monitors.sh        (env: MONITORS=1000000 OVERDUE_PCT=1)
# Needs: redis-server, python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

MONITORS=${MONITORS:-1000000}
OVERDUE_PCT=${OVERDUE_PCT:-1}
cargo build --release --quiet --example checker_bench

. benches/common.sh

./target/release/examples/checker_bench "$REDIS" "$MONITORS" "$OVERDUE_PCT"
