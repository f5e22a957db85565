#!/usr/bin/env bash
# Stage 4 benchmarks (docs/benchmarks.md, "Sharding"), same method as
# benches/http.sh: release build; the server, every Postgres and Redis pinned
# to core 0; wrk on core 1; median of RUNS runs.
#
# 1. POST /api/v1/exercises/{id}/attempts (64 learners, 200 exercises) with
#    one database (no SHARD_URLS), with sharding on but every bucket on main
#    (the cost of the write fence), and with the buckets spread over 2 and 3
#    shards (three Postgres clusters on the same core: this measures the
#    routing's overhead, not added capacity, which needs shards on machines of
#    their own).
# 2. A bucket move of USERS users' data (10 attempts, 10 review cards and the
#    aggregates each) from main to a shard while wrk writes attempts, some of
#    them by the bucket's own users: the write pause and the whole move.
#
#   benches/shards.sh                       # ~6 minutes
#   DURATION=5 RUNS=1 USERS=2000 benches/shards.sh   # a quick look
#   ATTEMPTS_ONLY=1 DURATION=10 benches/shards.sh    # the first row alone (a
#                                           # regression check of POST /attempts)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
DURATION=${DURATION:-15}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
USERS=${USERS:-10000}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=../scripts/lib/ensure-packages.sh
source scripts/lib/ensure-packages.sh
# shellcheck source=../scripts/lib/bench-users.sh
source scripts/lib/bench-users.sh
ensure_packages wrk postgresql postgresql-contrib redis-server curl
cargo build --release --locked --bin refbackend --quiet
BIN=$TARGET/release/refbackend
PSQL="$(scripts/pg-node bindir)/psql"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/refbackend-shards.XXXXXX"); chmod 755 "$WORK"
MAIN_PORT=$(free_port); S1_PORT=$(free_port); S2_PORT=$(free_port)
REDIS_PORT=$(free_port); API_PORT=$(free_port)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    for node in main s1 s2; do scripts/pg-node stop "$WORK/$node" fast >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for node in "main $MAIN_PORT" "s1 $S1_PORT" "s2 $S2_PORT"; do
    read -r name port <<<"$node"
    taskset -c 0 scripts/pg-node init-primary "$WORK/$name" "$port" >/dev/null
    "$PSQL" -h 127.0.0.1 -p "$port" -U postgres -q -c "CREATE DATABASE bench" >/dev/null
done
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null
sql() { "$PSQL" -h 127.0.0.1 -p "$MAIN_PORT" -U postgres -d bench -v ON_ERROR_STOP=1 -At "$@"; }

export APP_ENV=test LOG_FORMAT=json RUST_LOG=warn
export DATABASE_URL="postgres://postgres@127.0.0.1:$MAIN_PORT/bench"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export JWT_SECRET="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(40))')"
export RATE_LIMIT_LOGIN_ACCOUNT=100000000/1m RATE_LIMIT_LOGIN_IP=100000000/1m RATE_LIMIT_REGISTER_IP=100000000/1m
export RATE_LIMIT_ATTEMPTS_USER=100000000/1m
SHARDS="shard-1=postgres://postgres@127.0.0.1:$S1_PORT/bench,shard-2=postgres://postgres@127.0.0.1:$S2_PORT/bench"
SHARD_URLS=$SHARDS "$BIN" migrate
SHARD_URLS=$SHARDS "$BIN" seed

wait_port() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
start() {
    BIND_ADDR="127.0.0.1:$API_PORT" taskset -c 0 "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$API_PORT" /health
}
stop() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

bench() {
    local label=$1 results=()
    for _ in $(seq 1 "$RUNS"); do
        results+=("$(WRK_TOKENS=$WORK/tokens WRK_ATTEMPTS=$WORK/attempts taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" \
            --latency -s benches/wrk/report.lua "http://127.0.0.1:$API_PORT" | awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}')")
    done
    local median
    median=$(printf '%s\n' "${results[@]}" | sort -n -k1 | sed -n "$(( (RUNS + 1) / 2 ))p")
    read -r rps p50 p95 p99 non2xx errors <<<"$median"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$CONNS" "$rps" "$p50" "$p95" "$p99" "$non2xx" "$errors"
}

# 64 learners, registered through the API (real password hashes).
start "$BIN" serve
register_learners 64 "http://127.0.0.1:$API_PORT" "$WORK/tokens"
stop
sql -F ' ' -c "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 200" >"$WORK/attempts"

# map N: spreads the buckets evenly over main and N-1 shards.
map() {
    sql -q -c "DELETE FROM shard_map" >/dev/null
    case $1 in
        2) sql -q -c "INSERT INTO shard_map (bucket, shard) SELECT b, 'shard-1' FROM generate_series(512, 1023) b" >/dev/null ;;
        3) sql -q -c "INSERT INTO shard_map (bucket, shard) SELECT b, CASE WHEN b < 683 THEN 'shard-1' ELSE 'shard-2' END FROM generate_series(342, 1023) b" >/dev/null ;;
    esac
}

