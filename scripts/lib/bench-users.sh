# shellcheck shell=bash
# Shared helper, sourced by benches/http.sh and benches/shards.sh:
#
#   register_learners N BASE_URL OUT
#
# Registers learner1..learnerN@example.com through BASE_URL's API (real password
# hashes, like real sign-ups) and writes their access tokens to OUT, one per line.

register_learners() {
    local n=$1 base=$2 out=$3 i
    : >"$out"
    for i in $(seq 1 "$n"); do
        curl -fsS -X POST "$base/api/v1/auth/register" -H 'content-type: application/json' \
            -d "{\"email\":\"learner$i@example.com\",\"password\":\"benchmark password\",\"display_name\":\"Learner\"}" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' >>"$out"
    done
}
