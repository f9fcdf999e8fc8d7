#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis the tests use answer on 127.0.0.1, starting them if not.
set -euo pipefail

wait_for() {  # wait_for NAME COMMAND...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "$name did not answer on 127.0.0.1" >&2
  return 1
}

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "Starting PostgreSQL …"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432 -q

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Starting Redis …"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
