#!/usr/bin/env bash
# Delivery bench: Estafeta (release, role all) with its own Redis, a local sink that answers 200
# at once, and the dispatch_bench driver (benches/load/dispatch_bench.rs), all on this machine.
#   1. fan-out 1:  EVENTS events, one target
#   2. fan-out 10: EVENTS events, ten targets (EVENTS x 10 deliveries)
#   3. fan-out 10 paced at half the deliveries/s measured in 2, for latency
#   4. sink down: 20 000 events to a closed port; Estafeta's memory before and after
#   6. (ONLY=breaker) a receiver down next to nine live ones, 1 000 events/s for BREAKER_S
#      seconds, with the circuit breaker (the default) and without: the live targets'
#      deliveries/s and latency, and the attempts spent on the dead one
#   7. (ONLY=knee) one target whose receiver answers in 50 ms up to 50 requests in flight and
#      slower past them (latency ∝ in flight), KNEE_EVENTS events: adaptive (the default)
#      against a fixed `concurrency = 50` (the hand-tuned best) in three interleaved rounds
#   8. (ONLY=limit) one target whose receiver answers 429 to a request that finds 50 in
#      flight (50 ms otherwise), KNEE_EVENTS events, adaptive: the share of attempts that get
#      429 after the first 10 s, three rounds
#   5. slow receivers: SLOW_EVENTS events to ten targets answering in 200 ms, with the default
#      limits, then with `concurrency` and `per_target_concurrency` raised to 4 096; prints the
#      ideal rate (deliveries in flight / latency) and the memory per delivery in flight
# Usage: benches/dispatch.sh        (env: EVENTS=50000 SLOW_EVENTS=5000; ESTAFETA_BIN=another
#                                    build, to compare; ONLY=fanout runs steps 1-3,
#                                    ONLY=slow step 5, ONLY=breaker step 6;
#                                    BREAKER_S=20; ONLY=knee, ONLY=limit: KNEE_EVENTS=30000)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-50000}
SLOW_EVENTS=${SLOW_EVENTS:-5000}
ONLY=${ONLY:-}
ESTAFETA=${ESTAFETA_BIN:-./target/release/estafeta}

cargo build --release --quiet --bin estafeta --example dispatch_bench
. benches/common.sh

rss() { awk "/$2/ {print \$2}" "/proc/$1/status"; }

