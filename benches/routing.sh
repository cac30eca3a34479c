#!/usr/bin/env bash
# Routing bench (issue 21), Estafeta as users run it (release, `serve`, role all), on a Redis of
# its own, each comparison interleaved over ROUNDS rounds and reported as medians:
#   1. ingest: oha posts a 1 KB, 16-property JSON body for DURATION at CONNECTIONS to two
#      tenants of one gateway, one with `catalogue = "off"`, one with `catalogue = "enforce"`
#      and the type's schema (draft 2020-12, 16 properties, formats asserted); prints the ratio
#   2. fan-out 10: EVENTS events to ten targets, plain, then routed (a payload filter on every
#      target, a jq transformation on every other one: `dispatch_bench --routed`); the ratio
#   3. batches: EVENTS events to one target, unbatched, then batched by 100 (max_wait 200 ms)
#      against the same sink; the ratio of events delivered per second
# Usage: benches/routing.sh     (env: ROUNDS=3 DURATION=8s CONNECTIONS=64 EVENTS=20000;
#                                ONLY=ingest|fanout|batch; ROUTED_CONF=TOML for the routed
#                                gateway, e.g. $'[transform]\nworkers = 4'; SINK_DELAY_MS=0 for the
#                                batch runs)
# Needs: oha (cargo install oha --locked), redis-server, python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-64}
EVENTS=${EVENTS:-20000}
ONLY=${ONLY:-}
ESTAFETA=${ESTAFETA_BIN:-./target/release/estafeta}

cargo build --release --quiet --bin estafeta --example dispatch_bench
. benches/common.sh
bench=./target/release/examples/dispatch_bench
median() { python3 -c 'import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
rate_of() { python3 -c 'import re,sys; print(re.search(r"= (\d+) deliveries/s", sys.argv[1]).group(1))' "$1"; }
# Runs the delivery driver with "$@", prints its line, and appends its rate to the array named
# by RATES.
drive() {
  local line; line=$($bench "127.0.0.1:$PLAIN" "127.0.0.1:$ADMIN" "$ADMIN_TOKEN" "$@")
  echo "  $line"
  eval "$RATES+=(\"$(rate_of "$line")\")"
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -z "$ONLY" ] || [ "$ONLY" = ingest ]; then
command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
start_estafeta ingest
admin() { curl -sf -X "$1" "http://127.0.0.1:$ADMIN$2" -H "Authorization: Bearer $ADMIN_TOKEN" -d "${3:-}"; }
tenant() { admin POST /admin/tenants "{\"name\":\"$1\"}" | python3 -c 'import json,sys; t=json.load(sys.stdin); print(t["id"], t["token"])'; }
read -r OFF_ID OFF_TOKEN < <(tenant off)
read -r ON_ID ON_TOKEN < <(tenant enforce)
SCHEMA=$(python3 - <<'PY'
import json
props = {
  "order_id": {"type": "string", "pattern": "^ord_[A-Za-z0-9]{8,32}$"},
  "customer_id": {"type": "string", "pattern": "^cus_[A-Za-z0-9]{8,32}$"},
  "email": {"type": "string", "format": "email"},
  "amount": {"type": "integer", "minimum": 0},
  "currency": {"type": "string", "enum": ["BRL", "USD", "EUR"]},
  "status": {"type": "string", "enum": ["paid", "refunded", "failed"]},
  "paid_at": {"type": "string", "format": "date-time"},
  "items": {"type": "array", "maxItems": 50, "items": {"type": "object", "required": ["sku", "qty"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}, "price": {"type": "integer"}}}},
  "shipping": {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string", "minLength": 2, "maxLength": 2}, "zip": {"type": "string"}}},
  "billing_ip": {"type": "string", "format": "ipv4"},
  "coupon": {"type": ["string", "null"]},
  "installments": {"type": "integer", "minimum": 1, "maximum": 24},
  "gateway": {"type": "string"},
  "risk_score": {"type": "number", "minimum": 0, "maximum": 1},
  "channel": {"type": "string"},
  "note": {"type": "string", "maxLength": 500},
}
print(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
  "required": ["order_id", "customer_id", "amount", "currency", "status", "paid_at"],
  "additionalProperties": False, "properties": props}))
