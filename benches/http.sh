#!/usr/bin/env bash
# HTTP benchmarks of the release build, compared in the same run against the two
# reference programs (benches/reference/), as DESIGN.md prescribes: the server,
# Postgres and Redis pinned to core 0, wrk on core 1, median of 3 runs.
# Results go to stdout as markdown rows (copy them into docs/benchmarks.md).
#
#   benches/http.sh              # everything (~15 minutes)
#   DURATION=5 RUNS=1 benches/http.sh   # a quick look
#   ACCEPT_ENCODING=gzip CACHED_ONLY=1 benches/http.sh
#       # the references and the cached (L1 hit) GETs only, every request
#       # sent with that Accept-Encoding (~4 minutes), plus the bare-axum
#       # reference returning a body as big as a page of exercises on the wire
#   UNCACHED_ONLY=1 benches/http.sh
#       # the references, /health and the uncached reads (CACHE_ENABLED=false)
#       # only: the ratio to bare axum + sqlx (~3 minutes)
#   BENCH_LOG=info ACCEPT_ENCODING=gzip CACHED_ONLY=1 benches/http.sh
#       # with the production log level: one access-log line per request
#   WRITES_ONLY=1 benches/http.sh
#       # POST /attempts and PUT /vote spread over 64 users only (~3 minutes)
#   COMPARE_URL=http://host:port/path ACCEPT_ENCODING=gzip CACHED_ONLY=1 benches/http.sh
#       # also loads COMPARE_URL (e.g. the exercise list of the app you are
#       # migrating from) with the same wrk settings, side by side with ours;
#       # pin that server to core 0 yourself (taskset -c 0) for a fair ratio
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
DURATION=${DURATION:-15}
RUNS=${RUNS:-3}
CONNS=${CONNS:-64}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=../scripts/lib/ensure-packages.sh
source scripts/lib/ensure-packages.sh
# shellcheck source=../scripts/lib/bench-users.sh
source scripts/lib/bench-users.sh
ensure_packages wrk postgresql postgresql-contrib redis-server curl
cargo build --release --locked --bin refbackend --examples --quiet
BIN=$TARGET/release/refbackend

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/refbackend-bench.XXXXXX"); chmod 755 "$WORK"
PG_PORT=$(free_port); REDIS_PORT=$(free_port); API_PORT=$(free_port); REF_PORT=$(free_port)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    scripts/pg-node stop "$WORK/primary" fast >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Dependencies on core 0, like the server.
taskset -c 0 scripts/pg-node init-primary "$WORK/primary" "$PG_PORT" >/dev/null
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$WORK" --logfile "$WORK/redis.log" >/dev/null
"$(scripts/pg-node bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE bench" >/dev/null

# BENCH_LOG=info measures what production's access log costs (one JSON line
# per request); the default keeps logging out of the comparison.
export APP_ENV=test LOG_FORMAT=json RUST_LOG="${BENCH_LOG:-warn}"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export JWT_SECRET="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(40))')"
# The login flood would otherwise be (correctly) rate limited after 10 tries.
export RATE_LIMIT_LOGIN_ACCOUNT=100000000/1m RATE_LIMIT_LOGIN_IP=100000000/1m RATE_LIMIT_REGISTER_IP=100000000/1m
export RATE_LIMIT_QUESTIONS_USER=100000000/1d RATE_LIMIT_VOTES_USER=100000000/1m RATE_LIMIT_ATTEMPTS_USER=100000000/1m RATE_LIMIT_SIMILAR_IP=100000000/1m
"$BIN" migrate && "$BIN" seed

