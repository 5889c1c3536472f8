#!/usr/bin/env bash
# PostgreSQL alone, with the worker's transaction shape (see the .sql files):
# how many events per second this machine's PostgreSQL applies: one event per
# transaction, the same without NOTIFY, ten per transaction behind savepoints
# (the worker's batches), and ten per transaction with set-based statements. pgbench plays the worker, with 20 connections (the
# service's DATABASE_MAX_CONNECTIONS default). "busy cores" is the whole
# machine (PostgreSQL + pgbench) during the run.
#
#   flock /tmp/fulfillment-heavy.lock bench/pgbench/run.sh
set -euo pipefail
cd "$(dirname "$0")"
DB=bench_pgbench_$$
PSQL=(psql -h 127.0.0.1 -U postgres -q -v ON_ERROR_STOP=1)
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-20}
cleanup() { "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; }
trap cleanup EXIT
"${PSQL[@]}" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" -f ../../migrations/0001_orders.sql >/dev/null

# Busy and total ticks of all CPUs (idle and iowait are not busy).
ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

printf '%-24s %8s %9s %11s %11s\n' script tps events/s "latency ms" "busy cores"
for script in one_event one_event_no_notify batch_of_10_savepoints batch_of_10_set_based; do
  per=1; [[ $script == batch_* ]] && per=10
  read -r busy0 all0 < <(ticks)
  out=$(pgbench -h 127.0.0.1 -U postgres -n -M prepared -c "$CLIENTS" -j 2 \
    -T "$SECONDS_PER_RUN" -f "$script.sql" "$DB" 2>&1) || { echo "$out" >&2; exit 1; }
  read -r busy1 all1 < <(ticks)
  tps=$(grep -oP '^tps = \K[0-9.]+' <<<"$out")
  lat=$(grep -oP '^latency average = \K[0-9.]+' <<<"$out")
  awk -v s="$script" -v tps="$tps" -v per="$per" -v lat="$lat" -v nproc="$(nproc)" \
    -v b="$((busy1 - busy0))" -v a="$((all1 - all0))" \
    'BEGIN { printf "%-24s %8.0f %9.0f %11.1f %11.2f\n", s, tps, tps * per, lat, nproc * b / a }'
done
