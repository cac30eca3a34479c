#!/usr/bin/env bash
# Traces bench: what exporting spans costs ingest, as users run it (`serve`, role all, one
# target-less tenant: the dispatcher reads and acknowledges). Three gateways on one Redis:
#   off   no [telemetry]
#   r1    [telemetry] sample_ratio = 1.0   (every request: ingest + append + expand spans)
#   r001  [telemetry] sample_ratio = 0.01
# exporting OTLP/HTTP to a collector stand-in (the bare hyper example: reads the body,
# answers 202). oha -c CONNECTIONS for DURATION against each, ROUNDS interleaved rounds;
# prints requests/s (and the gateway's CPU per request) per round, the medians and each ratio to `off`. Each round runs the three
# in another order, and each run starts once every process is quiet again (`settle`): the
# gateway of the previous run may still be exporting spans or draining its stream.
#
# Each round's ratios are taken within the round (the three runs back to back), and their
# median is printed beside the ratio of the medians: on a shared machine the rate drifts
# between rounds more than between the runs of one round. With RATE=n oha offers n requests/s
# instead of as many as it can: then the gateway's CPU per request, not the rate, is the
# figure, and it does not depend on what oha's own threads take from the gateway.
#
# Usage: benches/traces.sh     (env: DURATION=8s CONNECTIONS=64 ROUNDS=3 RATE=)
# Needs: oha (cargo install oha --locked), redis-server, python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-}
ESTAFETA=${ESTAFETA_BIN:-./target/release/estafeta}
BODY='{"type":"order.paid","data":{"order_id":"ord_8Jq2xYd41Lk","customer":"cus_Q81nd0aP","amount":129900,"currency":"BRL","items":3,"paid_at":"2026-11-22T18:00:00Z","note":"bench payload"}}'

command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
cargo build --release --quiet --bin estafeta --example bare_hyper

. benches/common.sh

COLLECTOR=$(free_port)
./target/release/examples/bare_hyper "127.0.0.1:$COLLECTOR" & pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$COLLECTOR/" && break; sleep 0.1; done

declare -A port token pid
for mode in off r1 r001; do
  case $mode in
    off) extra="" ;;
    r1) extra=$'[telemetry]\notlp_endpoint = "http://127.0.0.1:'$COLLECTOR$'/v1/traces"\notlp_protocol = "http"\nsample_ratio = 1.0' ;;
    r001) extra=$'[telemetry]\notlp_endpoint = "http://127.0.0.1:'$COLLECTOR$'/v1/traces"\notlp_protocol = "http"\nsample_ratio = 0.01' ;;
  esac
  start_estafeta "traces_$mode" "$extra"
  port[$mode]=$PLAIN; pid[$mode]=$EST
  token[$mode]=$(curl -sf -X POST "http://127.0.0.1:$ADMIN/admin/tenants" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"name":"bench"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Prints requests/s, the success rate and the gateway's CPU per request in µs (its own
# threads, the exporter's included; less sensitive to what else the machine does than the
# rate, though a contended core makes every microsecond longer).
run() {
  local t0; t0=$(cpu_ticks "${pid[$1]}")
  oha -z "$DURATION" -c "$CONNECTIONS" ${RATE:+-q "$RATE"} --no-tui --output-format json -m POST \
    -H "Authorization: Bearer ${token[$1]}" -H 'Content-Type: application/json' -d "$BODY" \
    "http://127.0.0.1:${port[$1]}/v1/events/order.paid" > "$work/oha.json"
  settle
  python3 - "$work/oha.json" "$(( $(cpu_ticks "${pid[$1]}") - t0 ))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
n = s["requestsPerSec"] * s["total"]
print(round(s["requestsPerSec"]), round(s["successRate"], 4), round(int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / n, 1))
PY
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A results cpu
orders=("off r1 r001" "r1 r001 off" "r001 off r1")
for round in $(seq "$ROUNDS"); do
  for mode in ${orders[$(( (round - 1) % 3 ))]}; do
    settle
    read -r rps ok us < <(run "$mode")
    results[$mode]+="$rps "
    cpu[$mode]+="$us "
    echo "round $round  $mode  $rps req/s  success $ok  gateway CPU $us us/request"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "${results[off]}" "${results[r1]}" "${results[r001]}" "${cpu[off]}" "${cpu[r1]}" "${cpu[r001]}" <<'PY'
import statistics, sys
rates = [[int(x) for x in a.split()] for a in sys.argv[1:4]]
cpus = [[float(x) for x in a.split()] for a in sys.argv[4:7]]
names = ("off", "ratio 1.0", "ratio 0.01")
m = [statistics.median(v) for v in rates]
c = [statistics.median(v) for v in cpus]
for k, v, u in zip(names, m, c):
    print(f"median {k:10s} {v:>9.0f} req/s  {v / m[0]:.3f} x off   CPU {u:.1f} us/request  {u / c[0]:.3f} x off")
# The same ratios taken round by round, then their median.
for i, k in ((1, "ratio 1.0"), (2, "ratio 0.01")):
    r = [a / b for a, b in zip(rates[i], rates[0])]
    u = [a / b for a, b in zip(cpus[i], cpus[0])]
    print(f"per round {k:10s} rate " + " / ".join(f"{x:.3f}" for x in r)
          + f" (median {statistics.median(r):.3f} x off); CPU " + " / ".join(f"{x:.3f}" for x in u)
          + f" (median {statistics.median(u):.3f} x off)")
PY
