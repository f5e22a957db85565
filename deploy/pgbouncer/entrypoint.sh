#!/bin/sh
# Writes the auth file PgBouncer reads from the environment, then runs it in the foreground.
set -eu
: "${PGBOUNCER_USER:?set PGBOUNCER_USER}"
: "${PGBOUNCER_PASSWORD:?set PGBOUNCER_PASSWORD}"
umask 077
printf '"%s" "%s"\n' "$PGBOUNCER_USER" "$PGBOUNCER_PASSWORD" >/tmp/userlist.txt
sed 's#^auth_file = .*#auth_file = /tmp/userlist.txt#' /etc/pgbouncer/pgbouncer.ini >/tmp/pgbouncer.ini
exec pgbouncer /tmp/pgbouncer.ini
