#!/usr/bin/env bash
# Ingest load bench: oha against four servers with identical settings, in one run.
#   (a) bare hyper: reads the body, answers 202            (cargo example bare_hyper)
#   (b) naive: one fred XADD per request, then 202          (cargo example naive_fred)
#   (c) Estafeta, cleartext listener
#   (d) Estafeta, TLS listener (HTTP/1.1)
#   (e) Estafeta, monitor heartbeats (POST /v1/monitors/{token}/heartbeat, cleartext)
#   (f) Estafeta `--role edge` (no dispatcher), cleartext, a prefix of its own
# Prints requests/s, p50 and p99 (medians over ROUNDS interleaved rounds), the ratios to bare
# hyper and to the naive server, Redis's and the gateway's CPU per request (`INFO cpu` and
# /proc deltas over each run and 1 s after it, so the dispatcher's reading of what was just
# written counts too), and Estafeta's peak RSS.
#
# Estafeta (c, d, e) runs as users run it: `serve` with the default role `all` (listeners and
# dispatcher; the tenant has no target, so the dispatcher reads, finds nothing to deliver and
# acknowledges).
#
# Usage: benches/load.sh            (env: DURATION=10s CONNECTIONS=64 ROUNDS=3;
#                                    ESTAFETA_BIN=path of another build, to compare)
# Needs: oha (cargo install oha --locked), redis-server, python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-3}
ESTAFETA=${ESTAFETA_BIN:-./target/release/estafeta}
BODY='{"type":"order.paid","data":{"order_id":"ord_8Jq2xYd41Lk","customer":"cus_Q81nd0aP","amount":129900,"currency":"BRL","items":3,"paid_at":"2026-11-22T18:00:00Z","note":"bench payload"}}'

command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
cargo build --release --quiet --bin estafeta --example bare_hyper --example naive_fred

. benches/common.sh

A=$(free_port); B=$(free_port); C=$(free_port); D=$(free_port); ADMIN=$(free_port)
./target/release/examples/bare_hyper "127.0.0.1:$A" & BARE=$!; pids+=($BARE)
./target/release/examples/naive_fred "127.0.0.1:$B" "$REDIS" & NAIVE=$!; pids+=($NAIVE)

mkdir -p "$work/certs"
"$ESTAFETA" gen-cert --out "$work/certs" --host localhost >/dev/null
cat > "$work/estafeta.toml" <<EOF
[edge]
listen = "127.0.0.1:$D"
plain_listen = "127.0.0.1:$C"
[admin]
listen = "127.0.0.1:$ADMIN"
token = "env:BENCH_ADMIN_TOKEN"
[tls]
cert = "$work/certs/dev.crt"
key = "$work/certs/dev.key"
[redis]
url = "$REDIS"
prefix = "bench"
[security]
master_key = "env:BENCH_MASTER_KEY"
[log]
level = "warn"
EOF
BENCH_ADMIN_TOKEN=$ADMIN_TOKEN BENCH_MASTER_KEY=$MASTER_KEY \
  "$ESTAFETA" serve --config "$work/estafeta.toml" 2>"$work/estafeta.log" &
EST=$!; pids+=($EST)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$C/healthz" >/dev/null && break; sleep 0.1; done

F=$(free_port); FADMIN=$(free_port)
sed -e "s/127.0.0.1:$C/127.0.0.1:$F/; s/127.0.0.1:$ADMIN/127.0.0.1:$FADMIN/; s/^prefix = .*/prefix = \"bench_edge\"/" \
  -e "/^listen = \"127.0.0.1:$D\"/d; /^\[tls\]/,/^key/d" "$work/estafeta.toml" > "$work/edge.toml"
BENCH_ADMIN_TOKEN=$ADMIN_TOKEN BENCH_MASTER_KEY=$MASTER_KEY \
  "$ESTAFETA" serve --role edge --config "$work/edge.toml" 2>"$work/edge.log" &
EDGE=$!; pids+=($EDGE)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$F/healthz" >/dev/null && break; sleep 0.1; done
for p in $A $B; do for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done; done

read -r TENANT TOKEN < <(curl -sf -X POST "http://127.0.0.1:$ADMIN/admin/tenants" \
  -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"name":"bench"}' \
  | python3 -c 'import json,sys; t=json.load(sys.stdin); print(t["id"], t["token"])')
