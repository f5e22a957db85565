#!/usr/bin/env bash
# Entrypoint of the `postgres-replica` service (compose `scale` profile), run as the postgres user.
#
# On the first start (empty $PGDATA) it clones the primary with
#   pg_basebackup -R -X stream -S <slot>
# -R writes standby.signal and primary_conninfo (+ primary_slot_name), so the clone starts as a
# hot standby streaming from the primary. Later starts reuse the data directory as is.
#
# Environment (from docker-compose.yml):
#   PRIMARY_HOST / PRIMARY_PORT    default postgres / 5432
#   POSTGRES_REPLICATION_USER      default replicator
#   POSTGRES_REPLICATION_PASSWORD  required
#   POSTGRES_REPLICATION_SLOT      default replica_1 (created by init-primary.sh)
#   PGDATA                         data directory
set -euo pipefail

: "${POSTGRES_REPLICATION_PASSWORD:?POSTGRES_REPLICATION_PASSWORD must be set}"
: "${PGDATA:?PGDATA must be set}"
primary_host=${PRIMARY_HOST:-postgres}
primary_port=${PRIMARY_PORT:-5432}
repl_user=${POSTGRES_REPLICATION_USER:-replicator}
repl_slot=${POSTGRES_REPLICATION_SLOT:-replica_1}

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    echo "init-replica: waiting for the primary at ${primary_host}:${primary_port}"
    until pg_isready -q -h "$primary_host" -p "$primary_port" -U "$repl_user"; do
        sleep 1
    done
    echo "init-replica: cloning the primary into $PGDATA"
    mkdir -p "$PGDATA"
    # Remove leftovers of an interrupted clone (the directory is ours alone).
    find "$PGDATA" -mindepth 1 -delete
    chmod 0700 "$PGDATA"
    PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD" pg_basebackup \
        --host="$primary_host" --port="$primary_port" --username="$repl_user" \
        --pgdata="$PGDATA" --wal-method=stream --slot="$repl_slot" \
        --write-recovery-conf --checkpoint=fast --progress --verbose
    echo "init-replica: clone done"
fi

# Ensure the standby is readable even if the primary's config changes.
exec postgres -c hot_standby=on -c hot_standby_feedback=on "$@"
