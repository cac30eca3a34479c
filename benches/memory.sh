#!/usr/bin/env bash
# Storage bench: Redis memory per event, and with a log store PostgreSQL bytes per event, the
# shipper's lag and rate. Estafeta (release, role all) with its own Redis (and PostgreSQL),
# the dispatch_bench driver and its sink (benches/load/dispatch_bench.rs).
#   1. Redis only: EVENTS events at fan-out 0, 1 and 10; (used_memory after - before) / events
#   2. log store (MODE=all or log): RATE events/s for RUN_S seconds (>= 10 hot windows) to one
#      target, Redis used_memory sampled every HOT_S seconds; after the run and one hot window,
#      Redis bytes per event ingested, PostgreSQL bytes per event, shipped rows/s, max lag
# Records stay 2 x dispatch.reclaim_idle_ms at least (10 s here, so 20 s = HOT_S) after shipping.
# Usage: benches/memory.sh   (env: EVENTS=20000 RATE=500 HOT_S=20 RUN_S=200 MODE=all|redis|log;
#                             ESTAFETA_BIN=another build, to compare; it must know [log_store]
#                             for MODE=log)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-20000}
RATE=${RATE:-500}
HOT_S=${HOT_S:-20}
RUN_S=${RUN_S:-200}
MODE=${MODE:-all}
ESTAFETA=${ESTAFETA_BIN:-./target/release/estafeta}

cargo build --release --quiet --bin estafeta --example dispatch_bench
. benches/common.sh
bench=./target/release/examples/dispatch_bench

used() { redis-cli -p "$RPORT" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }

stop_estafeta() { kill "$EST"; wait "$EST" 2>/dev/null || true; }

if [ "$MODE" != log ]; then
  echo "Redis only: $EVENTS events of $(printf '%s' '{"id":0,"payload":"..."}' | wc -c)-ish bytes per run"
  for fanout in 0 1 10; do
    redis-cli -p "$RPORT" flushall >/dev/null
    start_estafeta "r$fanout" ""
    sleep 1
    before=$(used)
    out=$($bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$EVENTS" "$fanout" 0)
    sleep 2
    after=$(used)
    echo "  fan-out $fanout: $(( (after - before) / EVENTS )) bytes of Redis memory per retained event"
    [ "$fanout" = 1 ] && echo "   $out"
    stop_estafeta
  done
fi

if [ "$MODE" != redis ]; then
  # A PostgreSQL of the bench's own; initdb and pg_ctl refuse root, so run them as postgres.
  pgbin=$(pg_config --bindir 2>/dev/null || true)
  [ -x "$pgbin/initdb" ] || pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  pgdir=$(mktemp -d)   # not under $work: postgres must be able to reach it
  [ "$(id -u)" = 0 ] && chown postgres "$pgdir"
  as_pg "$pgbin/initdb" -A trust -U postgres --no-sync -D "$pgdir/data" >/dev/null
  PGPORT=$(free_port)
  as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -o "-p $PGPORT -k $pgdir -c listen_addresses=127.0.0.1" \
    -l "$pgdir/log" -w start >/dev/null
  stop_pg() { as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true; }
  trap 'stop_pg; rm -rf "$pgdir"; cleanup' EXIT
  PG="postgres://postgres@127.0.0.1:$PGPORT/postgres"
  total=$(( RATE * RUN_S ))
  echo "log store: $total events at $RATE/s to one target, hot window $HOT_S s, Redis sampled every $HOT_S s"
  redis-cli -p "$RPORT" flushall >/dev/null
  logstore="[queue]
hot_window_s = $HOT_S
[dispatch]
request_timeout_ms = 5000
reclaim_idle_ms = 10000
[log_store]
url = \"$PG\""
  # Deliveries at full speed with the shipper running, against the Redis-only run above.
  start_estafeta shipfast "$logstore"
  echo "  fan-out 1 at full speed with the log store:"
  echo "   $($bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$EVENTS" 1 0)"
  for _ in $(seq 60); do
    lag=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^estafeta_log_store_lag_seconds/ {print $2}')
    shipped=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^estafeta_log_store_shipped_total/ {print $2}')
    [ "${shipped:-0}" -ge "$EVENTS" ] 2>/dev/null && break
    sleep 1
  done
  echo "   shipped ${shipped:-0} of $EVENTS; lag when caught up ${lag:-?} s"
  stop_estafeta
  redis-cli -p "$RPORT" flushall >/dev/null
  psql -qtA "$PG" -c "TRUNCATE events, deliveries, attempts" >/dev/null
  start_estafeta logged "$logstore"
  sleep 1
  before=$(used)
  samples=()
  maxlag=0
  $bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$total" 1 "$RATE" > "$work/bench.out" &
  drv=$!
  while kill -0 "$drv" 2>/dev/null; do
    sleep "$HOT_S"
    samples+=($(( ($(used) - before) / 1024 )))
    lag=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^estafeta_log_store_lag_seconds/ {print $2}')
    maxlag=$(python3 -c "print(max($maxlag, ${lag:-0}))")
  done
  cat "$work/bench.out"
  shipped_at_end=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^estafeta_log_store_shipped_total/ {print $2}')
  sleep $(( HOT_S + 5 ))
  after=$(used)
  echo "  Redis used_memory above the start, KiB, every $HOT_S s: ${samples[*]}"
  echo "  Redis after the run and one hot window: $(( (after - before) / total )) bytes per event ingested ($(( (after - before) / 1024 )) KiB for $total events)"
  echo "  shipper: max lag ${maxlag} s; ${shipped_at_end:-0} events shipped by the end of the load ($(python3 -c "print(round(${shipped_at_end:-0} / $RUN_S))") events/s)"
  psql -qtA "$PG" -c "SELECT count(*) FROM events" | sed 's/^/  events in PostgreSQL: /'
  psql -qtA "$PG" -c "SELECT (sum(pg_total_relation_size(c.oid)) / (SELECT count(*) FROM events))::int FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname IN ('events', 'deliveries', 'attempts')" | sed 's/^/  PostgreSQL bytes per event (tables and indexes, one target): /'
  for t in events deliveries attempts; do
    psql -qtA "$PG" -c "SELECT '$t: ' || (sum(pg_total_relation_size(c.oid)) / greatest((SELECT count(*) FROM $t), 1))::int || ' bytes per row' FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = '$t'" | sed 's/^/  PostgreSQL /'
  done
  stop_estafeta
fi
