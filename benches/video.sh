#!/usr/bin/env bash
# Video transcode throughput (docs/benchmarks.md, "Video answers"): how many
# jobs a worker core finishes per minute for a 30 s 1080p clip (four
# renditions, poster), and how the queue drains with 1 worker vs 2.
#
# The API is not in the loop: JOBS answers are inserted as `uploaded` with their
# source already in a local media store and their jobs queued, then the workers
# start. Each worker is pinned to a core of its own (taskset), as a pod gets its
# own CPUs; Postgres shares core 0. Queue depth is sampled every second.
#
#   benches/video.sh                       # JOBS=4, ~10 minutes on 2 cores
#   JOBS=1 SECONDS_LONG=5 benches/video.sh # a quick check of the script
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
JOBS=${JOBS:-4}
SECONDS_LONG=${SECONDS_LONG:-30}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# shellcheck source=../scripts/lib/ensure-packages.sh
source scripts/lib/ensure-packages.sh
ensure_packages postgresql postgresql-contrib ffmpeg curl
cargo build --release --locked --bin refbackend --quiet
BIN=$TARGET/release/refbackend
PSQL="$(scripts/pg-node bindir)/psql"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/refbackend-video.XXXXXX"); chmod 755 "$WORK"
PG_PORT=$(free_port)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    scripts/pg-node stop "$WORK/pg" fast >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

taskset -c 0 scripts/pg-node init-primary "$WORK/pg" "$PG_PORT" >/dev/null
"$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE DATABASE bench" >/dev/null
sql() { "$PSQL" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -v ON_ERROR_STOP=1 -At "$@"; }
export APP_ENV=test LOG_FORMAT=json RUST_LOG=warn
export JWT_SECRET="bench-$(python3 -c 'import secrets; print(secrets.token_urlsafe(40))')"
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/bench"
export MEDIA_STORE_URL="file://$WORK/media"
export WORKER_POLL_INTERVAL=200ms
"$BIN" migrate >/dev/null

echo "==> a ${SECONDS_LONG} s 1080p clip (testsrc2 + noise, H.264/AAC)"
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=1920x1080:rate=30:duration=$SECONDS_LONG" \
    -f lavfi -i "sine=frequency=440:duration=$SECONDS_LONG" \
    -vf "noise=alls=12:allf=t" -c:v libx264 -preset veryfast -pix_fmt yuv420p \
    -c:a aac -shortest "$WORK/clip.mp4"
SIZE=$(stat -c %s "$WORK/clip.mp4")
echo "    $((SIZE / 1024)) KiB"
sql -c "INSERT INTO users (id, email, password_hash, display_name, role)
        VALUES ('00000000-0000-0000-0000-0000000000be', 'bench@example.com', 'x', 'Bench', 'candidate')
        ON CONFLICT DO NOTHING" >/dev/null

# Queues $JOBS transcodes of the clip (one chunk each).
enqueue() {
    sql -c "TRUNCATE jobs, video_chunks, storage_gc; DELETE FROM video_answers" >/dev/null
    rm -rf "$WORK/media"
    for _ in $(seq 1 "$JOBS"); do
        id=$(python3 -c 'import uuid; print(uuid.uuid4())')
        mkdir -p "$WORK/media/uploads/$id"
        cp "$WORK/clip.mp4" "$WORK/media/uploads/$id/000000"
        sql -c "INSERT INTO video_answers (id, question_id, candidate_id, status, size_bytes, chunk_bytes, chunk_count, container)
                VALUES ('$id', gen_random_uuid(), '00000000-0000-0000-0000-0000000000be', 'uploaded', $SIZE, $SIZE, 1, 'mp4');
                INSERT INTO video_chunks (video_id, idx, size_bytes) VALUES ('$id', 0, $SIZE);
                INSERT INTO jobs (kind, payload, max_attempts) VALUES ('video_transcode', '{\"video_id\": \"$id\"}', 4);" >/dev/null
    done
}

# run CORES...: one worker per listed core; prints the depth trace and totals.
run() {
    enqueue
    local pids=() start now depth ready
    start=$(date +%s.%N)
    for core in "$@"; do
        WORKER_METRICS_ADDR="127.0.0.1:$(free_port)" WORKER_SCRATCH_DIR="$WORK/scratch-$core" \
            taskset -c "$core" "$BIN" worker >>"$WORK/worker.log" 2>&1 &
        pids+=($!); PIDS+=($!)
    done
    local trace="" last=""
    while :; do
        now=$(date +%s.%N)
        read -r depth ready < <(sql -F ' ' -c "SELECT count(*) FILTER (WHERE status IN ('queued','running')),
                                                       (SELECT count(*) FROM video_answers WHERE status = 'ready')
                                                  FROM jobs")
        if [[ "$depth" != "$last" ]]; then
            trace+=$(printf '%.0fs:%s ' "$(echo "$now - $start" | bc)" "$depth")
            last=$depth
        fi
        if [[ "$ready" == "$JOBS" ]]; then break; fi
        if [[ $(sql -c "SELECT count(*) FROM video_answers WHERE status = 'failed'") != 0 ]]; then
            echo "a job failed:"; tail -20 "$WORK/worker.log"; exit 1
        fi
        sleep 1
    done
    local elapsed
    elapsed=$(echo "$(date +%s.%N) - $start" | bc)
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    printf '%s worker(s): %d jobs in %.1f s = %.2f jobs/min (%.2f per worker core)\n' \
        "$#" "$JOBS" "$elapsed" "$(echo "$JOBS * 60 / $elapsed" | bc -l)" "$(echo "$JOBS * 60 / $elapsed / $#" | bc -l)"
    echo "   jobs not yet done, when it changed: $trace"
}

echo "==> 1 worker (core 1)"
run 1
echo "==> 2 workers (cores 0 and 1)"
run 0 1