EDGE_TOKEN=$(curl -sf -X POST "http://127.0.0.1:$FADMIN/admin/tenants" \
  -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"name":"bench"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
MONITOR=$(curl -sf -X POST "http://127.0.0.1:$ADMIN/admin/tenants/$TENANT/monitors" \
  -H "Authorization: Bearer $ADMIN_TOKEN" -d '{"name":"bench"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

redis_cpu() { redis-cli -p "$RPORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.6f", s}'; }
proc_cpu() { # seconds of CPU of pid $1 (utime + stime), or 0 when it is not a process of ours
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.6f", ($14 + $15) / hz}' "/proc/$1/stat"
}
run() { # name url pid [extra oha args...]
  local name=$1 url=$2 pid=$3; shift 3
  local r0 p0; r0=$(redis_cpu); p0=$(proc_cpu "$pid")
  oha -z "$DURATION" -c "$CONNECTIONS" -m POST -T application/json -d "$BODY" \
    --no-tui --output-format json "$@" "$url" > "$work/$name.$round.json"
  sleep 1
  echo "$(redis_cpu) $r0 $(proc_cpu "$pid") $p0" > "$work/$name.$round.cpu"
  # Keep Redis memory flat between runs.
  redis-cli -p "$RPORT" --scan --pattern '*events' | xargs -r redis-cli -p "$RPORT" del >/dev/null
}

echo "load: oha -z $DURATION -c $CONNECTIONS, POST ${#BODY}-byte JSON, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  run a "http://127.0.0.1:$A/v1/events/order.paid" "$BARE"
  run b "http://127.0.0.1:$B/v1/events/order.paid" "$NAIVE"
  run c "http://127.0.0.1:$C/v1/events/order.paid" "$EST" -H "Authorization: Bearer $TOKEN"
  run d "https://localhost:$D/v1/events/order.paid" "$EST" -H "Authorization: Bearer $TOKEN" --insecure
  run e "http://127.0.0.1:$C/v1/monitors/$MONITOR/heartbeat" "$EST"
  run f "http://127.0.0.1:$F/v1/events/order.paid" "$EDGE" -H "Authorization: Bearer $EDGE_TOKEN"
  echo "  round $round done"
done
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$EST/status")

python3 - "$work" "$ROUNDS" "$RSS_KB" <<'PY'
import json, statistics, sys
work, rounds, rss_kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = {"a": "bare hyper", "b": "naive fred XADD", "c": "estafeta plain", "d": "estafeta TLS",
         "e": "heartbeats", "f": "estafeta edge"}
res = {}
for k in names:
    runs = [json.load(open(f"{work}/{k}.{r}.json")) for r in range(1, rounds + 1)]
    def ok(run):
        codes = run.get("statusCodeDistribution", {})
        return sum(v for c, v in codes.items() if c in ("200", "202")), sum(codes.values())
    good = [ok(r) for r in runs]
    res[k] = {
        "rps": statistics.median(r["summary"]["requestsPerSec"] for r in runs),
        "p50": statistics.median(r["latencyPercentiles"]["p50"] for r in runs) * 1000,
        "p99": statistics.median(r["latencyPercentiles"]["p99"] for r in runs) * 1000,
        "non202": sum(t - g for g, t in good),
    }
    # CPU per successful request, microseconds: Redis's, and the server process's.
    per = []
    for r, run in zip(range(1, rounds + 1), runs):
        r1, r0, p1, p0 = (float(x) for x in open(f"{work}/{k}.{r}.cpu").read().split())
        n = max(ok(run)[0], 1)
        per.append(((r1 - r0) * 1e6 / n, (p1 - p0) * 1e6 / n))
    res[k]["redis_us"] = statistics.median(x for x, _ in per)
    res[k]["proc_us"] = statistics.median(y for _, y in per)
print(f"{'server':<18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'redis us':>10}{'proc us':>9}")
for k, name in names.items():
    r = res[k]
    print(f"{k}) {name:<15}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['non202']:>9}"
          f"{r['redis_us']:>10.2f}{r['proc_us']:>9.1f}")
a, b, c, d, e, f = (res[k]["rps"] for k in "abcdef")
print(f"ratios: role all c/a = {c/a:.2f} (goal >= 0.50)   edge f/a = {f/a:.2f} (goal >= 0.60)"
      f"   f/b = {f/b:.2f} (goal >= 1.2)   TLS d/a = {d/a:.2f} (goal >= 0.45)")
print(f"heartbeats vs ingest: e/c = {e/c:.2f} (goal >= 0.90)")
print(f"redis CPU per event: ingest (edge) {res['f']['redis_us']:.2f} us (goal <= 1.5), "
      f"role all with no target {res['c']['redis_us']:.2f} us, so dispatching costs "
      f"{res['c']['redis_us'] - res['f']['redis_us']:.2f} us (goal <= 1.5)")
print(f"estafeta peak RSS: {rss_kb/1024:.1f} MB (goal < 150 MB)")
PY