PY
)
admin PATCH "/admin/tenants/$ON_ID" '{"catalogue":"enforce"}' >/dev/null
admin PUT "/admin/tenants/$ON_ID/event-types/order.paid" "{\"schemas\":{\"1\":$SCHEMA}}" >/dev/null
BODY=$(python3 - <<'PY'
import json
b = {"order_id": "ord_8Jq2xYd41LkA", "customer_id": "cus_Q81nd0aPz", "email": "buyer@example.com",
  "amount": 129900, "currency": "BRL", "status": "paid", "paid_at": "2026-11-22T18:00:00Z",
  "items": [{"sku": f"SKU-{i:04d}", "qty": i + 1, "price": 1000 * (i + 1)} for i in range(6)],
  "shipping": {"city": "Lisboa", "country": "PT", "zip": "1100-001"}, "billing_ip": "198.51.100.7",
  "coupon": None, "installments": 3, "gateway": "acquirer-a", "risk_score": 0.12, "channel": "web",
  "note": "deliver after 18h; " + "x" * 320}
print(json.dumps(b))
PY
)
echo "ingest: $(printf %s "$BODY" | wc -c)-byte body, $DURATION at $CONNECTIONS connections, $ROUNDS interleaved rounds"
# The enforcing tenant accepts it (a refusal would be a different, cheaper request).
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PLAIN/v1/events/order.paid" \
  -H "Authorization: Bearer $ON_TOKEN" -H 'content-type: application/json' -d "$BODY")
[ "$code" = 202 ] || { echo "the enforcing tenant refused the bench body: $code" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$EST/stat"; }
# One oha run against tenant token $1: "<202 answers per second> <gateway CPU µs per request>".
run_oha() {
  local t0 t1 out; t0=$(cpu_ticks)
  out=$(oha -z "$DURATION" -c "$CONNECTIONS" --no-tui --output-format json -m POST \
    -H "Authorization: Bearer $1" -H 'content-type: application/json' -d "$BODY" \
    "http://127.0.0.1:$PLAIN/v1/events/order.paid")
  t1=$(cpu_ticks)
  python3 -c '
import json, os, sys
d = json.loads(sys.argv[1]); s = d.get("statusCodeDistribution", {})
n = max(1, sum(s.values()))
ticks = int(sys.argv[3]) - int(sys.argv[2])
print(d["summary"]["requestsPerSec"] * s.get("202", 0) / n, ticks / os.sysconf("SC_CLK_TCK") * 1e6 / n)
' "$out" "$t0" "$t1"
}
offs=(); ons=(); off_cpu=(); on_cpu=()
for r in $(seq "$ROUNDS"); do
  read -r rate cpu < <(run_oha "$OFF_TOKEN"); offs+=("$rate"); off_cpu+=("$cpu")
  read -r rate cpu < <(run_oha "$ON_TOKEN"); ons+=("$rate"); on_cpu+=("$cpu")
  printf '  round %s: off %.0f req/s (%.1f µs of gateway CPU each), enforce %.0f req/s (%.1f µs)\n' \
    "$r" "${offs[-1]}" "${off_cpu[-1]}" "${ons[-1]}" "${on_cpu[-1]}"
done
off=$(median "${offs[@]}"); on=$(median "${ons[@]}")
echo "  medians: off $off req/s ($(median "${off_cpu[@]}") µs), enforce $on req/s ($(median "${on_cpu[@]}") µs); enforce/off = $(python3 -c "print(round($on/$off, 3))")"
kill "$EST"; wait "$EST" 2>/dev/null || true
fi

if [ -z "$ONLY" ] || [ "$ONLY" = fanout ]; then
echo "fan-out 10: $EVENTS events per run, plain then routed, $ROUNDS interleaved rounds"
plain=(); routed=()
for r in $(seq "$ROUNDS"); do
  start_estafeta "plain$r"
  RATES=plain drive "$EVENTS" 10 0
  kill "$EST"; wait "$EST" 2>/dev/null || true
  start_estafeta "routed$r" "${ROUTED_CONF:-}"
  RATES=routed drive "$EVENTS" 10 0 --routed
  kill "$EST"; wait "$EST" 2>/dev/null || true
done
p=$(median "${plain[@]}"); q=$(median "${routed[@]}")
echo "  medians: plain $p deliveries/s, routed $q deliveries/s; routed/plain = $(python3 -c "print(round($q/$p, 3))")"
fi

if [ -z "$ONLY" ] || [ "$ONLY" = batch ]; then
echo "batches: $EVENTS events to one target, unbatched then batched by 100, $ROUNDS interleaved rounds"
single=(); batched=()
for r in $(seq "$ROUNDS"); do
  start_estafeta "single$r"
  RATES=single drive "$EVENTS" 1 0 --sink-delay-ms "${SINK_DELAY_MS:-0}"
  kill "$EST"; wait "$EST" 2>/dev/null || true
  start_estafeta "batched$r"
  RATES=batched drive "$EVENTS" 1 0 --batch 100 --sink-delay-ms "${SINK_DELAY_MS:-0}"
  kill "$EST"; wait "$EST" 2>/dev/null || true
done
p=$(median "${single[@]}"); q=$(median "${batched[@]}")
echo "  medians: unbatched $p events/s, batched $q events/s; batched/unbatched = $(python3 -c "print(round($q/$p, 3))")"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
