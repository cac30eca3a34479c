# Shared set-up of the bench scripts (sourced, not run): a scratch folder and the processes
# started into `pids`, both cleaned up on exit; a Redis of the bench's own on a free port (so the
# runs share nothing with anything else on the machine); fresh admin token and master key.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" & pids+=($!)
for _ in $(seq 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
REDIS="redis://127.0.0.1:$RPORT"

ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
MASTER_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')

# Starts $ESTAFETA (role all) with key prefix $1 and more TOML $2, on fresh ports; sets EST
# (its pid), PLAIN and ADMIN (its ports) and returns once it is ready.
start_estafeta() {
  PLAIN=$(free_port); ADMIN=$(free_port)
  cat > "$work/$1.toml" <<TOML
[edge]
plain_listen = "127.0.0.1:$PLAIN"
[admin]
listen = "127.0.0.1:$ADMIN"
token = "env:BENCH_ADMIN_TOKEN"
[redis]
url = "$REDIS"
prefix = "$1"
[security]
master_key = "env:BENCH_MASTER_KEY"
allow_private_targets = true
[log]
level = "warn"
${2:-}
TOML
  BENCH_ADMIN_TOKEN=$ADMIN_TOKEN BENCH_MASTER_KEY=$MASTER_KEY \
    "$ESTAFETA" serve --config "$work/$1.toml" 2>"$work/$1.log" &
  EST=$!; pids+=($EST)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PLAIN/readyz" >/dev/null && break; sleep 0.1; done
}

# Waits (at most 30 s) until the processes started here have gone quiet: under 5 % of a core
# over half a second. A gateway still draining its dispatch backlog or exporting spans after
# its round would otherwise take CPU from the next round's gateway.
settle() {
  local ticks; ticks() { local t=0 p; for p in "${pids[@]}"; do
    [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done; echo "$t"; }
  local hz; hz=$(getconf CLK_TCK)
  for _ in $(seq 60); do
    local a; a=$(ticks); sleep 0.5
    (( ( $(ticks) - a ) * 100 < hz * 5 / 2 )) && return 0
  done
  echo "  (not quiet after 30 s)" >&2
}
