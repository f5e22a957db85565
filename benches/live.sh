#!/usr/bin/env bash
# Live updates under load (docs/benchmarks.md, "Live updates"): CONNECTIONS
# WebSockets on one instance, all following one city; EVENTS new questions in
# it (each fanned out to every connection); the server's RSS with every
# connection open and at its peak, events lost, and the fan-out latency from
# publication (right after the commit) to arrival at the client.
#
# Release build; the instance, Postgres and Redis on core 0, the client
# (loadtest/src/bin/live.rs) on core 1.
#
#   benches/live.sh                                  # 10,000 connections, 30 events
#   CONNECTIONS=1000 EVENTS=10 benches/live.sh       # a quick look
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
CONNECTIONS=${CONNECTIONS:-10000}
EVENTS=${EVENTS:-30}
RATE=${RATE:-2}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=../scripts/lib/ensure-packages.sh
source scripts/lib/ensure-packages.sh
ensure_packages postgresql postgresql-contrib redis-server curl
cargo build --release --locked --bin refbackend --quiet
cargo build --release --locked -p loadtest --bin live --quiet
BIN=$TARGET/release/refbackend
PSQL="$(scripts/pg-node bindir)/psql"
# Every connection is a descriptor in the server and one in the client (separate
# processes, each with this limit).
NEED=$((CONNECTIONS + 2048)); HARD=$(ulimit -Hn)
[[ "$HARD" == unlimited || "$HARD" -ge "$NEED" ]] || { echo "need $NEED open files, the hard limit is $HARD" >&2; exit 1; }
ulimit -n "$NEED"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/refbackend-live.XXXXXX"); chmod 755 "$WORK"
PG_PORT=$(free_port); REDIS_PORT=$(free_port); API_PORT=$(free_port)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    scripts/pg-node stop "$WORK/pg" fast >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

taskset -c 0 scripts/pg-node init-primary "$WORK/pg" "$PG_PORT" >/dev/null
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE bench" >/dev/null
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null
export APP_ENV=test LOG_FORMAT=json RUST_LOG=warn
export JWT_SECRET="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(40))')"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export BIND_ADDR="127.0.0.1:$API_PORT" MEDIA_STORE_URL="file://$WORK/media"
export LIVE_MAX_CONNECTIONS=$((CONNECTIONS + 100))
export RATE_LIMIT_QUESTIONS_USER=100000/1d RATE_LIMIT_REGISTER_IP=100000/1m RATE_LIMIT_LOGIN_IP=100000/1m
"$BIN" migrate >/dev/null
"$BIN" seed >/dev/null
taskset -c 0 "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER=$!; PIDS+=("$SERVER")
for _ in $(seq 1 100); do curl -fsS "http://$BIND_ADDR/ready" >/dev/null 2>&1 && break; sleep 0.1; done

TOKEN=$(curl -fsS -X POST "http://$BIND_ADDR/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"load@example.com","password":"load testing all day","display_name":"Load"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
rss() { awk -v k="$1:" '$1 == k {print int($2 / 1024)}' "/proc/$SERVER/status"; }
echo "server RSS idle: $(rss VmRSS) MiB"

# The client prints "ready" once every connection is open.
taskset -c 1 "$TARGET/release/live" --url "http://$BIND_ADDR" --token "$TOKEN" \
    --connections "$CONNECTIONS" --events "$EVENTS" --rate "$RATE" >"$WORK/client.log" 2>&1 &
CLIENT=$!; PIDS+=("$CLIENT")
until grep -q '^ready' "$WORK/client.log" 2>/dev/null; do
    kill -0 "$CLIENT" 2>/dev/null || { cat "$WORK/client.log"; exit 1; }
    sleep 0.5
done
echo "server RSS with every connection open: $(rss VmRSS) MiB"
wait "$CLIENT" || true
grep -v '^ready' "$WORK/client.log"
echo "server RSS peak (VmHWM): $(rss VmHWM) MiB"
curl -fsS "http://$BIND_ADDR/metrics" | grep -E '^(ws_connections|ws_dropped_slow_total|ws_refused_total|live_fanout_seconds_(sum|count)|live_published_total)' || true
