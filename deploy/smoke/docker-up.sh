#!/usr/bin/env bash
# Makes sure a Docker engine answers, for `make compose-smoke` and CI.
#
# - An engine that already answers `docker info` is used as it is.
# - Otherwise, as root on Debian: installs Debian's docker.io if dockerd is
#   missing and starts dockerd in the background (log and pid file under
#   $SMOKE_CACHE), then waits for it.
#
# Exit 0 when an engine answers; otherwise exit 1 with one line on stderr
# saying why, which .ci/run prints when it skips the smoke test.
set -euo pipefail

SMOKE_CACHE=${SMOKE_CACHE:-/var/tmp/compose-smoke}
why() { echo "docker-up: $*" >&2; exit 1; }

docker_answers() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && docker_answers; then
  exit 0
fi

[ "$(id -u)" -eq 0 ] || why "no Docker engine answers, and starting one needs root"

if ! command -v dockerd >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || why "no dockerd, and no apt-get to install Debian's docker.io"
  echo "docker-up: installing Debian's docker.io" >&2
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io >/dev/null 2>&1 || why "apt-get install docker.io failed"
fi

mkdir -p "$SMOKE_CACHE"
if [ -f "$SMOKE_CACHE/dockerd.pid" ] && kill -0 "$(cat "$SMOKE_CACHE/dockerd.pid")" 2>/dev/null; then
  echo "docker-up: dockerd (pid $(cat "$SMOKE_CACHE/dockerd.pid")) is starting; waiting" >&2
else
  echo "docker-up: starting dockerd (log: $SMOKE_CACHE/dockerd.log)" >&2
  # setsid: the engine outlives this script and the make that ran it. 9>&-:
  # it must not inherit compose-smoke.sh's lock (fd 9) and hold it forever.
  setsid dockerd --pidfile "$SMOKE_CACHE/dockerd.pid" \
    >>"$SMOKE_CACHE/dockerd.log" 2>&1 </dev/null 9>&- &
fi

for _ in $(seq 60); do
  if docker_answers; then
    echo "docker-up: Docker engine $(docker info --format '{{.ServerVersion}}') is up" >&2
    exit 0
  fi
  sleep 1
done
why "dockerd did not answer within 60 s (see $SMOKE_CACHE/dockerd.log: $(tail -n 1 "$SMOKE_CACHE/dockerd.log" 2>/dev/null))"