wait_port() { for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$1$2" 2>/dev/null && return 0; sleep 0.1; done; return 1; }

# start NAME PORT PATH CMD...: runs CMD pinned to core 0 in the background.
start() {
    local port=$2 path=$3; shift 3
    BIND_ADDR="127.0.0.1:$port" taskset -c 0 "$@" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
    wait_port "$port" "$path"
}
stop() { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
rss_mb() { awk -v k="$2:" '$1==k {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# bench LABEL URL CONNS: median-of-RUNS row.
bench() {
    local label=$1 url=$2 conns=$3 results=()
    for _ in $(seq 1 "$RUNS"); do
        results+=("$(taskset -c 1 wrk -t1 -c"$conns" -d"${DURATION}s" --latency \
            ${ACCEPT_ENCODING:+-H "Accept-Encoding: $ACCEPT_ENCODING"} \
            -s benches/wrk/report.lua "$url" | awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}')")
    done
    local median
    median=$(printf '%s\n' "${results[@]}" | sort -n -k1 | sed -n "$(( (RUNS + 1) / 2 ))p")
    read -r rps p50 p95 p99 non2xx errors <<<"$median"
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$conns" "$rps" "$p50" "$p95" "$p99" "$non2xx" "$errors"
    LAST_RPS=$rps
}

echo "| what | conns | req/s | p50 ms | p95 ms | p99 ms | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|---|---|"

# The references (writes are compared with earlier builds, not with them).
if [[ -z "${WRITES_ONLY:-}" ]]; then
    start ref "$REF_PORT" / "$TARGET/release/examples/bare_axum"
    bench "reference: bare axum, 200-byte JSON" "http://127.0.0.1:$REF_PORT/" "$CONNS"; BARE=$LAST_RPS
    stop

    start ref "$REF_PORT" /cities/1 env POOL_SIZE=20 "$TARGET/release/examples/bare_axum_sqlx"
    bench "reference: bare axum + sqlx, PK select" "http://127.0.0.1:$REF_PORT/cities/1" "$CONNS"; BARE_SQL=$LAST_RPS
    stop
fi

# wire_bytes URL: the size of URL's body as sent (with ACCEPT_ENCODING).
wire_bytes() {
    curl -fsS -o /dev/null -w '%{size_download}' ${ACCEPT_ENCODING:+-H "Accept-Encoding: $ACCEPT_ENCODING"} "$1"
}
ratio() { python3 -c "print(f'{$1/$2:.0%}')"; }

# ask_questions N: one resident asks N questions in city 1; prints the last id.
ask_questions() {
    local token question=""
    token=$(curl -fsS -X POST "http://127.0.0.1:$API_PORT/api/v1/auth/register" -H 'content-type: application/json' \
        -d '{"email":"resident@example.com","password":"benchmark password","display_name":"Resident"}' \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    for i in $(seq 1 "$1"); do
        question=$(curl -fsS -X POST "http://127.0.0.1:$API_PORT/api/v1/cities/1/questions" -H 'content-type: application/json' \
            -H "authorization: Bearer $token" -d "{\"body\": \"Benchmark question number $i about the city budget?\"}" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["question"]["id"])')
    done
    printf '%s %s\n' "$token" "$question"
}

# write_rows: writes spread like real traffic: 64 learners/residents, 200
# exercises, the questions of city 1. Each attempt is one transaction (attempt
# row, review card, progress and skill aggregates) plus a consistency token and
# a leaderboard update in Redis; each vote flips one (voter, question) pair.
write_rows() {
    register_learners 64 "http://127.0.0.1:$API_PORT" "$WORK/tokens"
    "$(scripts/pg-node bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -At -F ' ' \
        -c "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 200" >"$WORK/attempts"
    "$(scripts/pg-node bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -At \
        -c "SELECT id FROM questions WHERE city_id = 1" >"$WORK/questions"
    WRK_TOKENS=$WORK/tokens WRK_ATTEMPTS=$WORK/attempts bench "refbackend POST /api/v1/exercises/{id}/attempts (64 learners, 200 exercises)" \
        "http://127.0.0.1:$API_PORT" "$CONNS"; API_ATTEMPTS=$LAST_RPS
    WRK_TOKENS=$WORK/tokens WRK_QUESTIONS=$WORK/questions bench "refbackend PUT /api/v1/questions/{id}/vote (64 voters, 60 questions)" \
        "http://127.0.0.1:$API_PORT" "$CONNS"; API_VOTES_SPREAD=$LAST_RPS
}

if [[ -n "${WRITES_ONLY:-}" ]]; then
    start api "$API_PORT" /health "$BIN" serve
    ask_questions 60 >/dev/null
    write_rows
    stop
    exit 0
fi

if [[ -n "${CACHED_ONLY:-}" ]]; then
    start api "$API_PORT" /health "$BIN" serve
    ask_questions 20 >/dev/null
    bench "refbackend GET /api/v1/cities (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/cities" "$CONNS"; API_LIST_L1=$LAST_RPS
    bench "refbackend GET /api/v1/exercises (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/exercises" "$CONNS"; API_EX_L1=$LAST_RPS
    bench "refbackend GET /api/v1/cities/1/questions?sort=top (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/cities/1/questions?sort=top" "$CONNS"; API_Q_L1=$LAST_RPS
    bench "refbackend GET /api/v1/verbs/tener/conjugations (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/verbs/tener/conjugations" "$CONNS"; API_CONJ=$LAST_RPS
    EX_BYTES=$(wire_bytes "http://127.0.0.1:$API_PORT/api/v1/exercises")
    stop
    # The same stack-free server, returning as many bytes as a page of exercises
    # puts on the wire: what is left of the gap to it is the stack's.
    start ref "$REF_PORT" /sized env SIZED_BYTES="$EX_BYTES" "$TARGET/release/examples/bare_axum"
    bench "reference: bare axum, $EX_BYTES-byte body (a page of exercises on the wire)" "http://127.0.0.1:$REF_PORT/sized" "$CONNS"; BARE_SIZED=$LAST_RPS
    stop
    if [[ -n "${COMPARE_URL:-}" ]]; then
        bench "compared: $COMPARE_URL" "$COMPARE_URL" "$CONNS"; COMPARED=$LAST_RPS
    fi
    echo
    echo "Cached GETs / bare axum: cities $(ratio "$API_LIST_L1" "$BARE"), exercises $(ratio "$API_EX_L1" "$BARE"), a city's questions $(ratio "$API_Q_L1" "$BARE"), conjugations $(ratio "$API_CONJ" "$BARE")"
    echo "Exercises / bare axum with the same body size: $(ratio "$API_EX_L1" "$BARE_SIZED")"
    if [[ -n "${COMPARE_URL:-}" ]]; then
        echo "Exercises: refbackend / compared server: $(ratio "$API_EX_L1" "$COMPARED") (${API_EX_L1} vs ${COMPARED} req/s)"
    fi
    exit 0
fi

# Uncached: every request reaches Postgres (CACHE_ENABLED=false).
start api "$API_PORT" /health env CACHE_ENABLED=false "$BIN" serve
API_PID=$SERVER_PID
IDLE_RSS=$(rss_mb "$API_PID" VmRSS)
bench "refbackend GET /health" "http://127.0.0.1:$API_PORT/health" "$CONNS"; API_HEALTH=$LAST_RPS
bench "refbackend GET /api/v1/cities/{id} (one PK select, uncached)" "http://127.0.0.1:$API_PORT/api/v1/cities/1" "$CONNS"; API_SQL=$LAST_RPS
bench "refbackend GET /api/v1/cities (page of 20, uncached)" "http://127.0.0.1:$API_PORT/api/v1/cities" "$CONNS"; API_LIST=$LAST_RPS
if [[ -n "${UNCACHED_ONLY:-}" ]]; then
    stop
    echo
    echo "GET /health / bare axum: $(ratio "$API_HEALTH" "$BARE"); GET /api/v1/cities/{id} uncached / bare axum + sqlx: $(ratio "$API_SQL" "$BARE_SQL")"
    exit 0
fi
bench "refbackend GET /api/v1/cities (page of 20, uncached)" "http://127.0.0.1:$API_PORT/api/v1/cities" 256
bench "refbackend GET /api/v1/cities (page of 20, uncached)" "http://127.0.0.1:$API_PORT/api/v1/cities" 1024
bench "refbackend GET /api/v1/exercises (page of 20, uncached)" "http://127.0.0.1:$API_PORT/api/v1/exercises" "$CONNS"; API_EX_MISS=$LAST_RPS

# CivicQ: a resident, 60 questions in city 1, then votes and list reads.
read -r TOKEN QUESTION < <(ask_questions 60)
bench "refbackend GET /api/v1/cities/1/questions?sort=top (uncached)" "http://127.0.0.1:$API_PORT/api/v1/cities/1/questions?sort=top" "$CONNS"; API_Q_MISS=$LAST_RPS
WRK_VOTE_TOKEN=$TOKEN bench "refbackend PUT /api/v1/questions/{id}/vote (one question, one voter)" "http://127.0.0.1:$API_PORT/api/v1/questions/$QUESTION/vote" "$CONNS"; API_VOTES=$LAST_RPS

write_rows
# Progress right after those attempts: per-user, uncacheable, two queries.
WRK_TOKENS=$WORK/tokens bench "refbackend GET /api/v1/users/me/progress (64 learners)" \
    "http://127.0.0.1:$API_PORT/api/v1/users/me/progress" "$CONNS"
stop

# L2: an L1 that expires after 1 ms, so (nearly) every request is a Redis hit.
start api "$API_PORT" /health env CACHE_TTL_CITIES=1ms,10m CACHE_TTL_EXERCISES=1ms,10m CACHE_TTL_QUESTIONS=1ms,10m "$BIN" serve
bench "refbackend GET /api/v1/cities/1/questions?sort=top (L2 Redis hit)" "http://127.0.0.1:$API_PORT/api/v1/cities/1/questions?sort=top" "$CONNS"; API_Q_L2=$LAST_RPS
bench "refbackend GET /api/v1/cities (L2 Redis hit)" "http://127.0.0.1:$API_PORT/api/v1/cities" "$CONNS"; API_LIST_L2=$LAST_RPS
bench "refbackend GET /api/v1/exercises (L2 Redis hit)" "http://127.0.0.1:$API_PORT/api/v1/exercises" "$CONNS"; API_EX_L2=$LAST_RPS
stop

# Production defaults: L1 hits.
start api "$API_PORT" /health "$BIN" serve
API_PID=$SERVER_PID
bench "refbackend GET /api/v1/cities (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/cities" "$CONNS"; API_LIST_L1=$LAST_RPS
bench "refbackend GET /api/v1/exercises (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/exercises" "$CONNS"; API_EX_L1=$LAST_RPS
bench "refbackend GET /api/v1/cities/1/questions?sort=top (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/cities/1/questions?sort=top" "$CONNS"; API_Q_L1=$LAST_RPS
bench "refbackend GET /api/v1/verbs/tener/conjugations (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/verbs/tener/conjugations" "$CONNS"; API_CONJ=$LAST_RPS
bench "refbackend GET /api/v1/cities (L1 hit)" "http://127.0.0.1:$API_PORT/api/v1/cities" 1024

# Login flood: logins/s, and /health latency while it runs (both generators on core 1).
curl -fsS -o /dev/null -X POST "http://127.0.0.1:$API_PORT/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"benchmark password","display_name":"Bench"}'
LOGIN='{"email":"bench@example.com","password":"benchmark password"}'
WRK_BODY=$LOGIN taskset -c 1 wrk -t1 -c32 -d"${DURATION}s" -s benches/wrk/report.lua \
    "http://127.0.0.1:$API_PORT/api/v1/auth/login" >"$WORK/login.out" &
FLOOD=$!
sleep 1
taskset -c 1 wrk -t1 -c8 -d"$((DURATION > 3 ? DURATION - 2 : 1))s" -s benches/wrk/report.lua "http://127.0.0.1:$API_PORT/health" >"$WORK/health.out"
wait "$FLOOD"
read -r lrps lp50 lp95 lp99 lnon lerr < <(awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' "$WORK/login.out")
read -r hrps hp50 hp95 hp99 hnon herr < <(awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7}' "$WORK/health.out")
printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "login flood: POST /api/v1/auth/login" 32 "$lrps" "$lp50" "$lp95" "$lp99" "$lnon" "$lerr"
printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "… meanwhile GET /health" 8 "$hrps" "$hp50" "$hp95" "$hp99" "$hnon" "$herr"
PEAK_RSS=$(rss_mb "$API_PID" VmHWM)
stop

echo
pct() { python3 -c "print(f'{$1 / $2 * 100:.0f} %')"; }
echo "Ratios:"
echo "  GET /health (full middleware stack, no I/O) vs bare axum: $(pct "$API_HEALTH" "$BARE")"
echo "  GET /api/v1/cities/{id} vs bare axum + sqlx: $(pct "$API_SQL" "$BARE_SQL")"
echo "  GET /api/v1/cities (20 rows, uncached) vs bare axum: $(pct "$API_LIST" "$BARE")"
echo "  GET /api/v1/cities: L1 hit $(pct "$API_LIST_L1" "$BARE"), L2 hit $(pct "$API_LIST_L2" "$BARE") of bare axum"
echo "  GET /api/v1/exercises: L1 hit $(pct "$API_EX_L1" "$BARE"), L2 hit $(pct "$API_EX_L2" "$BARE"), uncached $(pct "$API_EX_MISS" "$BARE") of bare axum"
echo "  GET /api/v1/verbs/tener/conjugations (L1 hit) vs bare axum: $(pct "$API_CONJ" "$BARE")"
echo "  GET /api/v1/cities/1/questions: L1 hit $(pct "$API_Q_L1" "$BARE"), L2 hit $(pct "$API_Q_L2" "$BARE"), uncached $(pct "$API_Q_MISS" "$BARE") of bare axum"
echo "  votes: $API_VOTES/s on one question (row lock + cache invalidation per vote), $API_VOTES_SPREAD/s spread over 64 voters and 60 questions"
echo "  attempts: $API_ATTEMPTS/s spread over 64 learners"
echo "RSS of refbackend: idle ${IDLE_RSS} MB, peak ${PEAK_RSS} MB"
