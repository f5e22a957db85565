#!/usr/bin/env bash
# Runs once, on the primary's first start (mounted into /docker-entrypoint-initdb.d of the
# official postgres image, which executes it as the postgres user against the fresh cluster).
#
# Creates the streaming-replication role and a physical replication slot for the replica of the
# compose `scale` profile, and lets that role connect for replication over the network.
# It is mounted in every stage so a primary created in stage 1 is already replica-ready later
# (init scripts never run again on a non-empty data directory).
#
# Environment (from docker-compose.yml):
#   POSTGRES_REPLICATION_USER      default replicator
#   POSTGRES_REPLICATION_PASSWORD  required
#   POSTGRES_REPLICATION_SLOT      default replica_1
set -euo pipefail

: "${POSTGRES_REPLICATION_PASSWORD:?POSTGRES_REPLICATION_PASSWORD must be set}"
repl_user=${POSTGRES_REPLICATION_USER:-replicator}
repl_slot=${POSTGRES_REPLICATION_SLOT:-replica_1}

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v repl_user="$repl_user" -v repl_password="$POSTGRES_REPLICATION_PASSWORD" \
    -v repl_slot="$repl_slot" <<'SQL'
SELECT format('CREATE ROLE %I WITH REPLICATION LOGIN PASSWORD %L', :'repl_user', :'repl_password')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'repl_user') \gexec
SELECT pg_create_physical_replication_slot(:'repl_slot')
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'repl_slot');
SQL

# Replication connections need their own pg_hba line (the image's `host all all all` does not
# cover the `replication` pseudo-database).
echo "host replication ${repl_user} all scram-sha-256" >> "$PGDATA/pg_hba.conf"

# wal_level=replica, max_wal_senders=10 and hot_standby=on are PostgreSQL 15 defaults; keep the
# replica readable and bound WAL retention if the replica disappears for good.
cat >> "$PGDATA/postgresql.conf" <<CONF
# --- added by deploy/postgres/init-primary.sh ---
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
max_slot_wal_keep_size = 2GB
hot_standby_feedback = on
CONF
