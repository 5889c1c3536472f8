#!/bin/sh
# Creates the cluster in the (empty) volume on first start, then runs
# PostgreSQL in the foreground as PID 1. Only trust authentication: the
# compose file asks for nothing else, and this image exists only for the
# smoke test.
set -eu

if [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
  echo "postgres stand-in: only POSTGRES_HOST_AUTH_METHOD=trust is supported" >&2
  exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username=postgres --auth=trust --encoding=UTF8 --no-instructions -D "$PGDATA" >/dev/null
  echo "host all all all trust" >>"$PGDATA/pg_hba.conf"
  echo "postgres stand-in: initialised $PGDATA"
fi

exec postgres -D "$PGDATA" -c listen_addresses='*'