echo "| what | conns | req/s | p50 ms | p95 ms | p99 ms | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|---|---|"
map 1
start "$BIN" serve
bench "attempts, one database (no SHARD_URLS)"
stop
if [[ -n "${ATTEMPTS_ONLY:-}" ]]; then exit 0; fi
start env SHARD_URLS="$SHARDS" "$BIN" serve
bench "attempts, sharding on, every bucket on main (write fence only)"
stop
map 2
start env SHARD_URLS="$SHARDS" "$BIN" serve
bench "attempts, buckets over 2 shards (main + shard-1)"
stop
map 3
start env SHARD_URLS="$SHARDS" "$BIN" serve
bench "attempts, buckets over 3 shards (main + shard-1 + shard-2)"
stop
# The first row again: how much the machine drifted during the runs (tables
# grow, autovacuum, neighbours), to read the differences above against.
map 1
start "$BIN" serve
bench "attempts, one database again (drift check)"
stop

# The move: USERS users in one bucket on main, with data, sharing the
# learners' password (so a few can sign in and write during the move).
map 1
BUCKET=7
HASH=$(sql -c "SELECT password_hash FROM users WHERE email = 'learner1@example.com'")
echo
echo "Generating $USERS users in bucket $BUCKET with their data..." >&2
sql -q -c "
CREATE TEMP TABLE picked AS
  SELECT id FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $USERS * 1300)) s
   WHERE shard_bucket(id) = $BUCKET LIMIT $USERS;
INSERT INTO users (id, email, password_hash, display_name)
  SELECT id, id || '@bucket.example.com', '$HASH', 'Mover' FROM picked;
INSERT INTO user_progress (user_id, attempts, correct, xp) SELECT id, 10, 10, 100 FROM picked;
INSERT INTO user_skill_stats (user_id, dimension, key, attempts, correct)
  SELECT id, 'tense', 'present_subjunctive', 10, 10 FROM picked;
INSERT INTO user_weekly_xp (user_id, week, xp)
  SELECT id, date_trunc('week', now() AT TIME ZONE 'UTC')::date, 100 FROM picked;
INSERT INTO review_cards (user_id, exercise_id, due, stability, difficulty, elapsed_days,
                          scheduled_days, reps, lapses, state, last_review)
  SELECT p.id, e.id, now() + interval '1 day', 2.5, 5.0, 0, 1, 1, 0, 2, now()
    FROM picked p CROSS JOIN (SELECT id FROM exercises ORDER BY id LIMIT 10) e;
INSERT INTO attempts (user_id, created_at, id, exercise_id, answer, outcome, counts_as_correct, xp)
  SELECT p.id, now() - (g || ' minutes')::interval, gen_random_uuid(), e.id, 'hable', 'correct', true, 10
    FROM picked p CROSS JOIN generate_series(1, 10) g
    JOIN LATERAL (SELECT id FROM exercises ORDER BY id OFFSET g LIMIT 1) e ON true;
ANALYZE;"
start env SHARD_URLS="$SHARDS" "$BIN" serve
# 16 of the bucket's users write alongside the 64 learners.
for email in $(sql -c "SELECT email FROM users WHERE shard_bucket(id) = $BUCKET AND display_name = 'Mover' LIMIT 16"); do
    curl -fsS -X POST "http://127.0.0.1:$API_PORT/api/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$email\",\"password\":\"benchmark password\"}" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' >>"$WORK/tokens"
done
ROWS=$(sql -c "SELECT (SELECT count(*) FROM attempts a JOIN users u ON u.id = a.user_id WHERE shard_bucket(u.id) = $BUCKET)
              + (SELECT count(*) FROM review_cards c JOIN users u ON u.id = c.user_id WHERE shard_bucket(u.id) = $BUCKET)")
MOVE_SECONDS=$((DURATION > 20 ? DURATION : 20))
WRK_TOKENS=$WORK/tokens WRK_ATTEMPTS=$WORK/attempts taskset -c 1 wrk -t1 -c"$CONNS" -d"${MOVE_SECONDS}s" \
    --latency -s benches/wrk/report.lua "http://127.0.0.1:$API_PORT" >"$WORK/move-load.out" &
LOAD=$!
sleep 2
RUST_LOG=off SHARD_URLS=$SHARDS taskset -c 0 "$BIN" shards move --bucket "$BUCKET" --to shard-1 --grace 2s >"$WORK/move.json"
wait "$LOAD"
stop
read -r mrps mp50 mp95 mp99 mnon merr < <(awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' "$WORK/move-load.out")
echo "Bucket move of $USERS users ($ROWS attempt and card rows) under load:"
python3 - "$WORK/move.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  users {r['users']}, rows copied {r['rows_copied']}, catch-up rounds {r['catch_up_rounds']}, "
      f"users in the final round {r['final_users']}")
print(f"  bucket writes blocked (lock held) {r['lock_held_ms']} ms; lock to map flip {r['write_pause_ms']} ms; "
      f"whole move {r['total_ms'] / 1000:.1f} s (incl. the grace period)")
EOF
echo "  load meanwhile: $mrps attempts/s, p50 $mp50 ms, p99 $mp99 ms, non-2xx $mnon (503s while the bucket flipped), socket errors $merr"