bench=./target/release/examples/dispatch_bench
redis_cpu() { redis-cli -p "$RPORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'; }
# Runs the driver for $1 events at fan-out $2 and prints its line, then Redis's CPU per
# delivery over the run (ingest, expansion, sends, outcome records and acknowledgements).
measured() {
  local r0 line; r0=$(redis_cpu)
  line=$($bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$1" "$2" 0)
  echo "$line"
  awk -v a="$r0" -v b="$(redis_cpu)" -v n="$(( $1 * $2 ))" \
    'BEGIN {printf "  redis CPU per delivery: %.2f us\n", (b - a) * 1e6 / n}'
}

if [ -z "$ONLY" ] || [ "$ONLY" = fanout ]; then
echo "delivery bench: $EVENTS events per run, sink answers 200 at once"
start_estafeta f1
measured "$EVENTS" 1
echo "  estafeta peak RSS: $(( $(rss "$EST" VmHWM) / 1024 )) MB"
kill "$EST"; wait "$EST" 2>/dev/null || true

start_estafeta f10
out=$(measured "$EVENTS" 10)
echo "$out"
echo "  estafeta peak RSS: $(( $(rss "$EST" VmHWM) / 1024 )) MB"
kill "$EST"; wait "$EST" 2>/dev/null || true

rate=$(echo "$out" | python3 -c 'import re,sys; d=float(re.search(r"= (\d+) deliveries/s", sys.stdin.read()).group(1)); print(int(d/2/10))')
start_estafeta half
$bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$(( rate * 15 ))" 10 "$rate"
kill "$EST"; wait "$EST" 2>/dev/null || true
fi

if [ -z "$ONLY" ]; then
start_estafeta down
before=$(rss "$EST" VmRSS)
$bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" 20000 1 0 --sink-down
sleep 10
scheduled=0
for s in $(seq 0 15); do scheduled=$(( scheduled + $(redis-cli -p "$RPORT" zcard "down:{q$s}:retry") )); done
echo "  sink down: estafeta RSS ${before} kB before, $(rss "$EST" VmRSS) kB after 10 s of retries," \
  "peak $(rss "$EST" VmHWM) kB; $scheduled deliveries wait in Redis's retry schedule"
fi


# Slow receivers. The in-flight cap is the smaller of `concurrency` and ten targets'
# `per_target_concurrency`; memory per delivery in flight is the peak RSS above the idle one.
slow() {
  local name=$1 conf=$2
  start_estafeta "$name" "$conf"
  local cap; cap=$(BENCH_ADMIN_TOKEN=$ADMIN_TOKEN BENCH_MASTER_KEY=$MASTER_KEY \
    "$ESTAFETA" check-config --config "$work/$name.toml" | python3 -c '
import sys, tomllib
d = tomllib.loads(sys.stdin.read())["dispatch"]
print(min(d["concurrency"], 10 * d["per_target_concurrency"]))')
  local idle; idle=$(rss "$EST" VmRSS)
  $bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$SLOW_EVENTS" 10 0 --sink-delay-ms 200
  local peak; peak=$(rss "$EST" VmHWM)
  echo "  $name: in-flight cap $cap, ideal $(( cap * 5 )) deliveries/s;" \
    "RSS idle ${idle} kB, peak ${peak} kB: $(awk "BEGIN {printf \"%.1f\", ($peak - $idle) / $cap}") kB per delivery in flight"
  kill "$EST"; wait "$EST" 2>/dev/null || true
}
# A dead receiver beside live ones: attempts spent on it (every failed attempt is its) and
# what the live ones get, with and without the breaker, in interleaved rounds.
attempts_failed() {
  curl -sf "http://127.0.0.1:$ADMIN/metrics" | awk '/^estafeta_deliveries_total\{outcome="(retry|dead_letter)"\}/ {s += $2} END {print s + 0}'
}
dead_target() {
  local name=$1 conf=$2 seconds=${BREAKER_S:-20}
  start_estafeta "$name" "$conf"
  local line; line=$($bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" $(( seconds * 1000 )) 10 1000 --dead 1)
  echo "  $name: $line; attempts on the dead target: $(attempts_failed)"
  kill "$EST"; wait "$EST" 2>/dev/null || true
}
if [ "$ONLY" = breaker ]; then
  echo "a dead target (connection refused) beside nine live ones, 1000 events/s, ${BREAKER_S:-20} s"
  for round in 1 2 3; do
    dead_target "breaker_on_$round" ""
    dead_target "breaker_off_$round" $'[dispatch.breaker]\nenabled = false'
  done
  exit 0
fi

# One receiver with a capacity of 1,000 answers/s (50 in flight at 50 ms).
capacity_run() {
  local name=$1 conf=$2; shift 2
  start_estafeta "$name" "$conf"
  echo "  $name: $($bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "${KNEE_EVENTS:-30000}" 1 0 --sink-delay-ms 50 "$@")"
  kill "$EST"; wait "$EST" 2>/dev/null || true
}
if [ "$ONLY" = knee ]; then
  echo "a receiver with a knee at 50 in flight (50 ms below it, latency in proportion above), ${KNEE_EVENTS:-30000} events"
  for round in 1 2 3; do
    capacity_run "knee_adaptive_$round" "" --knee 50
    capacity_run "knee_fixed50_$round" "" --knee 50 --target-concurrency 50
  done
  exit 0
fi
if [ "$ONLY" = limit ]; then
  echo "a receiver answering 429 above 50 in flight (50 ms otherwise), ${KNEE_EVENTS:-30000} events"
  for round in 1 2 3; do
    capacity_run "limit_adaptive_$round" "" --limit-429 50
  done
  exit 0
fi

[ -z "$ONLY" ] || [ "$ONLY" = slow ] || exit 0
echo "slow receivers: $SLOW_EVENTS events to 10 targets answering in 200 ms"
slow slow_defaults ""
slow slow_raised $'[dispatch]\nconcurrency = 4096\nper_target_concurrency = 4096'
